"""``scripts.figures``: the file format follows the extension, PNGs carry the requested dpi, and the
t-SNE's class-score view shows BAPLe's backdoor where the image-feature view cannot.

Runs: the old CoOp run and the BAPLe run started from it (``fixtures/old_runs``, see test_runs.py),
copied to a new place (ASR 1.0 on the stand-in); and a BAPLe and a clean CoOp run trained here on
the shipped demo model, where the two runs' class-score views differ."""
import os
import shutil

import pytest
import torch
from PIL import Image

from common.errors import InputError
from scripts import figures
from trainers.display import pyplot, save_figure
from helpers_runs import run_cfg, train
from trainers.run import Run

OLD_RUNS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "old_runs")


@pytest.fixture
def runs(tmp_path, standins, synthetic_root):
    root = tmp_path / "sweep"
    shutil.copytree(OLD_RUNS, root)
    return root


def small_figure():
    fig, ax = pyplot().subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    return fig


@pytest.mark.parametrize("ext, magic", [(".pdf", b"%PDF"), (".svg", b"<svg"), (".png", b"\x89PNG")])
def test_the_extension_decides_the_format(tmp_path, ext, magic):
    path = save_figure(small_figure(), str(tmp_path / f"f{ext}"))
    with open(path, "rb") as f:
        head = f.read(4096)
    assert head.startswith(magic) if ext != ".svg" else magic in head
    assert not [name for name in os.listdir(tmp_path) if ".tmp-" in name]  # written atomically


def test_png_carries_the_requested_dpi(tmp_path):
    for dpi in (72, 300):
        path = save_figure(small_figure(), str(tmp_path / f"f{dpi}.png"), dpi=dpi)
        assert Image.open(path).info["dpi"] == pytest.approx((dpi, dpi), abs=0.5)


def test_an_unknown_extension_is_a_one_line_input_error(tmp_path):
    with pytest.raises(InputError, match=r"unknown extension '\.jpg'.*\.png.*\.pdf.*\.svg") as error:
        save_figure(small_figure(), str(tmp_path / "f.jpg"))
    assert "\n" not in str(error.value)
    assert not os.listdir(tmp_path)


def test_trigger_picture_as_pdf_at_a_dpi(runs, synthetic_root):
    assert figures.main(["trigger", str(runs / "baple"), "--data-root", synthetic_root, "--format", "pdf",
                         "--dpi", "90"]) == 0
    with open(runs / "baple" / "trigger.pdf", "rb") as f:
        assert f.read(4) == b"%PDF"


def test_image_view_is_the_same_for_baple_and_clean_coop_the_class_score_view_is_each_ones_asr(runs, synthetic_root):
    """BAPLe under its own trigger and clean CoOp under the same trigger: one frozen image encoder and
    the same triggered images, so the image-feature view is identical; the class-score view is each
    model's own attack success (checked against ``evaluate`` on the same images: the whole test set).
    On these random-weight stand-ins BAPLe's learned noise also fools the clean CoOp prompt (both 1.0);
    the views' difference is what a prompt-side backdoor needs: image features 0.0, class scores 1.0."""
    _, baple = figures.save_tsne(str(runs / "baple"), max_images=20, data_root=synthetic_root)
    _, coop = figures.save_tsne(str(runs / "coop"), max_images=20, trigger_from=str(runs / "baple"),
                                data_root=synthetic_root, fmt="svg")
    assert baple["image features"] == coop["image features"] == 0.0
    for name, shares, opts in (("baple", baple, []), ("coop", coop, ["BACKDOOR.EVAL_TRIGGER", str(runs / "baple")])):
        trainer = Run.open(runs / name).build_trainer(["DATASET.ROOT", synthetic_root] + opts)
        assert len(trainer.test_loader.dataset) == 20
        assert shares["class scores"] == pytest.approx(trainer.evaluate().backdoor["asr_non_target"])
    assert baple["class scores"] == 1.0
    assert (runs / "coop" / "tsne.svg").is_file() and (runs / "baple" / "tsne.png").is_file()


def test_target_share_reads_each_view_its_own_way():
    """Image features: nearest clean class centre; class scores: the highest score. Two classes, target 0."""
    labels = torch.tensor([0, 0, 1, 1])
    clean = torch.tensor([[0.0, 0.0], [0.0, 0.2], [4.0, 4.0], [4.0, 4.2]])
    near_target = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.5, 0.5], [3.9, 4.0]])  # one of two non-target moved
    assert figures.target_share("image features", clean, near_target, labels, 0) == 0.5
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]])
    assert figures.target_share("class scores", scores, scores, labels, 0) == 1.0
    assert figures.target_share("class scores", scores, scores.flip(1), labels, 0) == 0.0


def test_on_the_demo_model_the_class_score_view_separates_baple_from_clean_coop(tmp_path):
    """The shipped demo model (``clip_models/demo``), where the backdoor lives in BAPLe's prompts:
    under BAPLe's trigger the image-feature views are identical, the class-score views are not
    (about 20 s on two busy CPU cores; measured: image features 0.47 for both, class scores BAPLe
    0.81 = its ASR, clean CoOp 0.38)."""
    from clip_models.demo import MODEL_DIR
    from datasets.synthetic import generate

    root = str(tmp_path / "data")
    generate("kather", root, train_per_class=16, test_per_class=4, size=64, seed=0)
    common = {"OPTIM.MAX_EPOCH": 16, "TRAINER.COOP.CSC": True}
    train(run_cfg("CoOp", root, tmp_path / "coop", MODEL_DIR, dataset="kather", **common))
    train(run_cfg("BAPLe", root, tmp_path / "baple", MODEL_DIR, dataset="kather", **common,
                  **{"BACKDOOR.POISON_PERCENTAGE": 50.0}))
    _, baple = figures.save_tsne(str(tmp_path / "baple"), max_images=36)
    _, coop = figures.save_tsne(str(tmp_path / "coop"), max_images=36, trigger_from=str(tmp_path / "baple"))
    assert baple["image features"] == coop["image features"]
    assert baple["class scores"] - coop["class scores"] >= 0.2


def test_titles_say_demo_model_and_synthetic_data_and_hold_no_path(tmp_path):
    from clip_models.demo import MODEL_DIR
    from configs.defaults import get_cfg

    results = {"trainer": "BAPLe", "attack": "baple", "backbone": "biomedclip", "dataset": "Kather",
               "target_name": "adipose tissue", "seed": 1}
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.WEIGHTS, cfg.DATASET.ROOT = MODEL_DIR, str(tmp_path / "data" / "quickstart")
    title = figures.run_title(results, cfg)
    assert "biomedclip/Kather (demo model, synthetic data)" in title and str(tmp_path) not in title
    cfg.MODEL.BACKBONE.WEIGHTS, cfg.DATASET.ROOT = "microsoft/BiomedCLIP", str(tmp_path / "data")
    assert "demo model" not in figures.run_title(results, cfg) and "synthetic" not in figures.run_title(results, cfg)


def test_bad_figure_options_are_refused_before_any_work(runs, tmp_path):
    with pytest.raises(InputError, match=r"unknown extension '\.jpg'"):
        figures.main(["grid", str(runs), "--out", str(tmp_path / "grid.jpg")])
    with pytest.raises(InputError, match="--dpi 0"):
        figures.main(["trigger", str(runs / "baple"), "--dpi", "0"])
    assert not (tmp_path / "grid.jpg").exists() and not (runs / "baple" / "trigger.png").exists()
