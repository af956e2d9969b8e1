"""Train or evaluate a prompt-learning or fine-tuning model on a Med-FM (CoOp's command line).

    python train.py --root DATA --trainer BAPLe \
        --dataset-config-file configs/datasets/kather.yaml \
        --config-file configs/trainers/BAPLe.yaml --backbone plip \
        --output-dir output/kather/BAPLe/plip/seed1 --seed 1 BACKDOOR.TARGET_CLASS 0

Config merge order: Dassl defaults -> project keys (configs/defaults.py) -> dataset file -> method
file (``--config-file``, one per trainer: configs/trainers/<TRAINER>.yaml) -> the method's
per-backbone file of the chosen model, where there is one (configs/trainers/<TRAINER>/<backbone>.yaml,
e.g. MedCLIP's learning rate; see configs/files.py) -> ``--profile`` (configs/profiles/NAME.yaml) ->
flags -> trailing KEY VALUE overrides. A key the chosen trainer does not read is refused
(``trainers.validation.check_keys_read``). Exit codes: 0 success, 2 bad input or config (one line naming the
problem and the fix), 1 internal error or interruption; the message is the last line printed.
Bad settings are found before any model or image is loaded (``trainers.validation``). A run stopped
at any point (Ctrl-C, SIGTERM, SIGKILL) resumes from its last checkpoint when the same command is
run again; see docs/ERRORS.md for the messages.
"""
import difflib
import os.path as osp

from common import cli
from common.errors import InputError
from configs.defaults import profile_file, renamed_key


def build_parser():
    p = cli.parser("train.py", __doc__.split("\n\n")[0])
    cli.add_root(p, help="path to the datasets root (DATASET.ROOT)")
    cli.add_output_dir(p, help="output directory (OUTPUT_DIR)")
    p.add_argument("--resume", type=str, default="", help="checkpoint directory to resume from (RESUME)")
    p.add_argument("--seed", type=int, default=-1, help="only positive values fix the seed (SEED)")
    p.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods (INPUT.TRANSFORMS)")
    p.add_argument("--config-file", type=str, default="", help="method config file")
    p.add_argument("--dataset-config-file", type=str, default="", help="dataset config file")
    p.add_argument("--trainer", type=str, default="", help="name of the trainer (TRAINER.NAME)")
    p.add_argument("--backbone", type=str, default="", help="name of the Med-FM (MODEL.BACKBONE.NAME)")
    p.add_argument("--init", type=str, default="",
                   help="BAPLe: clean CoOp run folder or checkpoint to start the context from (TRAINER.BAPLE.INIT)")
    p.add_argument("--profile", type=str, default="",
                   help="a named set of settings (configs/profiles/NAME.yaml) merged after the config files, before "
                        "the overrides; reference: every behaviour of the authors' reference code")
    p.add_argument("--eval-only", action="store_true", help="evaluation only")
    p.add_argument("--model-dir", type=str, default="", help="load the model from this directory for evaluation")
    p.add_argument("--load-epoch", type=int, help="load the weights saved at this epoch for evaluation")
    p.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    cli.add_overrides(p, help="modify config options using the command line (KEY VALUE pairs)")
    return p


