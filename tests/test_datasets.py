"""The folder datasets: registration, layout checks, few-shot sampling, bad files, image loading."""
import json
import os
import os.path as osp
import random
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import datasets  # noqa: F401  (registers the seven datasets)
from common.errors import InputError
from dassl_compat import DATASET_REGISTRY, DataManager
from datasets import ImageDataset, load_image
from datasets.synthetic import folder_datasets, generate
from helpers_data import dataset_cfg, write_png

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

# The class lists of the paper (docs/PAPER.md), folder -> class name.
PAPER_CLASSES = {
    "covid": {"covid": "covid", "normal": "normal"},
    "rsna18": {"normal": "normal", "no_lung_opacity_not_normal": "no lung opacity, not normal",
               "lung_opacity": "lung opacity"},
    "mimic": {"atelectasis": "atelectasis", "cardiomegaly": "cardiomegaly", "consolidation": "consolidation",
              "edema": "edema", "pleural_effusion": "pleural effusion"},
    "kather": {"ADI": "adipose tissue", "BACK": "background", "DEB": "debris", "LYM": "lymphocytes",
               "MUC": "mucus", "MUS": "smooth muscle", "NORM": "normal colon mucosa",
               "STR": "cancer-associated stroma", "TUM": "colorectal adenocarcinoma epithelium"},
    "pannuke": {"benign": "benign", "malignant": "malignant"},
    "digestpath": {"benign": "benign", "malignant": "malignant"},
    # Not in the paper's tables; the reference code's (PLIP's binary WSSS4LUAD: tumour or not).
    "wsss4luad": {"normal": "normal", "tumor": "tumor"},
}
REGISTERED = {"covid": "Covid", "rsna18": "RSNA18", "mimic": "MIMIC", "kather": "Kather", "pannuke": "PanNuke",
              "digestpath": "DigestPath", "wsss4luad": "WSSS4LUAD"}


def build(root, name="Kather", **kwargs):
    return DATASET_REGISTRY.get(name)(dataset_cfg(root, name, **kwargs))


