"""The six medical datasets of the BAPLe evaluation, and WSSS4LUAD (which the reference code also
supports), registered in Dassl's ``DATASET_REGISTRY`` on import (``import datasets``). This top-level
package shadows Hugging Face's ``datasets`` inside this project; nothing here uses the Hugging Face one."""
from . import covid, digestpath, kather, mimic, pannuke, rsna18, wsss4luad  # noqa: F401  (registers the datasets)
from .folder import FolderDataset
from .imageio import load_image
from .wrapper import ImageDataset

__all__ = ["FolderDataset", "ImageDataset", "load_image"]
