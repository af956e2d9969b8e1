"""The folder dataset every medical dataset here is: a Dassl ``DatasetBase`` read from

    ROOT/<name>/classnames.txt                       one "<folder> <class name>" line per class
    ROOT/<name>/images/{train,test}/<folder>/<image>
    ROOT/<name>/split_fewshot/shot_<K>-seed_<S>.json  few-shot samples, written here (JSON), or in
                                                     DATASET.FEWSHOT_CACHE_DIR when set

Labels follow the sorted (Python string order) class folder names; class names come from
``classnames.txt``. ``train_x`` is a ``DATASET.NUM_SHOTS``-per-class sample of the train images
(all of them when NUM_SHOTS < 1), ``test`` all test images, ``val`` None.

Few-shot sampling (``DATASET.FEWSHOT_SAMPLER``) uses no global random state. ``per_class`` (default):
class ``<folder>`` is sampled by ``random.Random(f"{seed}/{folder}")`` from its name-sorted file list,
so a sample depends only on the seed, the shot count and that class's files. ``dassl``: the picks of
Dassl's ``DatasetBase.generate_fewshot_dataset`` (used by CoOp and the BAPLe reference code) right
after ``set_random_seed(seed)``: one ``random.Random(seed)`` stream, ``sample(items, K)`` class by class
in label order over the same item order (name-sorted here; the reference lists files unsorted, so
its picks equal these where its listing is in name order). A class's pick then depends on every class
before it. Under ``dassl`` an unreadable pick is an error even with ``DATASET.BAD_FILES skip``, unless
that policy first opens every training image to leave the bad ones out of the items. ``SEED < 0`` (Dassl's "unseeded") draws a
fresh seed, prints it and caches the sample under it, so the run can be repeated with that SEED.
A cached sample is reused as long as its files are all still there; if any is gone the dataset
stops with an error naming the cache file to delete (it is never silently redrawn, since that
would change the experiment).
"""
import os
import os.path as osp
import random
import secrets

from common.errors import InputError
from dassl_compat import DatasetBase, Datum, read_json, write_json

from .imageio import image_problem, unreadable

SPLITS = ("train", "test")
BAD_FILE_POLICIES = ("error", "skip")
FEWSHOT_SAMPLERS = ("per_class", "dassl")


def read_classnames(path):
    """``{folder: class name}`` in file order from a ``<folder> <class name>`` per line file."""
    if not osp.isfile(path):
        raise InputError(f"{path} does not exist; write one '<folder> <class name>' line per class "
                         f"(the prepare and synthetic commands write it)")
    classnames = {}
    with _opened(path) as f:
        for number, line in enumerate(f, start=1):
            words = line.split()
            if not words:
                continue
            if len(words) == 1:
                raise InputError(f"{path} line {number} names folder {words[0]!r} but no class name; "
                                 f"write it as '{words[0]} <class name>'")
            if words[0] in classnames:
                raise InputError(f"{path} line {number} lists folder {words[0]!r} a second time; "
                                 f"keep one line per class folder")
            classnames[words[0]] = " ".join(words[1:])
    if not classnames:
        raise InputError(f"{path} lists no classes; write one '<folder> <class name>' line per class")
    return classnames


def _cannot_read(path, error):
    return InputError(f"{path} cannot be read ({error.strerror or error}); make it readable (permissions, mount) "
                      f"or point DATASET.ROOT at a readable copy")


def _opened(path):
    try:
        return open(path, encoding="utf-8")
    except OSError as error:
        raise _cannot_read(path, error) from None


def _visible_entries(folder):
    """The entries of ``folder`` not starting with a dot; a one-line error if it cannot be listed."""
    try:
        with os.scandir(folder) as it:
            return [e for e in it if not e.name.startswith(".")]
    except OSError as error:
        raise _cannot_read(folder, error) from None


def check_num_shots(train_files, num_shots, train_dir):
    """Every class needs at least ``num_shots`` training files (``{folder: paths}``)."""
    for folder, paths in train_files.items():
        if len(paths) < num_shots:
            raise InputError(f"class {folder!r} has {len(paths)} training image(s) in {osp.join(train_dir, folder)}, "
                             f"fewer than DATASET.NUM_SHOTS {num_shots}; lower NUM_SHOTS to {len(paths)} or less")


