"""Model-side defences of a hospital that received a learned prompt: tune it again on a small trusted
clean set, and, as the clean baseline to compare with, tune a context initialised from words.

Both are CoOp trainings (the project's ``CoOp`` trainer, unpoisoned; ``CoCoOp`` for runs with CoCoOp's
learner: CoCoOp, BAPLeCoCoOp, BadCLIP) on the trusted few-shot set
(``shots`` per class, drawn with ``seed``, through CoOp's training augmentation), with the run's
prompt settings, optimiser and learning rate, no warm-up (the received context is already trained)
and a cosine schedule over ``epochs``, run by the engine's own ``train()``. CA and BA, with the run's
own trigger, are measured before tuning (epoch 0) and after every epoch. Only the context is optimised: the backbone's bytes are
hashed before and after, and the result records whether they are unchanged.
"""
import hashlib
import tempfile
from contextlib import redirect_stdout

import torch

from dassl_compat import DATASET_REGISTRY, TRAINER_REGISTRY
from dassl_compat.checkpoint import get_rng_state, set_rng_state

from ..coop import CoOp
from ..display import save_figure
from ..prompts import DEFAULT_TEMPLATE
from ..validation import defaults_of_unread_keys
from .base import Defence, ca_ba, chance_line, plot_grid, plot_title, progress, register_defence
from .robustness import evaluate_quietly, summary


def is_prompt_learning(cfg):
    return issubclass(TRAINER_REGISTRY.get(cfg.TRAINER.NAME), CoOp)


def backbone_digest(backbone):
    """SHA-256 of every parameter and buffer of the backbone, in state-dict order (bitwise identity)."""
    digest = hashlib.sha256()
    for name, tensor in backbone.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def init_words(cfg):
    """Words to start the context from: the run's ``CTX_INIT``, else the dataset's zero-shot prompt
    template up to the class name, else the default zero-shot template's (``a photo of a``)."""
    if cfg.TRAINER.COOP.CTX_INIT.strip():
        return cfg.TRAINER.COOP.CTX_INIT.strip()
    template = getattr(DATASET_REGISTRY.get(cfg.DATASET.NAME), "prompt_template", "{}")
    return template.split("{}")[0].strip() or DEFAULT_TEMPLATE.split("{}")[0].strip()


def defender_opts(cfg, run, own_trigger, shots, seed, epochs, lr=None, words=None):
    """``Run.build_trainer`` overrides of the defender's tuning, for a run rebuilt as ``cfg`` (its config
    with the defence's own overrides): a clean CoOp on the trusted set, evaluated on the test set after
    every epoch; ``own_trigger``: BA is measured with the run's own trigger; ``words``: start from these
    words instead of the received context (None keeps the run's prompt layout)."""
    learner = TRAINER_REGISTRY.get(cfg.TRAINER.NAME).clean_learner()  # CoOp, or CoCoOp for its learners
    opts = ["TRAINER.NAME", learner.registry_name, "BACKDOOR.ATTACK", "none", "TRAINER.BAPLE.INIT", "",
            "DATASET.NUM_SHOTS", shots, "SEED", seed, "OPTIM.MAX_EPOCH", epochs, "OPTIM.WARMUP_EPOCH", 0,
            "TEST.EVAL_FREQ", 1, "TEST.NO_TEST", False, "TEST.FINAL_MODEL", "last_step", "TEST.SPLIT", "test",
            "RESUME", ""]
    if own_trigger and not cfg.BACKDOOR.EVAL_TRIGGER:
        opts += ["BACKDOOR.EVAL_TRIGGER", run.path]  # rebuilt from the run's config and saved trigger
    if words is not None:
        opts += ["TRAINER.COOP.CTX_INIT", words]
    if lr is not None:
        opts += ["OPTIM.LR", float(lr)]
    # Keys of the run's trainer that the clean learner does not read (e.g. a BAPLe run's own trigger
    # settings) back at their defaults: it would refuse them.
    tuned = cfg.clone()
    tuned.defrost()
    tuned.merge_from_list(opts)
    return opts + defaults_of_unread_keys(tuned, learner)


