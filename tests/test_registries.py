"""One registry mechanism (Dassl's ``Registry``) for trainers, datasets, backbones, attacks, defences and
the sweep's methods, every list derived from it; and the project's trainers imported into a Dassl
that already holds a ``CoOp``."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from helpers_runs import REPO

TOY_MEDFM = textwrap.dedent('''
    """A toy Med-FM in one adapter file: an open_clip CLIP under another name, hub id and stand-in seed."""
    from clip_models.clip import OpenCLIPBackbone
    from clip_models.registry import register_backbone


    @register_backbone("toyfm")
    class ToyFMBackbone(OpenCLIPBackbone):
        default_weights = "toy-org/toy-fm-b32"
        label = "ToyFM"
        standin_seed = 11
''')

# What a user of the project sees of the toy model once its module is imported (and nothing else).
PICKED_UP = textwrap.dedent('''
    import json, sys
    import toy_medfm  # noqa: F401  (the one new module)
    from benchmarks.run import backbone_choices
    from clip_models import build_backbone
    from clip_models.standins import standin_names, write_standins
    from scripts import report

    weights = write_standins(sys.argv[1], names=["toyfm"])["toyfm"]
    backbone = build_backbone("toyfm", weights)
    print(json.dumps({
        "standins": standin_names(), "weights": weights, "embed_dim": backbone.embed_dim,
        "benchmark_choices": backbone_choices(),
        "label": report.column_label(("toyfm", "Covid")),
        "columns": report.column_order([("toyfm", "Covid"), ("clip", "Covid"), ("medclip", "Covid")]),
    }))
''')


def _env(tmp_path, **extra):
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), REPO, os.environ.get("PYTHONPATH", "")]),
            "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}


# Imports the toy module once tests/conftest.py has set the hub environment (a ``-p`` plugin itself is
# imported before it), and before the test modules are collected.
IMPORT_AT_CONFIGURE = textwrap.dedent('''
    def pytest_configure(config):
        import toy_medfm  # noqa: F401
''')


@pytest.fixture
def toy_module(tmp_path):
    (tmp_path / "toy_medfm.py").write_text(TOY_MEDFM)
    (tmp_path / "import_toy_medfm.py").write_text(IMPORT_AT_CONFIGURE)
    return tmp_path


def test_a_medfm_in_one_new_module_reaches_standins_benchmark_and_report(toy_module, tmp_path):
    cache = tmp_path / "hub"
    result = subprocess.run([sys.executable, "-c", PICKED_UP, str(cache)], cwd=REPO, capture_output=True, text=True,
                            env=_env(toy_module, HF_HUB_CACHE=str(cache)), timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert "toyfm" in seen["standins"] and seen["weights"] == "toy-org/toy-fm-b32" and seen["embed_dim"] == 16
    assert os.path.isdir(cache / "models--toy-org--toy-fm-b32")
    assert "toyfm" in seen["benchmark_choices"]
    assert seen["label"] == "ToyFM COVID"
    assert seen["columns"] == [["medclip", "Covid"], ["clip", "Covid"], ["toyfm", "Covid"]]  # after the paper's


@pytest.mark.slow
def test_the_backbone_tests_run_on_a_medfm_added_in_one_module(toy_module, tmp_path):
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "import_toy_medfm", "-k", "toyfm", "-p", "no:cacheprovider",
                             os.path.join(REPO, "tests", "test_backbones.py")],
                            cwd=REPO, capture_output=True, text=True, env=_env(toy_module), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    passed = int(summary.split(" passed")[0].split()[-1])
    assert passed >= 4 and "failed" not in summary, summary  # loads, own text features, prompt step, ...


ENGINES = ["builtin"] + (["dassl"] if importlib.util.find_spec("dassl") is not None else [])


@pytest.mark.parametrize("engine", ENGINES)
def test_a_dassl_script_with_its_own_coop_imports_the_trainers_and_trains_baple(engine, standins, synthetic_root,
                                                                              tmp_path):
    out = tmp_path / "baple"
    result = subprocess.run([sys.executable, os.path.join(REPO, "tests", "dassl_plugin.py"), synthetic_root,
                             standins["quiltnet"], str(out)], cwd=REPO, capture_output=True, text=True,
                            env=_env(tmp_path, BAPLE_ENGINE=engine), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    registry = next(line for line in result.stdout.splitlines() if line.startswith("registry: "))
    assert registry == ("registry: CoOp=__main__ BackdoorCoOp=trainers.coop BAPLe=trainers.baple "
                        "BAPLe_is_project_CoOp=True")
    results = json.loads((out / "results.json").read_text())
    assert results["trainer"] == "BAPLe" and results["backdoor"] is not None
