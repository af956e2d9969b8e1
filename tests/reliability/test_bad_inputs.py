"""Every bad input of docs/ERRORS.md through ``train.py``: exit code, one-line message as the last line
printed, found before any model or image is loaded where the config alone tells; and the doc's table is
exactly what the cases print."""
import json
import os
import shutil
import subprocess
import sys

import pytest

import dassl_compat
import train
from bad_inputs import CASES, CONFIG, DOC, Context, _bad_test_image, _truncated_jpeg, doc_table, render_table
from helpers_reliability import HERE, REPO, guarded_env

REGENERATE = "python tests/reliability/bad_inputs.py --write-doc"


@pytest.fixture(scope="module")
def outcomes(standins, synthetic_root, tmp_path_factory):
    """Runs every case once, in one fresh interpreter without network."""
    work = tmp_path_factory.mktemp("bad-inputs")
    net_log = work / "net.log"
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "bad_inputs.py"), "--json", str(work / "outcomes.json"),
         "--hf-cache", os.environ["HF_HUB_CACHE"], "--data", synthetic_root],
        cwd=REPO, env=guarded_env(net_log), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not net_log.exists(), net_log.read_text()
    return json.loads((work / "outcomes.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_bad_input_exit_code_and_one_line_message(outcomes, case):
    outcome = outcomes[case.name]
    assert outcome["code"] == case.code, outcome
    last = outcome["last_line"]
    assert last.startswith(("error: ", "train.py: error: ")) and case.phrase in last, last
    # Bad input: no traceback, only the line. Internal error: the traceback is kept for the report.
    assert outcome["traceback"] == (case.code == 1)
    assert outcome["stage"] == case.stage, "found later than expected" if case.stage == CONFIG else outcome


def test_the_issues_list_of_bad_inputs_is_covered():
    phrases = " ".join(case.phrase for case in CASES)
    for must in ("BACKDOOR.NOISE_EPS", "BACKDOOR.NOISE_STEP", "BACKDOOR.POISON_PERCENTAGE", "rounds to 0",
                 "BACKDOOR.TARGET_CLASS", "BACKDOOR.POSITION", "BACKDOOR.PATCH_TYPE", "BACKDOOR.ATTACK",
                 "MODEL.BACKBONE.NAME", "does not fit a 224x224 image", "INPUT.SIZE", "trigger image does not exist",
                 "DATASET.NUM_SHOTS", "not a readable image", "truncated JPEG", "empty file", "not an image file name",
                 "cannot be read (Permission denied)"):
        assert must in phrases, must
    assert len(CASES) >= 20 and len({case.name for case in CASES}) == len(CASES)


@pytest.mark.skipif(dassl_compat.BACKEND != "builtin", reason="the document is generated with the built-in engine, "
                    "whose registries list only the project's trainers and datasets")
def test_errors_doc_table_is_what_the_cases_print(outcomes):
    with open(DOC, encoding="utf-8") as f:
        table = doc_table(f.read())
    assert table is not None, f"{DOC} lost its table markers"
    assert table == render_table(outcomes), f"{DOC} is out of date with the cases; regenerate it: {REGENERATE}"


def test_skip_policy_leaves_bad_files_out_counts_them_and_finishes(standins, synthetic_root, tmp_path, capsys):
    ctx = Context(str(tmp_path), synthetic_root, stack=None)
    for name, data_of in (("zz-corrupt.png", lambda good: b"\x89PNG garbage"), ("zz-empty.png", lambda good: b""),
                          ("zz-cut.png", lambda good: good[:len(good) // 2]), ("notes.txt", lambda good: b"notes")):
        _bad_test_image(name, data_of)(ctx)
    _truncated_jpeg(ctx)
    out = tmp_path / "run"
    code = train.run(["--root", ctx.root, "--trainer", "ZeroShot",
                      "--dataset-config-file", os.path.join(REPO, "configs/datasets/covid.yaml"),
                      "--config-file", os.path.join(REPO, "configs/trainers/ZeroShot.yaml"), "--backbone", "clip",
                      "--output-dir", str(out), "DATASET.BAD_FILES", "skip", "DATALOADER.NUM_WORKERS", "0",
                      "USE_CUDA", "False"])
    assert code == 0, capsys.readouterr().out[-2000:]
    assert "DATASET.BAD_FILES skip: left out 5 unreadable image(s) of Covid" in capsys.readouterr().out
    with open(out / "results.json") as f:
        assert json.load(f)["num_test"] == 20  # the 20 good test images, none of the 5 bad ones
    shutil.rmtree(ctx.root)
