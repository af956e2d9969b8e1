"""WSSS4LUAD: lung adenocarcinoma H&E patches, tumour versus normal (no tumour epithelium), as the
reference BAPLe code and PLIP's evaluation use it. Built by ``python -m datasets.prepare.wsss4luad``
(see datasets/README.md)."""
from dassl_compat import DATASET_REGISTRY

from .folder import FolderDataset


@DATASET_REGISTRY.register()
class WSSS4LUAD(FolderDataset):
    dataset_dir = "wsss4luad"
    report_order = 6
    modality = "histology"
    prompt_template = "an H&E image patch of {} tissue."
    classes = {
        "normal": "normal",
        "tumor": "tumor",
    }
