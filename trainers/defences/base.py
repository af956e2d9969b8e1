"""The interface of a defence of ``scripts.defend`` and their registry.

A defence is one module of ``trainers/defences/`` with a ``Defence`` subclass registered in
``DEFENCE_REGISTRY`` (a Dassl ``Registry``; ``@register_defence``). It owns its measurement on a
finished run rebuilt for evaluation (``measure``: entries of the run's ``defences.json``), its plot
(``plot``: ``RUN/defences/<name>.png``) and its parts of the tables across runs (``csv_rows``,
``summary_cells`` under ``summary_headers``, and optionally a Markdown section and a plot across runs).
``scripts.defend`` only iterates the registered defences, in registration order, and writes what they
return; ``--only NAME`` picks some.
"""
import math

from dassl_compat import Registry, register_as

from ..display import pyplot
from . import data

DEFENCE_REGISTRY = Registry("DEFENCE")


def register_defence(cls):
    """Class decorator: makes the defence runnable by ``scripts.defend`` (``--only cls.name``)."""
    return register_as(DEFENCE_REGISTRY, cls.name)(cls)


def defences():
    """An instance of every registered defence, in registration order."""
    return [DEFENCE_REGISTRY.get(name)() for name in DEFENCE_REGISTRY.registered_names()]


class DefenceContext:
    """What a defence measures on: the rebuilt run (``run``, its ``results``, ``trainer`` with the trained
    weights loaded, its ``cfg`` and evaluation ``trigger``, None without one), the defence settings of
    ``scripts.defend`` (``settings``), the defender's trusted draw (``shots`` per class, ``seed``), the
    overrides the run was rebuilt with (``opts``, for a defence that builds its own trainers), the log
    stream of the console output of builds and evaluations (``log``; ``block`` heads each measurement's
    part of it), ``say`` for progress lines and the run's ``name`` in both."""

    def __init__(self, run, trainer, opts, settings, shots, seed, log, say, name=""):
        self.run, self.results, self.trainer, self.opts = run, run.results, trainer, opts
        self.cfg, self.trigger = trainer.cfg, trainer.eval_trigger()
        self.settings, self.shots, self.seed, self.log, self.say = settings, shots, seed, log, say
        self.name = name or run.path
        self._trusted = None

    def block(self, title):
        """Head the log's next lines (an evaluation's console output) with what they measure, on which run."""
        log_block(self.log, f"{title} (run {self.name})")

    def trusted(self):
        """(images, labels) of the defender's trusted clean set (``data.trusted_images``), drawn once."""
        if self._trusted is None:
            self._trusted = data.trusted_images(self.cfg, self.shots, self.seed, self.log)
        return self._trusted


class Defence:
    """One defence (see the module docstring). Subclasses set ``name`` and implement ``measure``; the
    table and plot methods default to contributing nothing."""

    name = ""  # --only NAME; its plot is NAME.png
    uses_run_trainer = True  # False: builds trainers of its own, measured after the run's trainer is released
    summary_headers = ()  # its columns of the Markdown summary table, one cell each from summary_cells

    def measure(self, context):
        """{key: JSON value} entries of the run's ``defences.json``."""
        raise NotImplementedError

    def plot(self, report, path):
        """Write the run's plot of this defence to ``path`` (a PNG) from its ``defences.json`` dict and
        return the path, or None when there is nothing to plot (e.g. the defence was skipped)."""
        return None

    def csv_rows(self, report):
        """Long-format rows of ``defences.csv``: dicts of ``defence``, ``setting`` and any of
        ``clean_accuracy``, ``backdoor_accuracy``, ``asr_non_target``, ``value``, ``note``."""
        return []

    def summary_cells(self, report):
        """One cell per ``summary_headers`` entry for the run's row of the summary table."""
        return []

    def markdown_section(self, reports):
        """Lines of a Markdown table of its own below the summary ({run name: report}), or []."""
        return []

    def plots_across(self, reports, out_dir):
        """{key: path} of plots across runs written to ``out_dir``, or {}."""
        return {}


def log_block(log, title):
    """One header line in ``log`` naming what the evaluation output below it belongs to."""
    if log is not None:
        print(f"==== {title} ====", file=log, flush=True)


def progress(iterable, desc, total=None, leave=False, unit="it"):
    """A progress bar (stderr) over ``iterable``; ``leave`` False: gone when done (the steps inside one defence)."""
    import sys

    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=leave, unit=unit, dynamic_ncols=True, file=sys.stderr)


# ---- helpers of the defences' tables and plots ----------------------------------------------------
def fmt(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"


def ca_ba(entry):
    return f"{fmt(entry['clean_accuracy'])} / {fmt(entry['backdoor_accuracy'])}"


def plot_grid(count, width=3.2, height=2.8):
    """(figure, axes) of ``count`` panels, at most four per row."""
    plt = pyplot()
    cols = min(count, 4)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.axis("off")
    return fig, list(axes.flat[:count])


def chance_level(report):
    """1/C, the accuracy of a guess: BA (and CA) at or below it means the model is no better than chance."""
    return 1 / len(report["class_names"])


def chance_line(ax, report):
    """Draw the chance level (1/C) across ``ax``, labelled; returns its value."""
    level = chance_level(report)
    ax.axhline(level, color="0.4", ls=":", lw=1, label=f"chance (1/{len(report['class_names'])})")
    return level


def plot_title(report):
    return f"{report['method']} on {report['backbone']} / {report['dataset']}"

