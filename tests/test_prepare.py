"""The preparation commands, each on a tiny raw fixture in its release's real format, and the
group-aware split they share."""
import csv
import gzip
import io
import os
import os.path as osp
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid

import datasets  # noqa: F401  (registers the seven datasets)
from common import cli
from common.errors import InputError
from dassl_compat import DATASET_REGISTRY
from datasets.prepare import common, covid, digestpath, kather, mimic, pannuke, rsna18, wsss4luad
from helpers_data import dataset_cfg, listing, write_png


def load(out, name):
    """The prepared dataset read back by its registered class (this checks the whole layout)."""
    return DATASET_REGISTRY.get(name)(dataset_cfg(out, name))


def assert_refuses_to_overwrite(prepare, raw, out, name, **kwargs):
    with pytest.raises(InputError) as excinfo:
        prepare(raw, out, **kwargs)
    assert osp.join(out, name) in str(excinfo.value) and "not empty" in str(excinfo.value)


def write_csv(path, columns, rows):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wt", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------------------------------------
# The shared split


def test_group_split_keeps_groups_whole_stratifies_and_is_seeded():
    rng = np.random.default_rng(0)
    samples = [common.Sample(label=f"c{rng.integers(3)}", group=f"g{rng.integers(150)}", source=None)
               for _ in range(600)]
    is_test = common.group_split(samples, 0.3, seed=1)
    side = {}
    for sample, test in zip(samples, is_test):
        assert side.setdefault(sample.group, test) == test  # a group never straddles the splits
    totals = Counter(s.label for s in samples)
    tested = Counter(s.label for s, t in zip(samples, is_test) if t)
    for label, total in totals.items():
        assert abs(tested[label] / total - 0.3) < 0.05
    assert common.group_split(samples, 0.3, seed=1) == is_test
    assert common.group_split(samples, 0.3, seed=2) != is_test
    with pytest.raises(InputError):
        common.group_split(samples, 1.0, seed=1)


# ---------------------------------------------------------------------------------------------
# COVID-19 Radiography Database


@pytest.fixture
def covid_raw(tmp_path):
    base = tmp_path / "raw" / "COVID-19_Radiography_Dataset"
    sizes = {"COVID": 6, "Normal": 8, "Lung_Opacity": 3, "Viral Pneumonia": 3}
    for release, n in sizes.items():
        for i in range(1, n + 1):
            write_png(str(base / release / "images" / f"{release}-{i}.png"), value=i, mode="L")
            write_png(str(base / release / "masks" / f"{release}-{i}.png"), value=255, mode="L")
        (base / f"{release}.metadata.xlsx").write_bytes(b"PK")
    (base / "README.md.txt").write_text("release notes")
    return str(tmp_path / "raw")


def test_covid_two_classes_split_in_half_per_class(covid_raw, tmp_path):
    out = str(tmp_path / "out")
    covid.prepare(covid_raw, out, seed=0)
    files = listing(osp.join(out, "covid"))
    assert {split: {c: len(f) for c, f in classes.items()} for split, classes in files.items()} == {
        "train": {"covid": 3, "normal": 4}, "test": {"covid": 3, "normal": 4}}
    assert not set(files["train"]["covid"]) & set(files["test"]["covid"])
    assert set(files["train"]["covid"] + files["test"]["covid"]) == {f"COVID-{i}.png" for i in range(1, 7)}
    assert load(out, "Covid").classnames == ["covid", "normal"]
    assert_refuses_to_overwrite(covid.prepare, covid_raw, out, "covid")


