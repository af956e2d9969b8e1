"""COVID: chest X-rays, COVID-19 versus normal, from the COVID-19 Radiography Database.
Built by ``python -m datasets.prepare.covid`` (see datasets/README.md)."""
from dassl_compat import DATASET_REGISTRY

from .folder import FolderDataset


@DATASET_REGISTRY.register()
class Covid(FolderDataset):
    dataset_dir = "covid"
    label = "COVID"
    report_order = 0
    modality = "xray"
    prompt_template = "a chest X-ray of {} lungs."
    classes = {
        "covid": "covid",
        "normal": "normal",
    }
