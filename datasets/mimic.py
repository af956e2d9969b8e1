"""MIMIC: frontal MIMIC-CXR-JPG chest X-rays with exactly one of the five CheXpert competition findings.
Built by ``python -m datasets.prepare.mimic`` (see datasets/README.md)."""
from dassl_compat import DATASET_REGISTRY

from .folder import FolderDataset


@DATASET_REGISTRY.register()
class MIMIC(FolderDataset):
    dataset_dir = "mimic"
    report_order = 2
    modality = "xray"
    prompt_template = "a chest X-ray showing {}."
    classes = {
        "atelectasis": "atelectasis",
        "cardiomegaly": "cardiomegaly",
        "consolidation": "consolidation",
        "edema": "edema",
        "pleural_effusion": "pleural effusion",
    }