def test_covid_command_line_and_its_errors(covid_raw, tmp_path, capsys):
    out = str(tmp_path / "out")
    parser = common.command(covid.__doc__, test_fraction=0.5)
    main = common.main(covid.prepare, parser)
    assert cli.run(main, ["--raw", covid_raw, "--root", out, "--seed", "3", "--test-fraction", "0.25"]) == 0
    assert "covid" in capsys.readouterr().out
    test_counts = {c: len(f) for c, f in listing(osp.join(out, "covid"))["test"].items()}
    assert test_counts == {"covid": 1, "normal": 2}  # 0.25 of 6 (1.5: a tie stays in train) and of 8
    assert cli.run(main, ["--raw", str(tmp_path / "absent"), "--out", str(tmp_path / "o2")]) == 2  # --out: alias
    printed = capsys.readouterr().out.strip()
    assert printed.count("\n") == 0 and printed.startswith("error: ") and str(tmp_path / "absent") in printed


# ---------------------------------------------------------------------------------------------
# RSNA Pneumonia Detection Challenge


def write_dicom(path, pixels, bits_stored, photometric="MONOCHROME2", jpeg=False):
    """A single-frame greyscale DICOM; ``jpeg``: JPEG-baseline compressed (the pixel encoding of
    many released X-ray DICOMs)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = osp.splitext(osp.basename(path))[0]
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if jpeg:
        encoded = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(encoded, format="JPEG", quality=95)
        ds.PixelData = encapsulate([encoded.getvalue()])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = pixels.astype(np.uint8 if bits_stored <= 8 else np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


RSNA_CLASSES = ["Normal", "No Lung Opacity / Not Normal", "Lung Opacity"]


@pytest.fixture
def rsna_raw(tmp_path):
    raw = tmp_path / "raw"
    (raw / "stage_2_train_images").mkdir(parents=True)
    details, labels = [], []
    for i in range(30):
        patient = f"{i:08x}-0000-4000-8000-{i:012x}"
        release_class = RSNA_CLASSES[i % 3]
        boxes = 2 if release_class == "Lung Opacity" else 1  # one CSV row per box, as released
        for box in range(boxes):
            details.append({"patientId": patient, "class": release_class})
            opacity = release_class == "Lung Opacity"
            labels.append({"patientId": patient, "x": 100.0 + box if opacity else "", "y": 150.0 if opacity else "",
                           "width": 200.0 if opacity else "", "height": 300.0 if opacity else "",
                           "Target": int(opacity)})
        pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) + i
        write_dicom(str(raw / "stage_2_train_images" / f"{patient}.dcm"), pixels, 8, jpeg=i % 2 == 1)
    write_csv(str(raw / "stage_2_detailed_class_info.csv"), ["patientId", "class"], details)
    write_csv(str(raw / "stage_2_train_labels.csv"), ["patientId", "x", "y", "width", "height", "Target"], labels)
    return raw


def test_rsna18_splits_by_patient_and_converts_dicoms(rsna_raw, tmp_path):
    out = str(tmp_path / "out")
    rsna18.prepare(str(rsna_raw), out, seed=0, test_fraction=0.2)
    files = listing(osp.join(out, "rsna18"))
    patients = {split: {f[:-4] for names in classes.values() for f in names} for split, classes in files.items()}
    assert not patients["train"] & patients["test"]
    assert len(patients["train"] | patients["test"]) == 30
    for split, classes in files.items():
        per_class = 8 if split == "train" else 2  # 20 % of each class's 10 patients are test patients
        assert {c: len(f) for c, f in classes.items()} == dict.fromkeys(rsna18.RSNA18.classes, per_class)
        for folder, names in classes.items():
            for name in names:  # class from the CSV: patient i has release class i % 3
                index = int(name.split("-")[0], 16)
                assert folder == rsna18.RELEASE_CLASSES[RSNA_CLASSES[index % 3]]
    for split, classes in files.items():
        for folder, names in classes.items():
            for name in names:
                index = int(name.split("-")[0], 16)
                png = Image.open(osp.join(out, "rsna18", "images", split, folder, name))
                assert png.mode == "L"
                error = np.abs(np.asarray(png, dtype=int) - (np.arange(64).reshape(8, 8) + index)).max()
                assert error <= (4 if index % 2 else 0)  # JPEG-compressed DICOMs are lossy
    assert load(out, "RSNA18").classnames == ["lung opacity", "no lung opacity, not normal", "normal"]
    assert_refuses_to_overwrite(rsna18.prepare, str(rsna_raw), out, "rsna18")


def test_rsna18_deep_monochrome1_dicom_becomes_full_range_16bit(tmp_path):
    pixels = np.array([[0, 4095], [1000, 2048]], dtype=np.uint16)
    write_dicom(str(tmp_path / "deep.dcm"), pixels, 12, photometric="MONOCHROME1")
    rsna18.dicom_to_png(str(tmp_path / "deep.dcm"), str(tmp_path / "deep.png"))
    png = Image.open(tmp_path / "deep.png")
    assert png.mode == "I;16"
    expected = np.rint((4095 - pixels.astype(float)) * 65535 / 4095)
    assert np.array_equal(np.asarray(png), expected.astype(np.uint16))


def test_rsna18_rejects_labels_that_disagree(rsna_raw, tmp_path):
    path = rsna_raw / "stage_2_train_labels.csv"
    text = path.read_text().splitlines()
    header, first = text[0], text[1]
    path.write_text("\n".join([header, first[:-1] + ("0" if first.endswith("1") else "1")] + text[2:]) + "\n")
    with pytest.raises(InputError) as excinfo:
        rsna18.prepare(str(rsna_raw), str(tmp_path / "out"))
    assert first.split(",")[0] in str(excinfo.value)
    assert not osp.exists(tmp_path / "out" / "rsna18")


# ---------------------------------------------------------------------------------------------
# MIMIC-CXR-JPG


CHEXPERT_COLUMNS = ["subject_id", "study_id", "Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
                    "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion", "Lung Opacity", "No Finding",
                    "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices"]
METADATA_COLUMNS = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
                    "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                    "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]
FIVE = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


@pytest.fixture
def mimic_raw(tmp_path):
    """30 patients; each has two studies (the second often of another class) plus studies that must be
    left out; each study has a frontal and a lateral image; one listed frontal image is not downloaded."""
    raw = tmp_path / "raw"
    chexpert, metadata, expected = [], [], {}
    folder_of = {column: folder for folder, column in mimic.FINDINGS.items()}
    study_number = 50000000

    def add_study(subject, findings, views=("PA", "LATERAL"), download=True):
        nonlocal study_number
        study_number += 1
        row = {c: "" for c in CHEXPERT_COLUMNS}
        row.update(subject_id=subject, study_id=str(study_number), **findings)
        chexpert.append(row)
        dicoms = []
        for k, view in enumerate(views):
            dicom = f"{study_number:08x}-{k:08x}-0000-0000-{int(subject):08x}"
            metadata.append({c: "" for c in METADATA_COLUMNS} | {
                "dicom_id": dicom, "subject_id": subject, "study_id": str(study_number), "ViewPosition": view,
                "Rows": "8", "Columns": "8"})
            if download:
                write_png(str(raw / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study_number}" / f"{dicom}.jpg"))
            dicoms.append((dicom, view))
        return dicoms

    for p in range(30):
        subject = str(10000000 + p * 1111)
        first, second = FIVE[p % 5], FIVE[(p + p // 5) % 5]
        for finding in (first, second):
            views = ("AP", "LATERAL") if p % 2 else ("PA", "LL")
            for dicom, view in add_study(subject, {finding: "1.0", FIVE[(FIVE.index(finding) + 1) % 5]: "0.0",
                                                   "Support Devices": "1.0"}, views):
                if view in ("PA", "AP"):
                    expected[dicom] = (subject, folder_of[finding])
        add_study(subject, {"Atelectasis": "1.0", "Edema": "1.0"})  # two positives
        add_study(subject, {"Cardiomegaly": "1.0", "Consolidation": "-1.0"})  # uncertain on another of the five
        add_study(subject, {"No Finding": "1.0"})
    add_study("19999999", {"Edema": "1.0"}, download=False)  # listed, not downloaded
    write_csv(str(raw / "mimic-cxr-2.0.0-chexpert.csv.gz"), CHEXPERT_COLUMNS, chexpert)
    write_csv(str(raw / "mimic-cxr-2.0.0-metadata.csv.gz"), METADATA_COLUMNS, metadata)
    return raw, expected


def test_mimic_five_findings_frontal_only_split_by_patient(mimic_raw, tmp_path, capsys):
    raw, expected = mimic_raw
    out = str(tmp_path / "out")
    mimic.prepare(str(raw), out, seed=0, test_fraction=0.2)
    assert "Left out 1 frontal image" in capsys.readouterr().out
    files = listing(osp.join(out, "mimic"))
    written = {}
    for split, classes in files.items():
        for folder, names in classes.items():
            for name in names:
                written[name[:-4]] = (split, folder)
    assert set(written) == set(expected)  # frontal images of single-finding studies, nothing else
    subjects = {"train": set(), "test": set()}
    for dicom, (split, folder) in written.items():
        subject, finding = expected[dicom]
        assert folder == finding
        subjects[split].add(subject)
    assert not subjects["train"] & subjects["test"]
    assert subjects["test"] and subjects["train"]
    assert load(out, "MIMIC").classnames == ["atelectasis", "cardiomegaly", "consolidation", "edema",
                                             "pleural effusion"]
    assert_refuses_to_overwrite(mimic.prepare, str(raw), out, "mimic")


def test_mimic_study_class_rule():
    def row(**findings):
        return {column: findings.get(column.replace(" ", "_"), "") for column in mimic.FINDINGS.values()}

    assert mimic.study_class(row(Edema="1.0")) == "edema"
    assert mimic.study_class(row(Pleural_Effusion="1.0", Edema="0.0")) == "pleural_effusion"
    assert mimic.study_class(row(Edema="1.0", Atelectasis="1.0")) is None
    assert mimic.study_class(row(Edema="1.0", Atelectasis="-1.0")) is None
    assert mimic.study_class(row(Edema="-1.0")) is None
    assert mimic.study_class(row()) is None


# ---------------------------------------------------------------------------------------------
# Kather: NCT-CRC-HE-100K + CRC-VAL-HE-7K


@pytest.fixture
def kather_raw(tmp_path):
    raw = tmp_path / "raw"
    for release, n in (("NCT-CRC-HE-100K", 3), ("CRC-VAL-HE-7K", 2)):
        for c, folder in enumerate(kather.Kather.classes):
            for i in range(n):
                path = raw / release / folder / f"{folder}-{release[:3]}{c}{i:04d}.tif"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((8, 8, 3), 20 * c + i, dtype=np.uint8)).save(path)
    return raw


def test_kather_train_from_100k_test_from_7k_unchanged(kather_raw, tmp_path):
    out = str(tmp_path / "out")
    kather.prepare(str(kather_raw), out)
    files = listing(osp.join(out, "kather"))
    for split, release in kather.RELEASE_SPLITS.items():
        for folder in kather.Kather.classes:
            assert files[split][folder] == sorted(os.listdir(kather_raw / release / folder))
            name = files[split][folder][0]
            assert (kather_raw / release / folder / name).read_bytes() == \
                open(osp.join(out, "kather", "images", split, folder, name), "rb").read()
    dataset = load(out, "Kather")
    assert dataset.classnames[0] == "adipose tissue" and len(dataset.classnames) == 9
    assert_refuses_to_overwrite(kather.prepare, str(kather_raw), out, "kather")


def test_kather_missing_class_folder_is_named(kather_raw, tmp_path):
    for path in (kather_raw / "CRC-VAL-HE-7K" / "TUM").iterdir():
        path.unlink()
    (kather_raw / "CRC-VAL-HE-7K" / "TUM").rmdir()
    with pytest.raises(InputError) as excinfo:
        kather.prepare(str(kather_raw), str(tmp_path / "out"))
    assert str(kather_raw / "CRC-VAL-HE-7K" / "TUM") in str(excinfo.value)


# ---------------------------------------------------------------------------------------------
# WSSS4LUAD training patches, labels in the file names

# (slide, label vector [tumor, stroma, normal]) of each patch; slides of several patches.
WSSS4LUAD_PATCHES = [("436219", "[1, 0, 0]"), ("436219", "[1, 1, 0]"), ("436219", "[0, 1, 0]"),
                     ("512003", "[0, 0, 1]"), ("512003", "[1, 0, 1]"), ("512003", "[0, 1, 1]"),
                     ("TCGA55", "[1, 1, 1]"), ("TCGA55", "[0, 1, 0]"), ("771240", "[1, 0, 0]"),
                     ("771240", "[0, 0, 1]"), ("880117", "[1, 0, 0]"), ("880117", "[0, 1, 0]")]


@pytest.fixture
def wsss4luad_raw(tmp_path):
    """The release's training part as it unpacks: 1.training/1.training/<slide>-<x>-<y>-[t, s, n].png."""
    folder = tmp_path / "raw" / "1.training" / "1.training"
    folder.mkdir(parents=True)
    for i, (slide, labels) in enumerate(WSSS4LUAD_PATCHES):
        size = 20 + 3 * i  # patches differ in size
        Image.fromarray(np.full((size, size + 5, 3), 10 * i, dtype=np.uint8)).save(
            folder / f"{slide}-{100 * i}-{200 * i}-{labels}.png")
    return tmp_path / "raw"


