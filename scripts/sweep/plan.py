"""The sweep's plan, as pure functions of the command line: every run (its folder, its ``python -m
train`` arguments and the run it starts from), in the order a sequential sweep runs them. Nothing here
starts a process or imports the project's models."""
import itertools
import os.path as osp
from dataclasses import dataclass

from common.errors import InputError
from scripts.methods import METHOD_REGISTRY, methods as registered_methods


@dataclass(frozen=True)
class Run:
    method: str
    dataset: str  # the dataset config file's name: configs/datasets/<dataset>.yaml
    backbone: str
    target: object  # int, or None for a clean method
    seed: int
    variant: tuple  # ((KEY, VALUE), ...) of the varied config values
    folder: str
    argv: tuple  # the arguments of ``python -m train``
    needs: str = ""  # a run folder whose results this run starts from (BAPLe's Clean_PL run)

    @property
    def label(self):
        parts = [self.dataset, self.method, self.backbone, *(f"{k}={v}" for k, v in self.variant)]
        return "/".join(parts + ([f"target{self.target}"] if self.target is not None else []) + [f"seed{self.seed}"])


def _key_value(text, flag):
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise InputError(f"{flag} {text!r} is not KEY=VALUE; write e.g. {flag} OPTIM.MAX_EPOCH=10")
    return key, value


def _varied(specs):
    """``--vary KEY=V1,V2`` -> [(KEY, [V1, V2]), ...] (each value names a folder)."""
    axes = []
    for spec in specs:
        key, values = _key_value(spec, "--vary")
        values = values.split(",")
        bad = [v for v in values if not v or "/" in v or v in (".", "..")]
        if bad:
            raise InputError(f"--vary {spec}: {bad[0]!r} cannot name a run folder; give values without '/' or "
                             "empty parts")
        axes.append((key, values))
    return axes


def _methods(names, baple_init):
    if names == ["all"]:
        return registered_methods()
    known = METHOD_REGISTRY.registered_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"Unknown method {unknown[0]!r}; choose from {', '.join(known)} or all")
    if baple_init == "clean-pl":
        for name in list(names):
            init_from = METHOD_REGISTRY.get(name).init_from
            if init_from and init_from not in names:
                print(f"{name} starts from the {init_from} runs (--baple-init clean-pl): adding {init_from} to the "
                      "sweep")
                names = names + [init_from]
    return [m for m in registered_methods() if m.name in names]  # the table's order: Clean_PL before BAPLe


def plan(args, overrides, class_counts, keys_read_by):
    """Every run of the sweep, in the order a sequential sweep runs them. ``overrides``: the KEY VALUE
    list for the runs whose trainer reads each key; ``class_counts(data_root, dataset names, config_dir)``
    gives {dataset: number of classes} (asked only when a targeted method is in the sweep);
    ``keys_read_by(trainer names, keys)`` gives {trainer: the keys it reads}."""
    config_dir = osp.abspath(args.config_dir)
    out, data_root = osp.abspath(args.output_dir), osp.abspath(args.root)
    methods = _methods(args.methods, args.baple_init)
    axes = _varied(args.vary)
    if len(overrides) % 2:
        raise InputError(f"Overrides must be KEY VALUE pairs (or --set KEY=VALUE); got an odd list: "
                         f"{' '.join(overrides)}")
    fixed = list(overrides)
    for dataset in args.datasets:
        if not osp.isfile(osp.join(config_dir, "datasets", f"{dataset}.yaml")):
            raise InputError(f"No dataset config {osp.join(config_dir, 'datasets', dataset + '.yaml')}; "
                             f"--datasets takes names of files in {osp.join(config_dir, 'datasets')}")
    for method in methods:
        path = osp.join(config_dir, "trainers", f"{method.trainer}.yaml")
        if not osp.isfile(path):
            raise InputError(f"No method file {path} for {method.name}; --config-dir must hold "
                             "trainers/<TRAINER>.yaml")
    fixed_for = _fixed_for_each_trainer(fixed, methods, keys_read_by)

    counts = class_counts(data_root, args.datasets, config_dir) if any(m.targeted for m in methods) else {}
    seeds = list(dict.fromkeys(args.seeds))
    runs = []
    for dataset in args.datasets:
        targets = list(dict.fromkeys(args.targets))
        if dataset in counts:
            num_classes = counts[dataset]
            targets = list(range(num_classes)) if targets == ["all"] else [_target(t, num_classes, dataset)
                                                                          for t in targets]
        for backbone, method in itertools.product(args.backbones, methods):
            for values in itertools.product(*(vs for _, vs in axes)):
                variant = tuple(zip((k for k, _ in axes), values))
                for target, seed in itertools.product(targets if method.targeted else [None], seeds):
                    runs.append(_run(method, dataset, backbone, target, seed, variant, out, data_root, config_dir,
                                     fixed_for[method.trainer], args.baple_init, args.profile))
    return runs


def _fixed_for_each_trainer(fixed, methods, keys_read_by):
    """{trainer: its part of the override KEY VALUE list}: a key goes to the runs whose trainer reads it
    (``TRAINER.COOP.N_CTX`` to CoOp and BAPLe, not to ZeroShot or FineTune, which would refuse it);
    a key none of the sweep's methods reads goes nowhere, and is said so."""
    trainers = sorted({m.trainer for m in methods})
    keys = fixed[0::2]
    reads = keys_read_by(trainers, keys) if keys else {}
    for key in keys:
        if not any(key in reads[t] for t in trainers):
            print(f"override {key}: none of the sweep's trainers ({', '.join(trainers)}) reads it; not passed to "
                  "any run")
    return {t: [item for key, value in zip(fixed[0::2], fixed[1::2]) if key in reads.get(t, ())
                for item in (key, value)] for t in trainers}


def _target(text, num_classes, dataset):
    if not text.isdigit() or int(text) >= num_classes:
        raise InputError(f"--targets {text} is not a class of {dataset} (0..{num_classes - 1}); give class "
                         "numbers or all")
    return int(text)


def _folder(out, method, dataset, backbone, variant, target, seed):
    parts = [out, dataset, method, backbone, *(f"{k}={v}" for k, v in variant)]
    return osp.join(*parts, *([f"target{target}"] if target is not None else []), f"seed{seed}")


def _run(method, dataset, backbone, target, seed, variant, out, data_root, config_dir, fixed, baple_init, profile):
    folder = _folder(out, method.name, dataset, backbone, variant, target, seed)
    needs = ""
    if method.init_from and baple_init == "clean-pl":
        needs = _folder(out, method.init_from, dataset, backbone, variant, None, seed)
    argv = ["--root", data_root, "--trainer", method.trainer, "--backbone", backbone, "--seed", str(seed),
            "--dataset-config-file", osp.join(config_dir, "datasets", f"{dataset}.yaml"),
            "--config-file", osp.join(config_dir, "trainers", f"{method.trainer}.yaml"),
            "--output-dir", folder, *(["--profile", profile] if profile else []),
            *(["--init", needs] if needs else []), *method.overrides,
            *(["BACKDOOR.TARGET_CLASS", str(target)] if target is not None else []),
            *(item for kv in variant for item in kv), *fixed]
    return Run(method.name, dataset, backbone, target, seed, variant, folder, tuple(argv), needs)


def configs_to_check(runs):
    """The arguments of one run per (method, dataset, backbone, variant): the others differ only in
    target class, seed and folder."""
    first = {}
    for run in runs:
        first.setdefault((run.method, run.dataset, run.backbone, run.variant), list(run.argv))
    return list(first.values())