def _check_key(cfg, key):
    """One-line error for an override key that does not exist, naming the valid keys beside it."""
    renamed = renamed_key(key)
    if renamed and renamed[0] == key:
        raise InputError(f"{key} is now {renamed[1]}; set {renamed[1]} instead")
    node, parts = cfg, key.split(".")
    for depth, part in enumerate(parts):
        if not hasattr(node, "keys") or part not in node:
            here = ".".join(parts[:depth]) or "the top level"
            choices = sorted(node.keys()) if hasattr(node, "keys") else []
            close = difflib.get_close_matches(part, choices, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise InputError(f"Unknown config key {key}{hint}; keys under {here}: {', '.join(choices)}")
        node = node[part]


def _merge_file(cfg, path, what):
    if not osp.isfile(path):
        raise InputError(f"{what} {path} does not exist; pass an existing YAML file (see configs/)")
    try:
        cfg.merge_from_file(path)
    except KeyError as e:
        renamed = renamed_key(str(e.args[0]).rpartition(": ")[2])
        if renamed:
            raise InputError(f"{what} {path}: {renamed[0]} is now {renamed[1]}; set {renamed[1]} there instead") from None
        raise InputError(f"{what} {path}: {e.args[0]}; remove the key or fix its spelling") from None
    except ValueError as e:
        raise InputError(f"{what} {path}: {str(e).splitlines()[0]}") from None


def setup_cfg(args):
    """The run's config (see the module docstring for the merge order). The per-backbone file is the
    one of the backbone the run ends up with, whichever step names it (``--backbone``, a trailing
    ``MODEL.BACKBONE.NAME``, or a file)."""
    from configs.files import check_method_file, method_files

    if args.config_file:
        check_method_file(args.config_file)
    cfg = _merged(args, [args.config_file] if args.config_file else [])
    if args.config_file:
        files = method_files(args.config_file, cfg.MODEL.BACKBONE.NAME)
        if len(files) > 1:
            cfg = _merged(args, files)
    cfg.freeze()
    return cfg


def _merged(args, method_files):
    from configs.defaults import get_cfg

    cfg = get_cfg()
    if args.dataset_config_file:
        _merge_file(cfg, args.dataset_config_file, "Dataset config file")
    for path in method_files:
        _merge_file(cfg, path, "Config file")
    if args.profile:
        _merge_file(cfg, profile_file(args.profile), f"Profile {args.profile}")
        cfg.PROFILE = args.profile

    flags = {"DATASET.ROOT": args.root, "OUTPUT_DIR": args.output_dir, "RESUME": args.resume,
             "TRAINER.NAME": args.trainer, "MODEL.BACKBONE.NAME": args.backbone, "TRAINER.BAPLE.INIT": args.init}
    cfg.merge_from_list([item for key, value in flags.items() if value for item in (key, value)])
    if args.seed >= 0:
        cfg.SEED = args.seed
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms

    opts = cli.overrides(args)
    if len(opts) % 2:
        raise InputError(f"Overrides must be KEY VALUE pairs; got an odd list: {' '.join(opts)}")
    for key, value in zip(opts[0::2], opts[1::2]):
        _check_key(cfg, key)
        try:
            cfg.merge_from_list([key, _float_for_float_key(_node(cfg, key), value)])
        except (ValueError, AssertionError) as e:
            raise InputError(f"Bad override {key} {value}: {str(e).splitlines()[0]}") from None
    if cfg.PROFILE != args.profile:  # only --profile merges a profile's file
        raise InputError(f"PROFILE {cfg.PROFILE!r} is set in a config file or override; choose a profile with "
                         f"--profile NAME instead")
    return cfg


def _float_for_float_key(current, value):
    """Let ``BACKDOOR.POISON_PERCENTAGE 20`` set a float key (yacs would reject the int 20)."""
    if isinstance(current, float) and isinstance(value, str):
        try:
            return str(float(int(value)))
        except ValueError:
            return value
    return value


def _node(cfg, dotted):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def check_names(cfg):
    """Unknown trainer or dataset: fail before anything is built."""
    from dassl_compat import DATASET_REGISTRY, TRAINER_REGISTRY

    for what, key, registry in (("trainer", "TRAINER.NAME", TRAINER_REGISTRY),
                                ("dataset", "DATASET.NAME", DATASET_REGISTRY)):
        name = _node(cfg, key)
        names = sorted(registry.registered_names())
        if name not in names:
            raise InputError(f"Unknown {what} {name!r} ({key}); choose from: {', '.join(names)}")


def check_paths(args):
    if args.eval_only and args.model_dir and not osp.isdir(args.model_dir):
        raise InputError(f"--model-dir {args.model_dir} does not exist; point it at a finished run's output folder")


def start_log(output_dir):
    from dassl_compat import setup_logger

    try:
        setup_logger(output_dir)
    except OSError as e:
        raise InputError(f"OUTPUT_DIR {output_dir} cannot be written ({e.strerror or e}); choose a writable "
                         "folder (--output-dir)") from None


def main(args):
    import datasets  # noqa: F401  (registers the datasets)
    import trainers  # noqa: F401  (registers the trainers)
    from dassl_compat import BACKEND, build_trainer, collect_env_info, set_random_seed
    from trainers.validation import validate_cfg

    cfg = setup_cfg(args)
    check_names(cfg)
    validate_cfg(cfg)
    check_paths(args)
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    start_log(cfg.OUTPUT_DIR)
    print(f"Engine backend: {BACKEND}")
    print("** Arguments **\n" + "\n".join(f"{k}: {v}" for k, v in sorted(vars(args).items())))
    print(f"** Config **\n{cfg}")
    if cfg.VERBOSE:
        print("Collecting env info ...\n** System info **\n" + collect_env_info())

    trainer = build_trainer(cfg)
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
        return trainer
    if not args.no_train:
        trainer.train()
    return trainer


def run(argv=None):
    """Entry point with the project's exit codes (``common.cli``); returns the code instead of exiting.
    A checkpoint being written when Ctrl-C or SIGTERM arrives is removed, and the message says how to
    resume."""
    return cli.run(main_from_argv, argv)


def main_from_argv(argv):
    return main(build_parser().parse_args(argv))


if __name__ == "__main__":
    cli.exit_with(main_from_argv)