def list_split(image_dir, split, classnames):
    """``{folder: [absolute image paths, name-sorted]}`` for one split, after checking that its class
    folders and ``classnames.txt`` agree both ways and that no class folder is empty."""
    split_dir = osp.join(image_dir, split)
    if not osp.isdir(split_dir):
        raise InputError(f"{split_dir} does not exist; the layout is <name>/images/{{train,test}}/<class folder>/")
    folders = {e.name for e in _visible_entries(split_dir) if e.is_dir()}
    unlisted = sorted(folders - set(classnames))
    if unlisted:
        raise InputError(f"class folder(s) {', '.join(unlisted)} in {split_dir} not listed in classnames.txt; "
                         f"add a '<folder> <class name>' line for each or remove the folder(s)")
    absent = sorted(set(classnames) - folders)
    if absent:
        raise InputError(f"classnames.txt lists {', '.join(absent)} but {split_dir} has no such folder(s); "
                         f"add the folder(s) or remove the line(s)")
    files = {}
    for folder in sorted(classnames):
        class_dir = osp.join(split_dir, folder)
        files[folder] = sorted(e.path for e in _visible_entries(class_dir) if e.is_file())
        if not files[folder]:
            raise InputError(f"{class_dir} holds no images; add images or remove class {folder!r} "
                             f"from classnames.txt and from both splits")
    return files


def dassl_fewshot_sample(groups, num_shots, seed):
    """``{class: picks}`` as Dassl's ``generate_fewshot_dataset(items, num_shots=K)`` draws them right after
    ``set_random_seed(seed)``, for ``groups`` = ``{class: items}`` in the order the classes first appear
    among the items: one random stream, ``sample(items, K)`` per class, all items of a class with fewer."""
    rng = random.Random(seed)  # the state random.seed(seed) leaves the global generator in
    return {key: rng.sample(items, num_shots) if len(items) >= num_shots else list(items)
            for key, items in groups.items()}