def test_wsss4luad_tumour_or_not_split_by_slide_copied_unchanged(wsss4luad_raw, tmp_path, capsys):
    out = str(tmp_path / "out")
    wsss4luad.prepare(str(wsss4luad_raw), out, seed=0, test_fraction=0.4)
    files = listing(osp.join(out, "wsss4luad"))
    expected = {f"{slide}-{100 * i}-{200 * i}-{labels}.png": "tumor" if labels.startswith("[1") else "normal"
                for i, (slide, labels) in enumerate(WSSS4LUAD_PATCHES)}
    written = {name: folder for split in files for folder, names in files[split].items() for name in names}
    assert written == expected  # every patch, in its class: tumour when the tumour flag is 1
    slides = {split: {name.split("-")[0] for names in files[split].values() for name in names} for split in files}
    assert slides["train"] and slides["test"] and not slides["train"] & slides["test"]
    name = files["test"]["tumor"][0] if files["test"]["tumor"] else files["test"]["normal"][0]
    assert (wsss4luad_raw / "1.training" / "1.training" / name).read_bytes() == \
        open(osp.join(out, "wsss4luad", "images", "test", written[name], name), "rb").read()
    dataset = load(out, "WSSS4LUAD")
    assert dataset.classnames == ["normal", "tumor"]
    assert "in both 0" in capsys.readouterr().out
    assert_refuses_to_overwrite(wsss4luad.prepare, str(wsss4luad_raw), out, "wsss4luad")