def one_line_error(excinfo, *parts):
    message = str(excinfo.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    """All seven datasets, small: 6 train and 3 test images per class at 16 px."""
    root = tmp_path_factory.mktemp("synthetic")
    for name in folder_datasets():
        generate(name, root, train_per_class=6, test_per_class=3, size=16, seed=0)
    return root


@pytest.fixture
def kather_root(synthetic_root, tmp_path):
    """A private, writable copy of the synthetic Kather (tests damage it)."""
    shutil.copytree(osp.join(synthetic_root, "kather"), tmp_path / "kather")
    return tmp_path


@pytest.mark.parametrize("folder", sorted(PAPER_CLASSES))
def test_each_dataset_is_registered_configured_and_reads_its_layout(synthetic_root, folder):
    from configs.defaults import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(osp.join(REPO, "configs", "datasets", f"{folder}.yaml"))
    assert cfg.DATASET.NAME == REGISTERED[folder]

    dataset = build(synthetic_root, REGISTERED[folder])
    folders = sorted(PAPER_CLASSES[folder])
    assert dataset.classnames == [PAPER_CLASSES[folder][f] for f in folders]
    assert dataset.val is None
    assert len(dataset.train_x) == 6 * len(folders) and len(dataset.test) == 3 * len(folders)
    for item in dataset.train_x + dataset.test:
        # labels follow the sorted folder order
        assert folders[item.label] == osp.basename(osp.dirname(item.impath))
    prompt = dataset.prompt_template.format(dataset.classnames[0])
    assert dataset.classnames[0] in prompt and "{}" in dataset.prompt_template


def sample_names(dataset):
    return sorted(osp.relpath(item.impath, dataset.dataset_dir) for item in dataset.train_x)


def test_fewshot_same_seed_same_files_and_exactly_k_per_class(kather_root):
    first = build(kather_root, num_shots=4, seed=3)
    counts = np.bincount([item.label for item in first.train_x])
    assert counts.tolist() == [4] * 9
    cache = osp.join(kather_root, "kather", "split_fewshot", "shot_4-seed_3.json")
    record = json.load(open(cache))
    assert sorted(record["train"]) == sample_names(first)
    assert all(not osp.isabs(p) for p in record["train"])

    os.remove(cache)  # a fresh draw, not the cache, must give the same files, whatever the global RNG
    random.seed(12345)
    np.random.seed(12345)
    again = build(kather_root, num_shots=4, seed=3)
    assert sample_names(again) == sample_names(first)


def test_fewshot_different_seed_different_files(kather_root):
    one = sample_names(build(kather_root, num_shots=2, seed=1))
    two = sample_names(build(kather_root, num_shots=2, seed=2))
    assert one != two
    assert len(one) == len(two) == 18


def test_fewshot_all_train_images_when_shots_below_one(kather_root):
    dataset = build(kather_root, num_shots=0)
    assert len(dataset.train_x) == 6 * 9
    assert not osp.exists(osp.join(kather_root, "kather", "split_fewshot"))


def test_fewshot_cache_is_reused_and_stale_cache_is_an_error(kather_root):
    first = build(kather_root, num_shots=2, seed=5)
    cache = first.fewshot_cache
    # A new image in a class does not change a cached sample.
    write_png(osp.join(kather_root, "kather", "images", "train", "ADI", "ADI_9999.png"))
    assert sample_names(build(kather_root, num_shots=2, seed=5)) == sample_names(first)
    # An image of the sample gone: stop, and say which cache to delete.
    os.remove(first.train_x[0].impath)
    with pytest.raises(InputError) as excinfo:
        build(kather_root, num_shots=2, seed=5)
    one_line_error(excinfo, cache, "delete")
    os.remove(cache)
    assert len(build(kather_root, num_shots=2, seed=5).train_x) == 18


def test_negative_seed_draws_a_seed_and_caches_under_it(kather_root, capsys):
    dataset = build(kather_root, num_shots=3, seed=-1)
    assert dataset.fewshot_seed >= 0
    assert f"SEED {dataset.fewshot_seed}" in capsys.readouterr().out
    os.remove(dataset.fewshot_cache)
    assert sample_names(build(kather_root, num_shots=3, seed=dataset.fewshot_seed)) == sample_names(dataset)


def test_too_few_images_for_the_shots_is_reported_not_shrunk(kather_root):
    with pytest.raises(InputError) as excinfo:
        build(kather_root, num_shots=7)
    one_line_error(excinfo, "'ADI'", "6 training image", "NUM_SHOTS", "lower")


def test_layout_errors_name_the_path_and_the_fix(tmp_path, kather_root):
    with pytest.raises(InputError) as excinfo:
        build(tmp_path / "nowhere")
    one_line_error(excinfo, str(tmp_path / "nowhere"), "DATASET.ROOT")

    with pytest.raises(InputError) as excinfo:
        build(tmp_path, "Covid")
    one_line_error(excinfo, str(tmp_path / "covid"), "datasets.prepare.covid")

    dataset_dir = kather_root / "kather"
    classnames = dataset_dir / "classnames.txt"
    original = classnames.read_text()

    classnames.write_text(original.replace("TUM colorectal adenocarcinoma epithelium\n", ""))
    with pytest.raises(InputError) as excinfo:
        build(kather_root)
    one_line_error(excinfo, "TUM", str(dataset_dir / "images" / "train"), "not listed in classnames.txt")

    classnames.write_text(original + "XTRA extra class\n")
    with pytest.raises(InputError) as excinfo:
        build(kather_root)
    one_line_error(excinfo, "XTRA", str(dataset_dir / "images" / "train"), "add the folder")

    classnames.write_text(original + "XTRA\n")
    with pytest.raises(InputError) as excinfo:
        build(kather_root)
    one_line_error(excinfo, str(classnames), "line 10", "XTRA <class name>")

    classnames.unlink()
    with pytest.raises(InputError) as excinfo:
        build(kather_root)
    one_line_error(excinfo, str(classnames), "<folder> <class name>")
    classnames.write_text(original)

    test_mus = dataset_dir / "images" / "test" / "MUS"
    shutil.rmtree(test_mus)
    test_mus.mkdir()
    with pytest.raises(InputError) as excinfo:
        build(kather_root)
    one_line_error(excinfo, str(test_mus), "no images", "remove class 'MUS'")


def damage(kather_root):
    """Three bad files in the test split: corrupt PNG bytes, a zero-byte PNG, a text file."""
    test_dir = kather_root / "kather" / "images" / "test"
    (test_dir / "ADI" / "ADI_0000.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (test_dir / "DEB" / "empty.png").write_bytes(b"")
    (test_dir / "LYM" / "notes.txt").write_text("not an image")
    return sorted(str(p) for p in (test_dir / "ADI" / "ADI_0000.png", test_dir / "DEB" / "empty.png",
                                   test_dir / "LYM" / "notes.txt"))


def test_bad_file_error_policy_names_the_file(kather_root):
    bad = damage(kather_root)
    with pytest.raises(InputError) as excinfo:
        build(kather_root, bad_files="error")
    message = one_line_error(excinfo, "DATASET.BAD_FILES skip")
    assert any(path in message for path in bad)


def test_bad_file_skip_policy_drops_and_reports(kather_root, capsys):
    bad = damage(kather_root)
    dataset = build(kather_root, bad_files="skip")
    used = {item.impath for item in dataset.test}
    assert not used & set(bad)
    assert len(dataset.test) == 3 * 9 - 1  # the two extra files were never images of the count
    out = capsys.readouterr().out
    assert "left out 3 unreadable image(s)" in out and bad[0] in out


def test_bad_file_skip_in_fewshot_draw_keeps_k(kather_root):
    clean = build(kather_root, num_shots=5, seed=4)
    os.remove(clean.fewshot_cache)
    victim = next(item.impath for item in clean.train_x if item.label == 0)
    open(victim, "wb").close()
    skipped = build(kather_root, num_shots=5, seed=4, bad_files="skip")
    assert np.bincount([item.label for item in skipped.train_x]).tolist() == [5] * 9
    assert victim not in {item.impath for item in skipped.train_x}
    os.remove(skipped.fewshot_cache)
    with pytest.raises(InputError) as excinfo:
        build(kather_root, num_shots=5, seed=4, bad_files="error")
    one_line_error(excinfo, victim)


def test_bad_files_value_and_subsample_are_checked(kather_root):
    with pytest.raises(InputError) as excinfo:
        build(kather_root, bad_files="ignore")
    one_line_error(excinfo, "DATASET.BAD_FILES", "error, skip")
    cfg = dataset_cfg(kather_root, "Kather")
    cfg.DATASET.SUBSAMPLE_CLASSES = "base"
    with pytest.raises(InputError):
        DATASET_REGISTRY.get("Kather")(cfg)


def save(img, path):
    img.save(path)
    return str(path)


def test_load_image_converts_every_mode_to_rgb(tmp_path):
    grey16 = np.array([[0, 257 * 100], [65535, 257 * 7]], dtype=np.uint16)
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putdata([0, 1])
    palette_transparent = palette.copy()
    palette_transparent.info["transparency"] = 1
    cases = {
        "grey.png": (Image.fromarray(np.array([[0, 200]], dtype=np.uint8)), [[0, 0, 0], [200, 200, 200]]),
        "grey16.png": (Image.fromarray(grey16), [[0, 0, 0], [100, 100, 100], [255, 255, 255], [7, 7, 7]]),
        "int32.tif": (Image.fromarray(np.array([[0, 65535]], dtype=np.int32)), [[0, 0, 0], [255, 255, 255]]),
        "float.tif": (Image.fromarray(np.array([[0.0, 0.5]], dtype=np.float32)), [[0, 0, 0], [128, 128, 128]]),
        "float_wide.tif": (Image.fromarray(np.array([[-10.0, 30.0]], dtype=np.float32)), [[0, 0, 0], [255, 255, 255]]),
        "rgba.png": (Image.fromarray(np.array([[[200, 100, 50, 255], [200, 100, 50, 0]]], dtype=np.uint8)),
                     [[200, 100, 50], [0, 0, 0]]),
        "la.png": (Image.fromarray(np.array([[[80, 255], [80, 0]]], dtype=np.uint8), mode="LA"),
                   [[80, 80, 80], [0, 0, 0]]),
        "palette.png": (palette, [[10, 20, 30], [200, 100, 50]]),
        "palette_transparent.png": (palette_transparent, [[10, 20, 30], [0, 0, 0]]),
        "cmyk.jpg": (Image.new("CMYK", (2, 1), (0, 0, 0, 0)), [[255, 255, 255], [255, 255, 255]]),
        "bilevel.png": (Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).convert("1"),
                        [[0, 0, 0], [255, 255, 255]]),
    }
    for name, (img, expected) in cases.items():
        loaded = load_image(save(img, tmp_path / name))
        assert loaded.mode == "RGB", name
        pixels = np.asarray(loaded).reshape(-1, 3)
        assert np.abs(pixels.astype(int) - np.array(expected)).max() <= 1, (name, pixels.tolist())


def test_load_image_reports_unreadable_files_by_path(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path in (truncated, empty, tmp_path / "missing.png"):
        with pytest.raises(InputError) as excinfo:
            load_image(str(path))
        one_line_error(excinfo, str(path), "replace or delete")


def test_image_dataset_gives_dassl_items_with_rgb_unit_tensors(synthetic_root):
    cfg = dataset_cfg(synthetic_root, "RSNA18", num_shots=2, seed=1)
    manager = DataManager(cfg, dataset_wrapper=ImageDataset)
    batch = next(iter(manager.test_loader))
    assert set(batch) >= {"img", "label", "domain", "impath", "index"}
    assert batch["img"].shape[1:] == (3, 224, 224)
    assert 0.0 <= batch["img"].min() and batch["img"].max() <= 1.0

    raw = ImageDataset(cfg, manager.dataset.test)  # no transform: the image as an RGB [0, 1] tensor
    item = raw[0]
    assert item["img"].shape == (3, 16, 16) and item["img"].dtype == torch.float32
    assert torch.equal(item["img"][0], item["img"][1])  # X-rays are greyscale
    assert item["label"] == manager.dataset.test[0].label and item["index"] == 0


def pixels_and_labels(dataset_dir, split):
    folders = sorted(os.listdir(osp.join(dataset_dir, "images", split)))
    features, labels = [], []
    for label, folder in enumerate(folders):
        class_dir = osp.join(dataset_dir, "images", split, folder)
        for name in sorted(os.listdir(class_dir)):
            img = load_image(osp.join(class_dir, name)).resize((16, 16))
            features.append(np.asarray(img, dtype=np.float32).ravel() / 255.0)
            labels.append(label)
    return np.stack(features), np.array(labels)


@pytest.mark.parametrize("name", ["kather", "mimic", "wsss4luad"])
def test_synthetic_images_are_deterministic_and_learnable(tmp_path, name):
    from sklearn.neighbors import NearestCentroid

    roots = {seed_dir: generate(name, tmp_path / seed_dir, train_per_class=24, test_per_class=12, size=48, seed=seed)
             for seed_dir, seed in (("a", 7), ("b", 7), ("c", 8))}
    first = osp.join("images", "test", sorted(folder_datasets()[name].classes)[0], "")
    first += sorted(os.listdir(osp.join(roots["a"], first)))[0]
    content = {key: open(osp.join(root, first), "rb").read() for key, root in roots.items()}
    assert content["a"] == content["b"] != content["c"]
    assert Image.open(osp.join(roots["a"], first)).mode == ("RGB" if folder_datasets()[name].modality == "histology" else "L")

    # Classes differ in what even a nearest-class-mean rule on 16 px thumbnails picks up.
    x_train, y_train = pixels_and_labels(roots["a"], "train")
    x_test, y_test = pixels_and_labels(roots["a"], "test")
    accuracy = NearestCentroid().fit(x_train, y_train).score(x_test, y_test)
    assert accuracy > max(0.6, 1.5 / len(folder_datasets()[name].classes)), accuracy  # well above chance


def test_synthetic_command_line(tmp_path, capsys):
    from datasets.synthetic import main

    main(["--name", "pannuke", "--out", str(tmp_path), "--train-per-class", "3", "--test-per-class", "2",
          "--size", "12", "--seed", "1"])
    assert "benign" in capsys.readouterr().out
    dataset = build(tmp_path, "PanNuke")
    assert (len(dataset.train_x), len(dataset.test)) == (6, 4)
    from common import cli

    assert cli.run(main, ["--name", "pannuke", "--root", str(tmp_path)]) == 2  # the dataset is there already
    assert str(tmp_path / "pannuke") in capsys.readouterr().out


# ---- DATASET.FEWSHOT_SAMPLER dassl: the picks of Dassl's own generate_fewshot_dataset ----------------------------
DASSL_SRC, DASSL_DEPS = "/work/scratch/dassl-src", "/work/scratch/dassl-deps"
DASSL_PICKS = """
import json, sys
from dassl.data.datasets import DatasetBase, Datum
from dassl.utils import set_random_seed
job = json.load(sys.stdin)
items = [Datum(impath=path, label=label) for path, label in job["items"]]
set_random_seed(job["seed"])
picks = DatasetBase(train_x=items).generate_fewshot_dataset(items, num_shots=job["num_shots"])
print(json.dumps([item.impath for item in picks]))
"""


def dassl_picks(items, num_shots, seed):
    """Dassl's picks, computed in a subprocess (importing dassl here would switch later tests' engine)."""
    import subprocess
    import sys

    if not osp.isdir(osp.join(DASSL_SRC, "dassl")):
        pytest.skip(f"Dassl's source is not at {DASSL_SRC}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([DASSL_SRC, DASSL_DEPS]))
    done = subprocess.run([sys.executable, "-c", DASSL_PICKS], input=json.dumps(
        {"items": items, "num_shots": num_shots, "seed": seed}), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("seed", [1, 7])
def test_dassl_sampler_picks_what_dassls_function_picks_on_generated_items(tmp_path, seed):
    from datasets.folder import dassl_fewshot_sample

    sizes = [9, 3, 12, 5]  # class 1 has fewer than the 4 shots: Dassl keeps all of its items
    items = [(str(tmp_path / f"c{label}-img{i:02d}.png"), label) for label, size in enumerate(sizes) for i in range(size)]
    for path, _ in items:  # Dassl's Datum checks that its file exists
        open(path, "wb").close()
    groups = {label: [path for path, lab in items if lab == label] for label in range(len(sizes))}
    ours = [path for picks in dassl_fewshot_sample(groups, 4, seed).values() for path in picks]
    assert ours == dassl_picks(items, 4, seed)
    assert len(ours) == 4 + 3 + 4 + 4


def test_dassl_sampler_of_a_dataset_picks_what_dassl_picks_over_its_items(kather_root):
    cfg = dataset_cfg(kather_root, "Kather", num_shots=4, seed=3)
    cfg.DATASET.FEWSHOT_SAMPLER = "dassl"
    dataset = DATASET_REGISTRY.get("Kather")(cfg)
    everything = build(kather_root, num_shots=0)  # the items in the dataset's order: label, then name
    items = [(item.impath, item.label) for item in everything.train_x]
    assert [item.impath for item in dataset.train_x] == dassl_picks(items, 4, 3)
    per_class = build(kather_root, num_shots=4, seed=3)
    assert sample_names(per_class) != sample_names(dataset)  # a sampler of its own, cached apart
    assert osp.isfile(osp.join(kather_root, "kather", "split_fewshot", "shot_4-seed_3-dassl.json"))
    again = DATASET_REGISTRY.get("Kather")(cfg)  # read back from its cache
    assert [item.impath for item in again.train_x] == [item.impath for item in dataset.train_x]


def test_an_unknown_fewshot_sampler_is_one_line(kather_root):
    cfg = dataset_cfg(kather_root, "Kather", num_shots=4)
    cfg.DATASET.FEWSHOT_SAMPLER = "coop"
    with pytest.raises(InputError) as excinfo:
        DATASET_REGISTRY.get("Kather")(cfg)
    one_line_error(excinfo, "DATASET.FEWSHOT_SAMPLER 'coop' is unknown; choose from per_class, dassl")
