"""PanNuke: H&E patches of 19 tissues, benign versus malignant by their neoplastic nuclei.
Built by ``python -m datasets.prepare.pannuke`` (see datasets/README.md)."""
from dassl_compat import DATASET_REGISTRY

from .folder import FolderDataset


@DATASET_REGISTRY.register()
class PanNuke(FolderDataset):
    dataset_dir = "pannuke"
    report_order = 4
    modality = "histology"
    prompt_template = "an H&E image patch of {} tissue."
    classes = {
        "benign": "benign",
        "malignant": "malignant",
    }
