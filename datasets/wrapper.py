"""The torch Dataset the trainers hand to Dassl's ``DataManager(cfg, dataset_wrapper=ImageDataset)``,
so that the real Dassl and the built-in engine read images through the same ``load_image``."""
import torchvision.transforms.functional as TF
from torch.utils.data import Dataset

from .imageio import load_image


class ImageDataset(Dataset):
    """Items are Dassl's dicts ``{"img", "label", "domain", "impath", "index"}``; ``img`` is
    ``transform(image)``, or the image as an RGB [0, 1] tensor when ``transform`` is None.
    The signature is Dassl's ``DatasetWrapper`` signature."""

    def __init__(self, cfg, data_source, transform=None, is_train=False):
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform
        self.is_train = is_train

    def __len__(self):
        return len(self.data_source)

    def __getitem__(self, index):
        item = self.data_source[index]
        img = load_image(item.impath)
        img = TF.to_tensor(img) if self.transform is None else self.transform(img)
        return {"img": img, "label": item.label, "domain": item.domain, "impath": item.impath, "index": index}
