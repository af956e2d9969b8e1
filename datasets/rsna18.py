"""RSNA18: chest X-rays of the RSNA Pneumonia Detection Challenge 2018, three classes.
Built by ``python -m datasets.prepare.rsna18`` (see datasets/README.md)."""
from dassl_compat import DATASET_REGISTRY

from .folder import FolderDataset


@DATASET_REGISTRY.register()
class RSNA18(FolderDataset):
    dataset_dir = "rsna18"
    report_order = 1
    modality = "xray"
    prompt_template = "a chest X-ray classified as {}."
    classes = {
        "normal": "normal",
        "no_lung_opacity_not_normal": "no lung opacity, not normal",
        "lung_opacity": "lung opacity",
    }
