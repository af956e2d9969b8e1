"""Kather: colorectal H&E tissue tiles, nine tissue classes (NCT-CRC-HE-100K / CRC-VAL-HE-7K).
Built by ``python -m datasets.prepare.kather`` (see datasets/README.md)."""
from dassl_compat import DATASET_REGISTRY

from .folder import FolderDataset


@DATASET_REGISTRY.register()
class Kather(FolderDataset):
    dataset_dir = "kather"
    report_order = 3
    modality = "histology"
    prompt_template = "an H&E image patch of {}."
    classes = {
        "ADI": "adipose tissue",
        "BACK": "background",
        "DEB": "debris",
        "LYM": "lymphocytes",
        "MUC": "mucus",
        "MUS": "smooth muscle",
        "NORM": "normal colon mucosa",
        "STR": "cancer-associated stroma",
        "TUM": "colorectal adenocarcinoma epithelium",
    }