class FolderDataset(DatasetBase):
    """Base of the folder datasets; a subclass sets ``dataset_dir``, ``modality``, ``prompt_template``
    and ``classes``.

    - ``dataset_dir``: the folder under ``DATASET.ROOT`` (replaced by its absolute path once built,
      as Dassl datasets do).
    - ``modality``: ``xray`` or ``histology``, which decides how ``datasets.synthetic`` draws it.
    - ``prompt_template``: a hand-written zero-shot prompt with one ``{}`` for the class name.
    - ``classes``: ``{folder: class name}`` that the prepare and synthetic commands write to
      ``classnames.txt``; reading always follows the ``classnames.txt`` on disk.
    - ``label``, ``report_order``: how reports name the dataset and where its column goes (the paper's
      order; a new dataset after them, by name).

    Every registered ``FolderDataset`` gets a synthetic generator (``datasets.synthetic``).
    """

    dataset_dir = ""
    modality = ""
    prompt_template = "{}"
    classes = {}
    label = ""  # "" = DATASET.NAME
    report_order = 100

    @classmethod
    def locate(cls, cfg):
        """The dataset's absolute folder, after checking the ``DATASET`` keys that need no image."""
        policy = cfg.DATASET.get("BAD_FILES", "error")  # a plain Dassl config lacks the project key
        if policy not in BAD_FILE_POLICIES:
            raise InputError(f"DATASET.BAD_FILES is {policy!r}; set it to one of {', '.join(BAD_FILE_POLICIES)}")
        sampler = cfg.DATASET.get("FEWSHOT_SAMPLER", "per_class")
        if sampler not in FEWSHOT_SAMPLERS:
            raise InputError(f"DATASET.FEWSHOT_SAMPLER {sampler!r} is unknown; choose from {', '.join(FEWSHOT_SAMPLERS)}")
        subsample = cfg.DATASET.get("SUBSAMPLE_CLASSES", "all")
        if subsample != "all":
            raise InputError(f"DATASET.SUBSAMPLE_CLASSES {subsample!r} is not supported by {cls.__name__}; "
                             "set it to all")
        if not cfg.DATASET.ROOT:
            raise InputError(f"DATASET.ROOT is empty; set it to the folder that holds {cls.dataset_dir}/")
        root = osp.abspath(osp.expanduser(cfg.DATASET.ROOT))
        if not osp.isdir(root):
            raise InputError(f"DATASET.ROOT {root} does not exist; set DATASET.ROOT to the folder that holds "
                             f"{cls.dataset_dir}/")
        dataset_dir = osp.join(root, cls.dataset_dir)
        if not osp.isdir(dataset_dir):
            raise InputError(f"{dataset_dir} does not exist; build it with python -m "
                             f"datasets.prepare.{cls.dataset_dir} --raw DIR --root {root} "
                             f"(or python -m datasets.synthetic for a synthetic stand-in)")
        return dataset_dir

    @classmethod
    def listing(cls, cfg):
        """(dataset folder, ``{folder: class name}``, ``{split: {folder: paths}}``) from ``classnames.txt``
        and the folder listing alone: no image is opened."""
        dataset_dir = cls.locate(cfg)
        classnames = read_classnames(osp.join(dataset_dir, "classnames.txt"))
        image_dir = osp.join(dataset_dir, "images")
        return dataset_dir, classnames, {split: list_split(image_dir, split, classnames) for split in SPLITS}

    @classmethod
    def train_class_sizes(cls, cfg):
        """``{folder: training images a run uses}`` in label order, without opening an image (unreadable
        files that ``DATASET.BAD_FILES skip`` would leave out of a full training set still count)."""
        dataset_dir, _, listing = cls.listing(cfg)
        train = listing["train"]
        if cfg.DATASET.NUM_SHOTS < 1:
            return {folder: len(paths) for folder, paths in train.items()}
        check_num_shots(train, cfg.DATASET.NUM_SHOTS, osp.join(dataset_dir, "images", "train"))
        return {folder: cfg.DATASET.NUM_SHOTS for folder in train}

    def __init__(self, cfg):
        name = type(self).__name__
        self.dataset_dir, classnames, listing = self.listing(cfg)
        self.image_dir = osp.join(self.dataset_dir, "images")
        self.split_fewshot_dir = cfg.DATASET.get("FEWSHOT_CACHE_DIR", "") or osp.join(self.dataset_dir, "split_fewshot")
        self.bad_files = cfg.DATASET.get("BAD_FILES", "error")
        self.fewshot_sampler = cfg.DATASET.get("FEWSHOT_SAMPLER", "per_class")
        self.skipped_files = []
        labels = {folder: label for label, folder in enumerate(sorted(classnames))}

        num_shots = cfg.DATASET.NUM_SHOTS
        self.num_shots = num_shots
        self.fewshot_seed = None
        self.fewshot_cache = None
        if num_shots >= 1:
            train = self._fewshot(listing["train"], num_shots, cfg.SEED)
        else:
            train = {folder: self._usable(paths, folder, "train") for folder, paths in listing["train"].items()}
        test = {folder: self._usable(paths, folder, "test") for folder, paths in listing["test"].items()}
        if self.skipped_files:
            shown = "; ".join(f"{path} ({reason})" for path, reason in self.skipped_files[:3])
            print(f"DATASET.BAD_FILES skip: left out {len(self.skipped_files)} unreadable image(s) of {name}, "
                  f"e.g. {shown}")

        def datums(files):
            return [Datum(impath=path, label=labels[folder], classname=classnames[folder])
                    for folder in sorted(files) for path in files[folder]]

        super().__init__(train_x=datums(train), val=None, test=datums(test))

    def _usable(self, paths, folder, split):
        """``paths`` without unreadable images under the ``skip`` policy; the first one raises under ``error``."""
        kept = []
        for path in paths:
            reason = image_problem(path)
            if reason is None:
                kept.append(path)
            elif self.bad_files == "error":
                raise unreadable(path, reason)
            else:
                self.skipped_files.append((path, reason))
        if not kept:
            raise InputError(f"{osp.join(self.image_dir, split, folder)} holds no readable images; add images "
                             f"or remove class {folder!r} from classnames.txt and from both splits")
        return kept

    def _fewshot(self, train_files, num_shots, seed):
        """``{folder: [num_shots paths]}``: the cached sample for (num_shots, seed) or a new, cached one."""
        if seed < 0:
            seed = secrets.randbelow(2**31)
            print(f"SEED is negative: drawing the {num_shots}-shot sample with seed {seed} "
                  f"(set SEED {seed} to repeat it)")
        self.fewshot_seed = seed
        check_num_shots(train_files, num_shots, osp.join(self.image_dir, "train"))
        suffix = "" if self.fewshot_sampler == "per_class" else f"-{self.fewshot_sampler}"
        cache = osp.join(self.split_fewshot_dir, f"shot_{num_shots}-seed_{seed}{suffix}.json")
        self.fewshot_cache = cache
        if osp.isfile(cache):
            print(f"Reading the {num_shots}-shot sample from {cache}")
            return self._read_fewshot_cache(cache, train_files, num_shots)
        if self.fewshot_sampler == "dassl":
            sample = self._draw_as_dassl(train_files, num_shots, seed)
        else:
            sample = {folder: self._draw(paths, folder, num_shots, seed) for folder, paths in train_files.items()}
        record = {"num_shots": num_shots, "seed": seed, "sampler": self.fewshot_sampler,
                  "train": [osp.relpath(p, self.dataset_dir) for folder in sorted(sample) for p in sample[folder]]}
        try:
            write_json(record, cache)
            print(f"Wrote the {num_shots}-shot sample to {cache}")
        except OSError as err:  # a read-only dataset copy still trains; the sample is reproducible anyway
            print(f"Could not write the few-shot cache {cache} ({err}); continuing without it")
        return sample

    def _draw(self, paths, folder, num_shots, seed):
        """The first ``num_shots`` usable images of the class's seeded shuffle (usable: see ``_usable``)."""
        order = list(paths)
        random.Random(f"{seed}/{folder}").shuffle(order)
        chosen = []
        for path in order:
            reason = image_problem(path)
            if reason is None:
                chosen.append(path)
                if len(chosen) == num_shots:
                    return chosen
            elif self.bad_files == "error":
                raise unreadable(path, reason)
            else:
                self.skipped_files.append((path, reason))
        raise InputError(f"class {folder!r} has {len(chosen)} readable training image(s) in "
                         f"{osp.join(self.image_dir, 'train', folder)}, fewer than DATASET.NUM_SHOTS {num_shots}; "
                         f"lower NUM_SHOTS to {len(chosen)} or less, or replace the unreadable images")

    def _draw_as_dassl(self, train_files, num_shots, seed):
        """Dassl's few-shot picks for ``seed`` over the items in label order (see the module docstring)."""
        groups = {folder: train_files[folder] for folder in sorted(train_files)}  # label order
        if self.bad_files == "skip":
            groups = {folder: self._usable(paths, folder, "train") for folder, paths in groups.items()}
        sample = dassl_fewshot_sample(groups, num_shots, seed)
        for path in (p for paths in sample.values() for p in paths):
            reason = image_problem(path)
            if reason is not None:
                raise unreadable(path, reason)
        return sample

    def _read_fewshot_cache(self, cache, train_files, num_shots):
        redraw = f"delete {cache} to draw a new sample"
        try:
            record = read_json(cache)
            relpaths = record["train"]
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(f"{cache} is not a few-shot cache ({type(err).__name__}: {err}); {redraw}") from err
        present = {folder: set(paths) for folder, paths in train_files.items()}
        sample = {folder: [] for folder in train_files}
        missing = []
        for relpath in relpaths:
            path = osp.normpath(osp.join(self.dataset_dir, relpath))
            folder = osp.basename(osp.dirname(path))
            if path not in present.get(folder, ()):
                missing.append(relpath)
                continue
            sample[folder].append(path)
        if missing:
            raise InputError(f"{cache} lists {len(missing)} image(s) no longer in images/train "
                             f"(first: {missing[0]}); {redraw}")
        wrong = {folder: len(paths) for folder, paths in sample.items() if len(paths) != num_shots}
        if wrong:
            raise InputError(f"{cache} holds {wrong} images per class, not {num_shots}; {redraw}")
        for paths in sample.values():
            for path in paths:
                reason = image_problem(path)
                if reason is not None:
                    raise InputError(f"{path}: {reason}, and it is in the cached sample, so it cannot be skipped; "
                                     f"replace the file or {redraw}")
        return sample
