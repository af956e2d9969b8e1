"""Dataset containers, the dataset registry and the data manager (Dassl's ``dassl.data``)."""
import os.path as osp
import random
from collections import defaultdict

import torch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import RandomSampler, SequentialSampler

from .registry import Registry
from .transforms import build_transform
from .utils import read_image

DATASET_REGISTRY = Registry("DATASET")


class Datum:
    """One labelled image: path, label, domain and class name. The file must exist."""

    def __init__(self, impath="", label=0, domain=0, classname=""):
        if not isinstance(impath, str):
            raise TypeError(f"impath must be a str, got {type(impath).__name__}")
        if not osp.isfile(impath):
            raise FileNotFoundError(f"No file at {impath}")
        self._impath = impath
        self._label = label
        self._domain = domain
        self._classname = classname

    @property
    def impath(self):
        return self._impath

    @property
    def label(self):
        return self._label

    @property
    def domain(self):
        return self._domain

    @property
    def classname(self):
        return self._classname


class DatasetBase:
    """Splits of ``Datum`` lists; ``num_classes``, ``lab2cname`` and ``classnames`` derive from ``train_x``."""

    dataset_dir = ""
    domains = []

    def __init__(self, train_x=None, train_u=None, val=None, test=None):
        self._train_x = train_x
        self._train_u = train_u
        self._val = val
        self._test = test
        self._num_classes = self.get_num_classes(train_x)
        self._lab2cname, self._classnames = self.get_lab2cname(train_x)

    train_x = property(lambda self: self._train_x)
    train_u = property(lambda self: self._train_u)
    val = property(lambda self: self._val)
    test = property(lambda self: self._test)
    lab2cname = property(lambda self: self._lab2cname)
    classnames = property(lambda self: self._classnames)
    num_classes = property(lambda self: self._num_classes)

    @staticmethod
    def get_num_classes(data_source):
        return max(item.label for item in data_source) + 1

    @staticmethod
    def get_lab2cname(data_source):
        mapping = {item.label: item.classname for item in data_source}
        labels = sorted(mapping)
        return mapping, [mapping[label] for label in labels]

    @staticmethod
    def split_dataset_by_label(data_source):
        output = defaultdict(list)
        for item in data_source:
            output[item.label].append(item)
        return output

    def generate_fewshot_dataset(self, *data_sources, num_shots=-1, repeat=False):
        """Draw ``num_shots`` items per label from each source with Python's global ``random``
        (deterministic once ``set_random_seed`` has run); a label with fewer items keeps all
        of them, or is sampled with replacement when ``repeat``."""
        if num_shots < 1:
            return data_sources[0] if len(data_sources) == 1 else data_sources
        print(f"Creating a {num_shots}-shot dataset")
        output = []
        for data_source in data_sources:
            dataset = []
            for items in self.split_dataset_by_label(data_source).values():
                if len(items) >= num_shots:
                    dataset.extend(random.sample(items, num_shots))
                elif repeat:
                    dataset.extend(random.choices(items, k=num_shots))
                else:
                    dataset.extend(items)
            output.append(dataset)
        return output[0] if len(output) == 1 else output


def build_dataset(cfg):
    if cfg.VERBOSE:
        print(f"Loading dataset: {cfg.DATASET.NAME}")
    return DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)


class DatasetWrapper(TorchDataset):
    """Reads an image and applies the transform; items are dicts with img, label, domain, impath, index."""

    def __init__(self, cfg, data_source, transform=None, is_train=False):
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform
        self.is_train = is_train

    def __len__(self):
        return len(self.data_source)

    def __getitem__(self, idx):
        item = self.data_source[idx]
        img = read_image(item.impath)
        if self.transform is not None:
            img = self.transform(img)
        return {"img": img, "label": item.label, "domain": item.domain, "impath": item.impath, "index": idx}


_SAMPLERS = {"RandomSampler": RandomSampler, "SequentialSampler": SequentialSampler}


def build_sampler(sampler_type, data_source=None, **_):
    if sampler_type not in _SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler_type!r}; choose from {', '.join(_SAMPLERS)}")
    return _SAMPLERS[sampler_type](data_source)


def build_data_loader(cfg, sampler_type="SequentialSampler", data_source=None, batch_size=64, n_domain=0,
                      n_ins=2, tfm=None, is_train=True, dataset_wrapper=None):
    sampler = build_sampler(sampler_type, data_source=data_source)
    wrapper = dataset_wrapper or DatasetWrapper
    loader = torch.utils.data.DataLoader(
        wrapper(cfg, data_source, transform=tfm, is_train=is_train),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        drop_last=is_train and len(data_source) >= batch_size,
        pin_memory=torch.cuda.is_available() and cfg.USE_CUDA,
    )
    if len(loader) == 0:
        raise ValueError(f"Empty data loader for {cfg.DATASET.NAME}: the split has no images")
    return loader


class DataManager:
    """Builds the dataset named by ``cfg.DATASET.NAME`` and its train/val/test loaders."""

    def __init__(self, cfg, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None):
        dataset = build_dataset(cfg)
        tfm_train = build_transform(cfg, is_train=True) if custom_tfm_train is None else custom_tfm_train
        tfm_test = build_transform(cfg, is_train=False) if custom_tfm_test is None else custom_tfm_test

        def loader(split, source, tfm, is_train):
            node = cfg.DATALOADER[split]
            return build_data_loader(cfg, sampler_type=node.SAMPLER, data_source=source, batch_size=node.BATCH_SIZE,
                                     tfm=tfm, is_train=is_train, dataset_wrapper=dataset_wrapper)

        self.train_loader_x = loader("TRAIN_X", dataset.train_x, tfm_train, True)
        self.train_loader_u = loader("TRAIN_X" if cfg.DATALOADER.TRAIN_U.SAME_AS_X else "TRAIN_U",
                                     dataset.train_u, tfm_train, True) if dataset.train_u else None
        self.val_loader = loader("TEST", dataset.val, tfm_test, False) if dataset.val else None
        self.test_loader = loader("TEST", dataset.test, tfm_test, False)

        self._num_classes = dataset.num_classes
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        self._lab2cname = dataset.lab2cname
        self.dataset = dataset
        if cfg.VERBOSE:
            self.show_dataset_summary(cfg)

    num_classes = property(lambda self: self._num_classes)
    num_source_domains = property(lambda self: self._num_source_domains)
    lab2cname = property(lambda self: self._lab2cname)

    def show_dataset_summary(self, cfg):
        rows = [("Dataset", cfg.DATASET.NAME), ("# classes", f"{self.num_classes:,}"),
                ("# train_x", f"{len(self.dataset.train_x):,}")]
        if self.dataset.train_u:
            rows.append(("# train_u", f"{len(self.dataset.train_u):,}"))
        if self.dataset.val:
            rows.append(("# val", f"{len(self.dataset.val):,}"))
        rows.append(("# test", f"{len(self.dataset.test):,}"))
        width = max(len(k) for k, _ in rows)
        print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