def test_wsss4luad_unnested_release_and_a_foreign_file_name(wsss4luad_raw, tmp_path):
    nested = wsss4luad_raw / "1.training" / "1.training"
    for path in nested.iterdir():
        path.rename(wsss4luad_raw / "1.training" / path.name)
    nested.rmdir()
    wsss4luad.prepare(str(wsss4luad_raw), str(tmp_path / "out"), test_fraction=0.4)
    assert len(load(str(tmp_path / "out"), "WSSS4LUAD").test) > 0
    write_png(str(wsss4luad_raw / "1.training" / "patch_01.png"))
    with pytest.raises(InputError) as excinfo:
        wsss4luad.prepare(str(wsss4luad_raw), str(tmp_path / "out2"))
    assert "patch_01.png" in str(excinfo.value) and "\n" not in str(excinfo.value)
    with pytest.raises(InputError) as excinfo:
        wsss4luad.prepare(str(tmp_path / "nothing"), str(tmp_path / "out3"))
    assert "--raw" in str(excinfo.value)


# ---------------------------------------------------------------------------------------------
# PanNuke folds


def pannuke_mask(neoplastic, others, rng):
    """One [256, 256, 6] float64 instance mask: ``neoplastic`` nuclei in channel 0, ``others`` spread
    over channels 1..4, background in channel 5 (as released: 1 where no nucleus)."""
    mask = np.zeros((256, 256, 6))
    channels = [0] * neoplastic + [1 + k % 4 for k in range(others)]
    for instance, channel in enumerate(channels, start=1):
        y, x = divmod(instance, 16)
        mask[y * 16:y * 16 + 6, x * 16:x * 16 + 6, channel] = instance + rng.integers(0, 3) * 100
    mask[..., 5] = (mask[..., :5].sum(axis=-1) == 0).astype(float)
    return mask