def retune(run, opts, log, received=True):
    """Tune the context of a CoOp trainer built from ``run`` with ``opts`` (``defender_opts``), started
    from the run's received context (``received``) or from the words of ``opts``, through the engine's
    own training loop (``train()``), in a temporary output folder (outside the run and the data).
    Returns the CA/BA of every epoch, the backbone check and what was tuned."""
    with tempfile.TemporaryDirectory(prefix="retune-") as output_dir:
        trainer = run.build_trainer(opts, output_dir, load_weights=received, log=log)
        before = backbone_digest(trainer.model.backbone)
        rng = get_rng_state()  # the epoch-0 evaluation must not change the training that follows
        epochs = [{"epoch": 0, **evaluate_quietly(trainer, log)}]
        set_rng_state(rng)
        with redirect_stdout(log):
            trainer.train()  # evaluates after every epoch (TEST.EVAL_FREQ 1) and tests at the end
        epochs += [{"epoch": done, **summary(evaluation)} for done, evaluation in trainer.evaluations]
        after = backbone_digest(trainer.model.backbone)
        cfg = trainer.cfg
    return {"epochs": epochs, "trainable_params": trainer.trainable_parameters(),
            "backbone_sha256": after, "backbone_unchanged": before == after,
            "start": "received context" if received else f"words: {cfg.TRAINER.COOP.CTX_INIT}",
            "num_trusted": len(trainer.dm.dataset.train_x)}


@register_defence
class Retune(Defence):
    """The received context tuned again on the trusted clean set, and a context from words tuned the
    same way, CA and BA after every epoch (prompt-learning runs only). Builds its own trainers."""

    name = "retune"
    uses_run_trainer = False
    summary_headers = ("re-tuned CA / BA", "from words CA / BA")
    VARIANTS = ("received", "from_words")

    def measure(self, context):
        cfg, run, settings, log = context.cfg, context.run, context.settings, context.log
        if not is_prompt_learning(cfg):
            return {"retune": {"skipped": f"{cfg.TRAINER.NAME} learns no prompt context to re-tune"}}
        context.say(f"  retune: {settings.retune_epochs} epoch(s) on {context.shots} trusted shots per class "
                    f"(seed {context.seed})")
        common = dict(cfg=cfg, run=run, own_trigger=run.results["backdoor"] is not None, shots=context.shots,
                      seed=context.seed, epochs=settings.retune_epochs, lr=settings.retune_lr or None)
        received = context.opts + defender_opts(**common)
        from_words = context.opts + defender_opts(**common, words=init_words(cfg))
        out = {"lr": settings.retune_lr or cfg.OPTIM.LR}
        for variant in progress(self.VARIANTS, f"{context.name}: retune"):
            context.block(f"retune: {variant.replace('_', ' ')}, {settings.retune_epochs} epoch(s)")
            out[variant] = (retune(run, received, log) if variant == "received"
                            else retune(run, from_words, log, received=False))
        return {"retune": out}

    def plot(self, report, path):
        if "received" not in report.get("retune", {}):
            return None
        fig, axes = plot_grid(1, width=5, height=3.4)
        ax = axes[0]
        for key, style in (("received", "-"), ("from_words", ":")):
            epochs = report["retune"][key]["epochs"]
            x = [e["epoch"] for e in epochs]
            ax.plot(x, [e["clean_accuracy"] for e in epochs], "o" + style, color="C0",
                    label=f"CA, {key.replace('_', ' ')}")
            if epochs[0]["backdoor_accuracy"] is not None:
                ax.plot(x, [e["backdoor_accuracy"] for e in epochs], "s" + style, color="C3",
                        label=f"BA, {key.replace('_', ' ')}")
        chance_line(ax, report)
        ax.set_xlabel("epochs of tuning on the trusted clean set")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title(f"Re-tuning: {plot_title(report)}", fontsize=9)
        return save_figure(fig, path)

    def csv_rows(self, report):
        for variant in self.VARIANTS:
            for e in report.get("retune", {}).get(variant, {}).get("epochs", []):
                yield {"defence": f"retune_{variant}", "setting": f"epoch {e['epoch']}",
                       **{k: e[k] for k in ("clean_accuracy", "backdoor_accuracy", "asr_non_target")}}

    def summary_cells(self, report):
        cells = []
        for variant in self.VARIANTS:
            epochs = report.get("retune", {}).get(variant, {}).get("epochs")
            cells.append(ca_ba(epochs[-1]) if epochs else "-")
        return cells
