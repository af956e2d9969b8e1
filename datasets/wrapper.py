"""The torch Dataset the trainers hand to Dassl's ``DataManager(cfg, dataset_wrapper=ImageDataset)``,
so that the real Dassl and the built-in engine read images through the same ``load_image``."""
import torchvision.transforms.functional as TF
from torch.utils.data import Dataset

from .imageio import load_image


class ImageDataset(Dataset):
    """Items are Dassl's dicts ``{"img", "label", "domain", "impath", "index"}``; ``img`` is
    ``transform(image)``, or the image as an RGB [0, 1] tensor when ``transform`` is None.
    The signature is Dassl's ``DatasetWrapper`` signature.

    ``before_augmentation``: None, or ``callable(dataset, index, image) -> image`` run on the loaded
    image before ``transform`` (a trainer sets it to trigger training images before augmentation)."""

    def __init__(self, cfg, data_source, transform=None, is_train=False):
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform
        self.is_train = is_train
        self.before_augmentation = None

    def __len__(self):
        return len(self.data_source)

    def load(self, index):
        """Item ``index``'s image as read from its file (PIL, RGB)."""
        return load_image(self.data_source[index].impath)

    def __getitem__(self, index):
        item = self.data_source[index]
        img = self.load(index)
        if self.before_augmentation is not None:
            img = self.before_augmentation(self, index, img)
        img = TF.to_tensor(img) if self.transform is None else self.transform(img)
        return {"img": img, "label": item.label, "domain": item.domain, "impath": item.impath, "index": index}
