"""Prepare MIMIC from MIMIC-CXR-JPG 2.0.0 (PhysioNet, credentialed access).

Raw layout (``--raw``: the ``mimic-cxr-jpg/2.0.0`` folder): ``mimic-cxr-2.0.0-chexpert.csv(.gz)``
(``subject_id``, ``study_id`` and one column per CheXpert finding: 1.0 positive, 0.0 negative,
-1.0 uncertain, blank not mentioned), ``mimic-cxr-2.0.0-metadata.csv(.gz)`` (``dicom_id``,
``subject_id``, ``study_id``, ``ViewPosition``, ...) and the images
``files/p<first two digits of subject>/p<subject_id>/s<study_id>/<dicom_id>.jpg``.

Classes: the five CheXpert competition findings (atelectasis, cardiomegaly, consolidation,
edema, pleural effusion), as in MedCLIP's MIMIC-5x200 benchmark; the paper's authors never
published their list. A study belongs to a class when exactly that finding is positive (1.0)
and the other four are negative or not mentioned (an uncertain -1.0 on another of the five
excludes it); its frontal images (``ViewPosition`` PA or AP) are used. The split is drawn over
patients (``subject_id``, stratified by class, default 80/20), so no patient is in both splits.
Images the CSVs list but the download lacks (a partial download of ``files/``) are left out and
counted.
"""
import os.path as osp

from common import cli

from ..mimic import MIMIC
from . import common

CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv"
METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
FINDINGS = {"atelectasis": "Atelectasis", "cardiomegaly": "Cardiomegaly", "consolidation": "Consolidation",
            "edema": "Edema", "pleural_effusion": "Pleural Effusion"}  # our class folder -> CheXpert column
FRONTAL_VIEWS = ("PA", "AP")


def study_class(row):
    """The class folder of a CheXpert row with exactly one of the five findings positive and the others
    negative or blank, else None."""
    values = {folder: row[column].strip() for folder, column in FINDINGS.items()}
    positive = [folder for folder, value in values.items() if value and float(value) == 1.0]
    others_clear = all(not value or float(value) == 0.0 for folder, value in values.items() if folder not in positive)
    return positive[0] if len(positive) == 1 and others_clear else None


def image_path(raw, subject_id, study_id, dicom_id):
    return osp.join(raw, "files", f"p{subject_id[:2]}", f"p{subject_id}", f"s{study_id}", f"{dicom_id}.jpg")


def prepare(raw, out, seed=0, test_fraction=0.2):
    common.require(raw, "the raw release folder")
    common.check_output(out, MIMIC.dataset_dir)
    common.require(osp.join(raw, "files"), "the image folder files/")
    chexpert = common.find_csv(raw, CHEXPERT_CSV)
    studies = {}
    for row in common.read_csv(chexpert, ["subject_id", "study_id", *FINDINGS.values()]):
        folder = study_class(row)
        if folder is not None:
            studies[(row["subject_id"], row["study_id"])] = folder
    metadata = common.find_csv(raw, METADATA_CSV)
    samples, absent = [], 0
    for row in common.read_csv(metadata, ["dicom_id", "subject_id", "study_id", "ViewPosition"]):
        folder = studies.get((row["subject_id"], row["study_id"]))
        if folder is None or row["ViewPosition"] not in FRONTAL_VIEWS:
            continue
        path = image_path(raw, row["subject_id"], row["study_id"], row["dicom_id"])
        if not osp.isfile(path):
            absent += 1
            continue
        samples.append(common.Sample(label=folder, group=row["subject_id"], source=path,
                                     name=f"{row['dicom_id']}.jpg"))
    if absent:
        print(f"Left out {absent} frontal image(s) of the chosen studies that are not under {osp.join(raw, 'files')}")
    is_test = common.group_split(samples, test_fraction, seed)
    return common.write_dataset(out, MIMIC.dataset_dir, MIMIC.classes, samples, is_test, common.copy_file,
                                group_kind="patient")


main = common.main(prepare, common.command(__doc__, test_fraction=0.2))


run = cli.command(main)  # the console command (setup.py)


if __name__ == "__main__":
    cli.exit_with(main)
