"""DigestPath: colonoscopy H&E patches, benign versus malignant, cut from DigestPath 2019 tissue images.
Built by ``python -m datasets.prepare.digestpath`` (see datasets/README.md)."""
from dassl_compat import DATASET_REGISTRY

from .folder import FolderDataset


@DATASET_REGISTRY.register()
class DigestPath(FolderDataset):
    dataset_dir = "digestpath"
    report_order = 5
    modality = "histology"
    prompt_template = "an H&E image patch of {} colon tissue."
    classes = {
        "benign": "benign",
        "malignant": "malignant",
    }