# (neoplastic, other nuclei) -> expected class; None: left out
PANNUKE_PATCHES = [((12, 3), "malignant"), ((10, 23), "malignant"), ((10, 24), None), ((9, 0), None),
                   ((0, 5), "benign"), ((0, 1), "benign"), ((0, 0), None), ((40, 2), "malignant"), ((0, 30), "benign")]


@pytest.fixture
def pannuke_raw(tmp_path):
    raw = tmp_path / "raw"
    rng = np.random.default_rng(0)
    for fold in (1, 2):
        images_dir = raw / f"Fold {fold}" / "images" / f"fold{fold}"
        masks_dir = raw / f"Fold {fold}" / "masks" / f"fold{fold}"
        images_dir.mkdir(parents=True)
        masks_dir.mkdir(parents=True)
        n = len(PANNUKE_PATCHES)
        np.save(images_dir / "images.npy", rng.integers(0, 256, (n, 256, 256, 3)).astype(np.float64))
        np.save(images_dir / "types.npy", np.array(["Colon", "Breast", "Bile-duct"] * 3))
        np.save(masks_dir / "masks.npy", np.stack([pannuke_mask(*counts, rng) for counts, _ in PANNUKE_PATCHES]))
    return raw


def test_pannuke_benign_malignant_rule_and_split(pannuke_raw, tmp_path):
    out = str(tmp_path / "out")
    pannuke.prepare(str(pannuke_raw), out, seed=0, test_fraction=0.7)
    files = listing(osp.join(out, "pannuke"))
    got = {}
    for split, classes in files.items():
        for folder, names in classes.items():
            for name in names:
                fold, index = re.match(r"fold(\d)_(\d{4})_", name).groups()
                got[(int(fold), int(index))] = folder
    expected = {(fold, i): label for fold in (1, 2) for i, (_, label) in enumerate(PANNUKE_PATCHES) if label}
    assert got == expected
    for label in ("benign", "malignant"):  # 30 % train / 70 % test of 6 patches each
        assert (len(files["train"][label]), len(files["test"][label])) == (2, 4)
    name = files["test"]["malignant"][0]
    fold, index = map(int, re.match(r"fold(\d)_(\d{4})_", name).groups())
    raw_pixels = np.load(pannuke_raw / f"Fold {fold}" / "images" / f"fold{fold}" / "images.npy")[index]
    written = np.asarray(Image.open(osp.join(out, "pannuke", "images", "test", "malignant", name)))
    assert np.array_equal(written, raw_pixels.astype(np.uint8))
    assert load(out, "PanNuke").classnames == ["benign", "malignant"]
    assert_refuses_to_overwrite(pannuke.prepare, str(pannuke_raw), out, "pannuke")


