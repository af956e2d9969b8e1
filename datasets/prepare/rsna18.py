"""Prepare RSNA18 from the RSNA Pneumonia Detection Challenge 2018 (Kaggle, rsna-pneumonia-detection-challenge).

Raw layout (``--raw``): ``stage_2_detailed_class_info.csv`` (``patientId``, ``class``: Normal /
"No Lung Opacity / Not Normal" / Lung Opacity), ``stage_2_train_labels.csv`` (``patientId``,
``x``, ``y``, ``width``, ``height``, ``Target``) and ``stage_2_train_images/<patientId>.dcm``.
Both CSVs hold one row per box, so a patient can appear on several rows; the split is drawn over
patients (stratified by class, default 80/20), so no patient is in both splits. The class comes
from the detailed CSV and is checked against ``Target`` (1 exactly for Lung Opacity).

DICOM to PNG (uncompressed and JPEG-baseline DICOMs both work; pydicom decodes the latter with
Pillow): the stored pixel values (no windowing), MONOCHROME1 inverted;
8-bit data (the challenge's images) becomes an 8-bit PNG, deeper data a 16-bit PNG scaled from
its ``BitsStored`` range to the full 16-bit range (``datasets.imageio`` reads 16-bit by that range).
"""
import os.path as osp

import numpy as np
import pydicom
from PIL import Image

from common import cli
from common.errors import InputError

from ..rsna18 import RSNA18
from . import common

DETAILS_CSV = "stage_2_detailed_class_info.csv"
LABELS_CSV = "stage_2_train_labels.csv"
IMAGE_DIR = "stage_2_train_images"
RELEASE_CLASSES = {"Normal": "normal", "No Lung Opacity / Not Normal": "no_lung_opacity_not_normal",
                   "Lung Opacity": "lung_opacity"}  # release class -> our class folder


def dicom_to_png(src, dst):
    """Write the single greyscale frame of DICOM ``src`` as PNG ``dst`` (rules in the module doc)."""
    try:
        ds = pydicom.dcmread(src)
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises many types for damaged files or unsupported encodings
        raise InputError(f"{src}: cannot decode the DICOM ({type(err).__name__}: {err}); "
                         f"re-extract the release") from err
    if pixels.ndim != 2:
        raise InputError(f"{src}: expected one greyscale frame, got pixel data of shape {pixels.shape}")
    bits = int(ds.get("BitsStored", pixels.dtype.itemsize * 8))
    values = pixels.astype(np.int64)
    if int(ds.get("PixelRepresentation", 0)) == 1:  # signed: shift to 0..2**bits-1
        values += 2 ** (bits - 1)
    top = 2**bits - 1
    values = np.clip(values, 0, top)
    if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        values = top - values
    if bits <= 8:
        image = Image.fromarray(values.astype(np.uint8))
    else:
        image = Image.fromarray(np.rint(values * (65535.0 / top)).astype(np.uint16))
    image.save(dst)


def write_png(sample, split_dir):
    dicom_to_png(sample.source, osp.join(split_dir, sample.label, sample.name))


def patient_classes(raw):
    """``{patientId: our class folder}``, checked for one class per patient and against ``Target``."""
    classes = {}
    path = common.find_csv(raw, DETAILS_CSV)
    for row in common.read_csv(path, ["patientId", "class"]):
        if row["class"] not in RELEASE_CLASSES:
            raise InputError(f"{path}: patient {row['patientId']} has unknown class {row['class']!r}; "
                             f"expected one of {', '.join(RELEASE_CLASSES)}")
        folder = RELEASE_CLASSES[row["class"]]
        if classes.setdefault(row["patientId"], folder) != folder:
            raise InputError(f"{path}: patient {row['patientId']} has two classes; use the original release file")
    path = common.find_csv(raw, LABELS_CSV)
    for row in common.read_csv(path, ["patientId", "Target"]):
        opacity = classes.get(row["patientId"]) == "lung_opacity"
        if row["patientId"] not in classes or opacity != (row["Target"].strip() == "1"):
            raise InputError(f"{path}: patient {row['patientId']} (Target {row['Target']}) disagrees with "
                             f"{DETAILS_CSV}; use the two files of the same release")
    return classes


def prepare(raw, out, seed=0, test_fraction=0.2):
    common.require(raw, "the raw release folder")
    common.check_output(out, RSNA18.dataset_dir)
    image_dir = common.require(osp.join(raw, IMAGE_DIR), "the training DICOMs")
    samples = []
    for patient, folder in sorted(patient_classes(raw).items()):
        src = common.require(osp.join(image_dir, f"{patient}.dcm"), f"the DICOM of patient {patient}")
        samples.append(common.Sample(label=folder, group=patient, source=src, name=f"{patient}.png"))
    is_test = common.group_split(samples, test_fraction, seed)
    return common.write_dataset(out, RSNA18.dataset_dir, RSNA18.classes, samples, is_test, write_png,
                                group_kind="patient")


main = common.main(prepare, common.command(__doc__, test_fraction=0.2))


run = cli.command(main)  # the console command (setup.py)


if __name__ == "__main__":
    cli.exit_with(main)
