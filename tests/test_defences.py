"""Defences and robustness (``scripts.defend``, ``trainers.defences``) on the stand-ins and synthetic data."""
import csv
import hashlib
import json
import math
import os

import pytest
import torch

from helpers_runs import markdown_rows, run_cfg, train
from scripts import defend
from trainers.defences import reconstruct, retune, robustness
from trainers.run import Run


def read_json(path):
    with open(path) as f:
        return json.load(f)


def folder_digest(folder, skip="defences"):
    """{relative path: sha256} of every file under ``folder`` outside ``skip``."""
    out = {}
    for here, subfolders, files in os.walk(folder):
        subfolders[:] = [d for d in subfolders if d != skip]
        for name in files:
            path = os.path.join(here, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def trained(standins, synthetic_root, tmp_path_factory):
    """A tiny BAPLe run and a tiny clean CoOp run under one root, and the root's files before defending."""
    root = tmp_path_factory.mktemp("runs")
    for name, trainer in (("baple", "BAPLe"), ("coop", "CoOp")):
        train(run_cfg(trainer, synthetic_root, root / name, standins["biomedclip"], **{"BACKDOOR.POISON_COUNT": 2}))
    return root, folder_digest(root)


@pytest.fixture(scope="module")
def defended(trained, synthetic_root):
    """``python -m scripts.defend ROOT --quick --trigger-from ROOT/baple`` (two purifiers, to stay fast), and
    the dataset folder's files before and after it."""
    root, before = trained
    data_before = folder_digest(synthetic_root)
    reports = defend.main([str(root), "--quick", "--trigger-from", str(root / "baple"),
                           "--countermeasures", "jpeg", "crop"])
    data_after = folder_digest(synthetic_root)
    return root, before, reports, (data_before, data_after)


def test_every_countermeasure_is_the_identity_at_strength_0_and_changes_images_otherwise():
    images = torch.rand((3, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    for countermeasure in robustness.countermeasures().values():
        assert countermeasure.strengths[0] == 0 and countermeasure.quick[0] == 0
        assert countermeasure.apply(images, 0, torch.Generator()) is images, countermeasure.name
        for strength in countermeasure.strengths[1:]:
            out = countermeasure.apply(images, strength, torch.Generator().manual_seed(1))
            again = countermeasure.apply(images, strength, torch.Generator().manual_seed(1))
            assert out.shape == images.shape and out.dtype == images.dtype, countermeasure.name
            assert 0 <= out.min() and out.max() <= 1, countermeasure.name
            assert not torch.equal(out, images), (countermeasure.name, strength)
            assert torch.equal(out, again), (countermeasure.name, strength)  # reproducible from the seed
    assert [c.name for c in robustness.countermeasures_for("histology")] == [
        "jpeg", "blur", "resize", "noise", "bit_depth", "crop"]  # windowing only for X-rays
    assert robustness.countermeasures()["window"] in robustness.countermeasures_for("xray")


def test_each_countermeasure_at_strength_0_gives_results_json_exactly(trained, defended, tmp_path):
    root, _ = trained
    results = read_json(root / "baple" / "results.json")
    expected = {"clean_accuracy": results["clean"]["accuracy"], "backdoor_accuracy": results["backdoor"]["accuracy"],
                "asr_non_target": results["backdoor"]["asr_non_target"]}
    calls = []

    def every_countermeasure_at_0(images):
        for countermeasure in robustness.countermeasures().values():
            calls.append(countermeasure.name)
            images = countermeasure.apply(images, 0, torch.Generator())
        return images

    with open(tmp_path / "log.txt", "w") as log:  # through the purifier transform, not the plain path
        trainer = Run.open(root / "baple").build_trainer(output_dir=str(tmp_path), log=log)
        assert robustness.evaluate_quietly(trainer, log, transform=every_countermeasure_at_0) == expected
    assert set(calls) == set(robustness.countermeasures())

    report = read_json(root / "baple" / "defences" / "defences.json")
    assert report["reference"]["matches_results_json"] is True
    assert report["reference"]["unpurified"] == expected
    for sweep in report["robustness"].values():
        assert {k: sweep["points"][0][k] for k in expected} == expected and sweep["points"][0]["strength"] == 0
    coop = read_json(root / "coop" / "defences" / "defences.json")  # clean run, BAPLe's trigger from outside
    unpurified = coop["reference"]["unpurified"]
    assert unpurified["clean_accuracy"] == read_json(root / "coop" / "results.json")["clean"]["accuracy"]
    assert coop["trigger"] == str((root / "baple").resolve()) and unpurified["backdoor_accuracy"] is not None


def test_purifier_reaches_clean_and_triggered_images_after_the_trigger(trained, tmp_path):
    root, _ = trained
    seen = []
    with open(tmp_path / "log.txt", "w") as log:
        trainer = Run.open(root / "baple").build_trainer(output_dir=str(tmp_path), log=log)
        trigger = trainer.eval_trigger()
        first = next(iter(trainer.test_loader))["img"]
        robustness.evaluate_quietly(trainer, log, transform=lambda x: (seen.append(x.clone()), x)[1])
    n = len(first)
    assert torch.equal(seen[0][:n], first)  # clean rows, as loaded
    assert torch.equal(seen[0][n:], trigger(first))  # triggered rows: the trigger came first


def test_retuning_never_modifies_the_backbone_and_logs_ca_ba_per_epoch(trained, tmp_path, monkeypatch):
    root, _ = trained
    run_dir = str(root / "baple")
    results = read_json(os.path.join(run_dir, "results.json"))
    built = []

    build_trainer = Run.build_trainer

    def spy_build(run, *args, **kwargs):
        trainer = build_trainer(run, *args, **kwargs)
        built.append((trainer, {k: v.clone() for k, v in trainer.model.backbone.state_dict().items()}))
        return trainer

    monkeypatch.setattr(Run, "build_trainer", spy_build)
    before = folder_digest(run_dir)
    with open(tmp_path / "log.txt", "w") as log:
        run = Run.open(run_dir)
        received = retune.retune(run, retune.defender_opts(run.cfg, run, True, shots=4, seed=7, epochs=2), log)
    [(trainer, backbone_before)] = built
    assert folder_digest(run_dir) == before  # tuned in a temporary folder, removed after: nothing in the run
    assert not os.path.exists(trainer.cfg.OUTPUT_DIR)
    after = trainer.model.backbone.state_dict()
    assert all(torch.equal(backbone_before[k], after[k]) for k in backbone_before)
    assert received["backbone_unchanged"]
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable == {"prompt_learner.ctx"}
    from trainers.baple import load_learner_state
    assert not torch.equal(trainer.prompt_learner.ctx.detach().cpu(), load_learner_state(run_dir)["ctx"])  # it did tune

    assert [e["epoch"] for e in received["epochs"]] == [0, 1, 2]
    assert all(e["clean_accuracy"] is not None and e["backdoor_accuracy"] is not None for e in received["epochs"])
    assert received["epochs"][0]["clean_accuracy"] == results["clean"]["accuracy"]  # the received prompt, as trained
    assert received["epochs"][0]["backdoor_accuracy"] == results["backdoor"]["accuracy"]  # under the run's own trigger
    assert received["num_trusted"] == 8 and trainer.poison_plan.poisoned == []  # trusted: 4 shots x 2, clean


def test_defend_command_writes_detectors_plots_and_tables_without_touching_the_runs(defended):
    root, before, reports, _ = defended
    after = folder_digest(root)
    assert {k: after.get(k) for k in before} == before  # results.json, checkpoints, logs: untouched
    assert set(after) - set(before) == {"defences.md", "defences.csv", "defences.png"}  # the rest is in defences/
    assert set(reports) == {"baple", "coop"}
    for name in ("baple", "coop"):
        report = read_json(root / name / "defences" / "defences.json")
        strip = report["strip"]
        assert 0 <= strip["auc"] <= 1 and len(strip["clean_entropy"]) == len(strip["triggered_entropy"]) == 8
        assert all(0 <= e <= math.log(2) + 1e-6 for e in strip["clean_entropy"] + strip["triggered_entropy"])
        classes = report["reconstruct"]["classes"]
        assert [c["class"] for c in classes] == [0, 1]
        assert all((c["min_budget"] is None) == c["censored"] for c in classes)
        assert all(c["min_budget"] is None or 0 < c["min_budget"] <= c["search_max"] for c in classes)
        assert all(c["anomaly_index"] is not None for c in classes)
        assert sorted(c["anomaly_index"] for c in classes) == pytest.approx([-0.6745, 0.6745], abs=1e-3)
        for variant in ("received", "from_words"):
            assert [e["epoch"] for e in report["retune"][variant]["epochs"]] == [0, 1]
            assert report["retune"][variant]["backbone_unchanged"] is True
        assert report["retune"]["from_words"]["start"] == "words: a chest X-ray of"  # Covid's prompt template
        for plot in ("robustness", "retune", "strip", "reconstruct"):
            assert os.path.getsize(report["plots"][plot]) > 1000
    with open(root / "defences.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["run"] for r in rows} == {"baple", "coop"}
    assert {r["defence"] for r in rows} >= {"jpeg", "crop", "retune_received", "retune_from_words", "strip",
                                            "reconstruct"}
    table = (root / "defences.md").read_text()
    assert {tuple(row[:2]) for row in markdown_rows(table)} >= {("baple", "BAPLe"), ("coop", "Clean_PL")}
    assert os.path.getsize(root / "defences.png") > 1000


def test_anomaly_index_and_budget_interpolation_on_hand_checked_values():
    # log budgets: ln(1), ln(4) x 4, ln(8): median ln 4, MAD 0 for four of six -> absolute deviations
    # (ln 4, 0, 0, 0, 0, ln 2) have median 0: no spread, no index.
    assert reconstruct.anomaly_indices([1, 4, 4, 4, 4, 8]) == [None] * 6
    values = [0.5, 2, 4, 8, 16]  # log2: -1, 1, 2, 3, 4 -> median 2, |dev| 3, 1, 0, 1, 2 -> MAD 1 (in log2)
    index = reconstruct.anomaly_indices(values)
    unit = 1.4826 * math.log(2)
    assert index == pytest.approx([3 * math.log(2) / unit, math.log(2) / unit, 0, -math.log(2) / unit,
                                   -2 * math.log(2) / unit])
    assert index[0] > reconstruct.FLAG_ABOVE > index[1]
    curve = [{"budget": 2.0, "success": 0.2}, {"budget": 8.0, "success": 1.0}]
    assert reconstruct.interpolated_budget(curve, 0.6) == pytest.approx(4.0)  # halfway in log-budget
    assert reconstruct.interpolated_budget(curve[1:], 0.9) == 8.0  # first budget already succeeds
    never = [{"budget": 2.0, "success": 0.1}, {"budget": 8.0, "success": 0.5}]
    assert reconstruct.interpolated_budget(never, 0.9) is None  # censored: not reached, no number
    assert reconstruct.censored_value([2.0, 8.0]) == 32.0  # what the anomaly index counts it at: the next budget


def test_bad_input_is_one_line_and_eval_only_folders_are_skipped(trained, tmp_path, capsys):
    root, _ = trained
    assert defend.run([str(tmp_path / "missing")]) == 2
    assert defend.run([str(root), "--countermeasures", "sharpen"]) == 2
    assert defend.run([str(root), "--strip-images", "1"]) == 2
    assert defend.run([str(root), "--trigger-from", str(tmp_path)]) == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("error:")]
    assert len(lines) == 4 and "sharpen" in lines[1] and "--strip-images" in lines[2]

    eval_only = tmp_path / "coop_under_baple"  # results.json but no checkpoints, as train.py --eval-only leaves
    eval_only.mkdir()
    (eval_only / "results.json").write_text((root / "coop" / "results.json").read_text())
    assert defend.run([str(eval_only), "--quick"]) == 2
    assert "holds no checkpoints" in capsys.readouterr().out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_defend_on_cuda_with_bf16_reproduces_results_json(standins, synthetic_root, tmp_path):
    run_dir = tmp_path / "baple"
    train(run_cfg("BAPLe", synthetic_root, run_dir, standins["biomedclip"],
                  **{"USE_CUDA": True, "TRAINER.PREC": "amp_bf16", "BACKDOOR.POISON_COUNT": 2}))
    report = defend.defend_run(str(run_dir), defend.Settings().quick())
    assert report["reference"]["matches_results_json"] is True
    assert 0 <= report["strip"]["auc"] <= 1
    assert all(c["min_budget"] is None or c["min_budget"] > 0 for c in report["reconstruct"]["classes"])
    assert report["retune"]["received"]["backbone_unchanged"] is True
    assert all(math.isfinite(p["clean_accuracy"]) for s in report["robustness"].values() for p in s["points"])


TOY_DEFENCE = '''
"""A toy defence in one module: the share of test images the model predicts as class 0."""
import torch

from trainers.defences import Defence, register_defence


@register_defence
class ClassZeroShare(Defence):
    name = "toy"
    summary_headers = ("class-0 share",)

    def measure(self, context):
        context.say("  toy")
        predictions = context.trainer.evaluate(trigger=None).clean_pred
        return {"toy": {"share": float((predictions == 0).float().mean())}}

    def plot(self, report, path):
        from trainers.defences.base import plot_grid
        from trainers.display import save_figure

        fig, axes = plot_grid(1)
        axes[0].bar(["class 0"], [report["toy"]["share"]])
        return save_figure(fig, path)

    def csv_rows(self, report):
        yield {"defence": "toy", "setting": "class-0 share", "value": report["toy"]["share"]}

    def summary_cells(self, report):
        return [f"{report['toy']['share']:.2f}"]
'''


def test_a_defence_added_in_one_module_is_run_plotted_and_tabled_by_defend(trained, tmp_path):
    import shutil
    import subprocess
    import sys

    from helpers_runs import REPO

    root, _ = trained
    runs = tmp_path / "runs"
    shutil.copytree(root, runs, ignore=shutil.ignore_patterns("defences*"))
    (tmp_path / "toy_defence.py").write_text(TOY_DEFENCE)
    code = ("import sys, toy_defence; from scripts import defend; "
            "sys.exit(defend.run([sys.argv[1], '--only', 'toy', 'strip', '--quick']))")
    path = [str(tmp_path), REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "OMP_NUM_THREADS": "1"}  # real Dassl's path kept
    result = subprocess.run([sys.executable, "-c", code, str(runs)], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("baple", "coop"):
        report = read_json(runs / name / "defences" / "defences.json")
        assert 0 <= report["toy"]["share"] <= 1 and "strip" in report and "robustness" not in report
        assert report["settings"]["parts"] == ["toy", "strip"]
        assert os.path.getsize(report["plots"]["toy"]) > 1000 and set(report["plots"]) == {"toy", "strip"}
    with open(runs / "defences.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["defence"] == "toy"]
    assert {r["run"] for r in rows} == {"baple", "coop"} and all(0 <= float(r["value"]) <= 1 for r in rows)
    table = (runs / "defences.md").read_text()
    header = markdown_rows(table)[0]
    assert header[-4:] == ["STRIP AUC", "STRIP detection at 5% clean false rejection",
                           "flagged classes; target's anomaly index", "class-0 share"], header
    assert "  toy" in result.stdout


# ---- reporting as it goes, nothing in the data, censored budgets, chance level ------------------------------
def stored_budgets(value):
    """Every ``min_budget`` anywhere in a ``defences.json`` dict."""
    if isinstance(value, dict):
        own = [value["min_budget"]] if "min_budget" in value else []
        return own + [b for v in value.values() for b in stored_budgets(v)]
    if isinstance(value, list):
        return [b for v in value for b in stored_budgets(v)]
    return []


def test_defend_leaves_the_dataset_folder_byte_identical_and_caches_under_the_run(defended):
    root, _, _, (data_before, data_after) = defended
    assert data_after == data_before  # the defender's few-shot draw (seed + 100) is cached elsewhere
    for name in ("baple", "coop"):
        caches = list((root / name / "defences" / "split_fewshot").glob("shot_*-seed_*.json"))
        assert caches, name  # the trusted draw and the re-tuning's draws, under the run's defence output


def test_cache_dir_flag_puts_the_fewshot_caches_there(trained, synthetic_root, tmp_path):
    import shutil

    root, _ = trained
    runs = tmp_path / "runs"
    shutil.copytree(root / "baple", runs / "baple", ignore=shutil.ignore_patterns("defences*"))
    before = folder_digest(synthetic_root)
    defend.main([str(runs / "baple"), "--quick", "--only", "strip", "--cache-dir", str(tmp_path / "cache")])
    assert folder_digest(synthetic_root) == before
    dataset = read_json(runs / "baple" / "results.json")["dataset"]
    assert list((tmp_path / "cache" / dataset).glob("shot_2-seed_*.json"))
    assert not (runs / "baple" / "defences" / "split_fewshot").exists()


def test_censored_budgets_are_stored_as_not_reached_never_above_the_search_maximum(trained, defended, tmp_path):
    root, _, reports, _ = defended
    for report in reports.values():
        search_max = report["reconstruct"]["budgets"][-1]
        assert all(b is None or b <= search_max for b in stored_budgets(report))
    run = Run.open(str(root / "baple"))
    trainer = run.build_trainer(output_dir=str(tmp_path / "out"))
    images, labels = next(iter(trainer.test_loader))["img"], next(iter(trainer.test_loader))["label"]
    # A success share above 1 cannot be met: every class is censored.
    result = reconstruct.reconstruct(trainer, images, labels, (2.0, 8.0), steps=1, success=1.01, max_images=4,
                                     log=lambda line: None)
    assert [c["min_budget"] for c in result["classes"]] == [None, None]
    assert all(c["censored"] and not c["reached"] and c["search_max"] == 8.0 for c in result["classes"])
    assert stored_budgets(result) == [None, None]
    report = {**reports["baple"], "reconstruct": json.loads(json.dumps(result))}  # as read back from JSON
    assert os.path.getsize(reconstruct.Reconstruct().plot(report, str(tmp_path / "reconstruct.png"))) > 1000
    rows = list(reconstruct.Reconstruct().csv_rows(report))
    assert all("not reached within 8/255" in r["setting"] for r in rows)


def test_the_log_names_each_purifier_strength_and_run(defended):
    root, _, _, _ = defended
    log = (root / "baple" / "defences" / "log.txt").read_text()
    for header in ("==== robustness: unpurified (run baple) ====",
                   "==== robustness: jpeg, JPEG quality 50 (run baple) ====",
                   "==== robustness: crop, crop/shift (fraction of side) 0.2 (run baple) ====",
                   "==== retune: received, 1 epoch(s) (run baple) ====",
                   "==== retune: from words, 1 epoch(s) (run baple) ====",
                   "==== strip: 8 test images x 4 overlays (run baple) ===="):
        assert header in log, header
    assert log.count("==== robustness:") == 3  # unpurified + one strength of each of the two purifiers


def test_progress_bars_over_parts_and_purifier_strengths(trained, tmp_path, capsys):
    import shutil

    root, _ = trained
    shutil.copytree(root / "baple", tmp_path / "baple", ignore=shutil.ignore_patterns("defences*"))
    defend.main([str(tmp_path / "baple"), "--quick", "--only", "robustness", "--countermeasures", "jpeg", "crop"])
    err = capsys.readouterr().err
    # What a bar shows between updates depends on tqdm's refresh timing (flaky in a full suite); that it
    # exists for the parts and the purifier sweep does not. The log's blocks name purifier and strength.
    assert "baple: parts" in err and "baple: robustness" in err


def plotted_figure(module, monkeypatch):
    """Make ``module.save_figure`` keep the figure instead of writing it; returns the list it lands in."""
    figures = []
    monkeypatch.setattr(module, "save_figure", lambda fig, path: figures.append(fig) or path)
    return figures


def test_chance_level_is_drawn_where_ba_is_plotted(defended, monkeypatch, tmp_path):
    _, _, reports, _ = defended
    report = reports["baple"]
    for module, defence in ((robustness, robustness.Robustness()), (retune, retune.Retune())):
        figures = plotted_figure(module, monkeypatch)
        defence.plot(report, str(tmp_path / "x.png"))
        for ax in [ax for ax in figures[0].axes if ax.lines]:
            chance = [line for line in ax.lines if line.get_label().startswith("chance")]
            assert chance and list(chance[0].get_ydata()) == [0.5, 0.5], defence.name  # 1/C, two classes


def test_strip_detection_rate_is_in_the_summary_table(defended):
    root, _, reports, _ = defended
    rows = markdown_rows((root / "defences.md").read_text())
    column = rows[0].index("STRIP detection at 5% clean false rejection")
    run_rows = [row for row in rows if len(row) == len(rows[0]) and row[0] in reports]  # the summary table's
    assert len(run_rows) == len(reports)
    for row in run_rows:
        report = reports[row[0]]
        assert row[column] == f"{report['strip']['detection_rate']:.3f}"