def test_pannuke_wrong_shapes_are_named(pannuke_raw, tmp_path):
    path = pannuke_raw / "Fold 2" / "images" / "fold2" / "types.npy"
    np.save(path, np.array(["Colon"] * 3))
    with pytest.raises(InputError) as excinfo:
        pannuke.prepare(str(pannuke_raw), str(tmp_path / "out"))
    assert "fold 2" in str(excinfo.value)


# ---------------------------------------------------------------------------------------------
# DigestPath 2019


def tissue_image(path, size=96):
    rng = np.random.default_rng(len(str(path)))
    pixels = np.stack([np.full((size, size), 190), np.full((size, size), 110), np.full((size, size), 170)], axis=-1)
    pixels = np.clip(pixels + rng.integers(-10, 10, pixels.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


@pytest.fixture
def digestpath_raw(tmp_path):
    """Four neg and four pos slides; slides N1 and P1 have two tissue images each."""
    raw = tmp_path / "raw"
    for subset, prefix in (("tissue-train-neg", "N"), ("tissue-train-pos-v1", "P")):
        (raw / subset).mkdir(parents=True)
        regions = [(1, 0), (1, 1), (2, 0), (3, 0), (4, 0)]
        for slide, region in regions:
            stem = f"18-0{prefix}{slide}A_2019-05-07 21_44_{region:02d}-lv1-{1000 * region}-200-96-96"
            tissue_image(raw / subset / f"{stem}.jpg")
            if prefix == "P":  # malignant region: the left half
                mask = np.zeros((96, 96), dtype=np.uint8)
                mask[:, :48] = 255
                Image.fromarray(mask).save(raw / subset / f"{stem}_mask.jpg", quality=95)
    return raw


def test_digestpath_patches_split_by_slide(digestpath_raw, tmp_path):
    out = str(tmp_path / "out")
    digestpath.prepare(str(digestpath_raw), out, seed=0, test_fraction=0.3, downsamples=(1, 2), crop_size=32)
    files = listing(osp.join(out, "digestpath"))
    slides = {"train": set(), "test": set()}
    for split, classes in files.items():
        for folder, names in classes.items():
            for name in names:
                slide = re.match(digestpath.SLIDE_REGEX, name).group(1)
                slides[split].add(slide)
                if folder == "malignant":
                    assert "P" in slide
                    x = int(re.search(r"_ds1_x(\d+)_", name).group(1)) if "_ds1_" in name else 0
                    assert x < 48  # squares mostly inside the masked left half
    assert not slides["train"] & slides["test"]
    assert len(slides["train"] | slides["test"]) == 8
    # 96 px at 1x: 3 x 3 squares of 32 px on a 28 px grid; at 2x one square. pos: x 0 and 28 malignant, 56 benign.
    counts = {split: {c: len(f) for c, f in classes.items()} for split, classes in files.items()}
    assert sum(counts["train"].values()) + sum(counts["test"].values()) == 10 * (9 + 1)
    assert counts["train"]["malignant"] + counts["test"]["malignant"] == 5 * (6 + 1)
    assert load(out, "DigestPath").classnames == ["benign", "malignant"]
    assert_refuses_to_overwrite(digestpath.prepare, str(digestpath_raw), out, "digestpath",
                                downsamples=(1, 2), crop_size=32)


def test_digestpath_missing_mask_is_named(digestpath_raw, tmp_path):
    mask = next((digestpath_raw / "tissue-train-pos-v1").glob("*_mask.jpg"))
    mask.unlink()
    with pytest.raises(InputError) as excinfo:
        digestpath.prepare(str(digestpath_raw), str(tmp_path / "out"), downsamples=(1,), crop_size=32)
    assert str(mask) in str(excinfo.value)


def test_interrupted_write_leaves_nothing_behind(covid_raw, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def failing_copy(sample, split_dir):
        raise InputError("disk full")

    monkeypatch.setattr(common, "copy_file", failing_copy)
    with pytest.raises(InputError):
        covid.prepare(covid_raw, str(out))
    assert os.listdir(out) == []
