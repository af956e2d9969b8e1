"""A Dassl script of a CoOp-based repository: it registers its own ``CoOp`` trainer first, then imports
this project's trainers and trains ``--trainer BAPLe`` through ``train.py`` to the end.

    python tests/dassl_plugin.py DATA_ROOT WEIGHTS OUTPUT_DIR   # (HF_HUB_OFFLINE=1, stand-ins in HF_HUB_CACHE)

Prints one ``registry: ...`` line (what ``CoOp``, ``BackdoorCoOp`` and ``BAPLe`` are) and exits with
``train.run``'s code. Runs on whichever engine ``dassl_compat`` picks (``BAPLE_ENGINE``).
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from dassl_compat import TRAINER_REGISTRY, TrainerX  # noqa: E402  (the real dassl.engine's when it is used)


@TRAINER_REGISTRY.register()
class CoOp(TrainerX):
    """The user's own CoOp (as KaiyangZhou/CoOp registers it)."""


def main(data_root, weights, output_dir):
    import datasets  # noqa: F401
    import train
    import trainers  # noqa: F401  (must not fail on the name CoOp being taken)

    def owner(name):
        return TRAINER_REGISTRY.get(name).__module__ if name in TRAINER_REGISTRY.registered_names() else "-"

    print(f"registry: CoOp={owner('CoOp')} BackdoorCoOp={owner('BackdoorCoOp')} BAPLe={owner('BAPLe')} "
          f"BAPLe_is_project_CoOp={issubclass(TRAINER_REGISTRY.get('BAPLe'), trainers.coop.CoOp)}", flush=True)
    return train.run([
        "--root", data_root, "--trainer", "BAPLe", "--seed", "1",
        "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "covid.yaml"),
        "--config-file", os.path.join(REPO, "configs", "trainers", "BAPLe.yaml"), "--backbone", "quiltnet",
        "--output-dir", output_dir, "MODEL.BACKBONE.WEIGHTS", weights, "USE_CUDA", "False", "VERBOSE", "False",
        "DATASET.NUM_SHOTS", "4", "OPTIM.MAX_EPOCH", "1", "DATALOADER.NUM_WORKERS", "0",
        "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "20", "TRAINER.COOP.N_CTX", "4",
        "BACKDOOR.POISON_COUNT", "1"])


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
