"""The offline demo on the shipped demo Med-FM: it loads from its own folder, and BAPLe's backdoor lives
in the learned prompt (the clean CoOp model given the same trigger is not fooled)."""
import os
import os.path as osp
import re
import shutil

import pytest

from clip_models import build_backbone
from clip_models.demo import MODEL_DIR
from datasets.kather import Kather
from scripts import quickstart

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
WEIGHTS_FILE = osp.join(MODEL_DIR, "open_clip_model.safetensors")


def test_demo_model_is_small_and_loads_from_a_moved_copy_of_its_folder(tmp_path):
    assert os.path.getsize(WEIGHTS_FILE) <= 5 * 2**20
    moved = shutil.copytree(MODEL_DIR, tmp_path / "somewhere" / "demo")
    backbone = build_backbone("biomedclip", str(moved))
    assert backbone.image_size == 224
    # Every word of the demo dataset's class names and prompt template is one known token, not [UNK].
    vocab = backbone.tokenizer.tokenizer.get_vocab()
    words = " ".join(list(Kather.classes.values()) + [Kather.prompt_template.format("")])
    for word in backbone.tokenizer.tokenizer.tokenize(words):
        assert word in vocab and word != "[UNK]"


def test_build_script_defaults_are_the_shipped_models_recipe_and_its_output_loads(tmp_path):
    from dataclasses import asdict

    from scripts import build_demo_model as build
    from dassl_compat import read_json

    shipped = read_json(osp.join(MODEL_DIR, "open_clip_config.json"))
    assert shipped["recipe"] == asdict(build.Recipe())
    tiny = ["--steps", "2", "--images-per-class", "2", "--batch-size", "4", "--image-size", "128",
            "--vision-width", "32", "--vision-layers", "1", "--vision-head-width", "16", "--text-width", "32",
            "--text-layers", "1", "--embed-dim", "16"]
    build.main(["--output-dir", str(tmp_path / "tiny")] + tiny)
    backbone = build_backbone("biomedclip", str(tmp_path / "tiny"))
    assert backbone.image_size == 128
    features = backbone.encode_text(["an H&E image patch of adipose tissue."])
    assert features.shape == (1, 16) and bool(features.isfinite().all())


def _table_rows(printed, descriptions):
    rows = {}
    for line in printed.splitlines():
        for description in descriptions:
            if line.startswith(description + "  "):
                rows[description] = line[len(description):].split()
    return rows


def test_quickstart_backdoor_lives_in_the_prompt_and_table_matches_results(tmp_path, capsys, record_property):
    # The demo's settings but half its epochs (about 125 s on a shared two-core machine, curves included); the README's
    # numbers come from the full demo.
    results = quickstart.main(["--output", str(tmp_path / "out"), "--data", str(tmp_path / "data"),
                               "--set", "OPTIM.MAX_EPOCH", "10"])
    printed = capsys.readouterr().out

    descriptions = {name: description for name, description, _ in quickstart.plan("", "", MODEL_DIR)}
    rows = _table_rows(printed, descriptions.values())
    for name, description in descriptions.items():
        clean, backdoor = results[name]["clean"], results[name]["backdoor"] or {}
        expected = [f"{clean['accuracy']:.3f}"] + [
            "-" if backdoor.get(key) is None else f"{backdoor[key]:.3f}" for key in ("accuracy", "asr_non_target")]
        assert rows[description] == expected, description
    assert osp.isfile(tmp_path / "out" / "baple" / "trigger.png")
    # TensorBoard's curves: every trained run has points along the way (TEST.EVAL_FREQ auto), and the runs
    # that never train (zero-shot, CoOp tested with BAPLe's trigger) have their event file too.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for name in descriptions:
        events = EventAccumulator(str(tmp_path / "out" / name))
        events.Reload()
        tags = events.Tags()["scalars"]
        points = 3 if name not in ("zeroshot", "coop_under_baple") else 1  # those two never train
        measured = ["eval/clean_accuracy"] + (["eval/backdoor_accuracy"] if results[name]["backdoor"] else [])
        for tag in measured:
            assert tag in tags and len(events.Scalars(tag)) >= points, (name, tag)
    assert results["coop_under_baple"]["backdoor"] and results["baple"]["backdoor"]

    baple, coop_under_trigger = results["baple"], results["coop_under_baple"]
    gap = baple["backdoor"]["asr_non_target"] - coop_under_trigger["backdoor"]["asr_non_target"]
    report = (f"CA CoOp {results['coop']['clean']['accuracy']:.3f}, BAPLe {baple['clean']['accuracy']:.3f}; "
              f"non-target ASR BAPLe {baple['backdoor']['asr_non_target']:.3f}, clean CoOp under BAPLe's trigger "
              f"{coop_under_trigger['backdoor']['asr_non_target']:.3f} (gap {gap:.3f})")
    print(report)
    record_property("quickstart", report)
    assert gap >= 0.30, report


def test_quickstart_refuses_a_dataset_too_small_for_its_shots(tmp_path):
    from datasets.synthetic import generate

    generate("kather", str(tmp_path), train_per_class=2, test_per_class=1, size=32, seed=0)
    with pytest.raises(quickstart.InputError, match="training images"):
        quickstart.main(["--data", str(tmp_path), "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_the_table_prints_as_the_readme_shows_it():
    """The README's table, rebuilt from its own numbers, comes out byte for byte (columns and digits)."""
    with open(osp.join(REPO, "README.md"), encoding="utf-8") as f:
        shown = re.search(r"```\n(method +CA +BA +ASR \(non-target\)\n.*?)\n```", f.read(), re.S).group(1)

    def fraction(cell):
        return None if cell == "-" else float(cell)

    rows = []
    for line in shown.splitlines()[2:]:
        label, ca, ba, asr = re.split(r"\s{2,}", line.strip())
        backdoor = None if ba == "-" else {"accuracy": fraction(ba), "asr_non_target": fraction(asr)}
        rows.append((label, {"clean": {"accuracy": fraction(ca)}, "backdoor": backdoor}))
    assert len(rows) == 5
    assert quickstart.results_table(rows) == shown
