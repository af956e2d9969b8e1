r"""Tables 1-2 from finished runs: every ``results.json`` under ROOT, methods as rows, (backbone,
dataset) as columns, the mean over target classes and seeds with its standard deviation and run count.

    python -m scripts.report output/table1 [--paper] [--by KEY ...] [--out PREFIX]

Writes PREFIX.md, PREFIX.csv and PREFIX.tex (default PREFIX: ROOT/report) and prints the Markdown;
a progress bar over the runs goes to stderr while they are read.
Metrics: CA (clean accuracy), BA (backdoor accuracy over every triggered test image, the paper's
metric) and ASR (attack success over the triggered test images not of the target class). A run's
row is its method (``scripts.methods``, from its trainer and attack), split further by the config
values of ``--by`` keys; runs in one cell that differ in other config values (BAPLe's init: set or
not) are reported with a warning. A run tested with another run's trigger (``BACKDOOR.EVAL_TRIGGER``) has a
row of its own, named by both methods ("Clean_PL, BAPLe's trigger"); a ``--by`` value that is a run
folder is named by that run's method, never by its path. ``--paper`` puts the published numbers
beside ours (``scripts/paper_numbers.csv``, transcribed from the paper's Tables 1-2) and marks with
``*`` the cells the paper has no number for, listed under the table.

Outputs: Markdown; CSV with one line per (row, column, metric) and unique columns; LaTeX as
complete ``table`` environments (caption, label ``tab:<metric>``, booktabs ``tabular``: needs
``\usepackage{booktabs}``). One number format everywhere, the paper's: fractions with three
decimals and no leading zero (.823, 1.000), the CSV's mean, std and paper columns included.
"""
import csv
import io
import math
import os
import os.path as osp
import sys
from dataclasses import dataclass, field

from common import cli
from common import tables as common_tables
from common.errors import InputError
from configs.defaults import flat_keys
from scripts.methods import method_name, methods

PAPER_NUMBERS = osp.join(osp.dirname(osp.abspath(__file__)), "paper_numbers.csv")
# (key, heading, where in results.json)
METRICS = (("ca", "CA", ("clean", "accuracy")), ("ba", "BA", ("backdoor", "accuracy")),
           ("asr", "ASR (non-target)", ("backdoor", "asr_non_target")))
# Config values that differ between the runs of one cell by design ...
PER_RUN_KEYS = {"SEED", "OUTPUT_DIR", "RESUME", "BACKDOOR.TARGET_CLASS"}
# ... and those compared only by whether they are set (BAPLe's init is the Clean_PL run of its seed).
# EVAL_TRIGGER's lender differs per seed and target by design; its method is in the row's name.
SET_OR_NOT_KEYS = {"TRAINER.BAPLE.INIT", "BACKDOOR.EVAL_TRIGGER"}
EVAL_TRIGGER_KEY = "BACKDOOR.EVAL_TRIGGER"
NO_PAPER_MARK = "*"


@dataclass
class Stat:
    mean: float
    std: float  # sample standard deviation; nan for a single run
    n: int

    @classmethod
    def of(cls, values):
        n = len(values)
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
        return cls(mean, std, n)


@dataclass(frozen=True)
class Row:
    """A table row: the method, the method whose trigger the runs were tested with ("": their own)
    and the ``--by`` split as (key, value name) pairs."""
    method: str
    trigger_from: str = ""
    split: tuple = ()

    @property
    def label(self):
        text = self.method + (f", {self.trigger_from}'s trigger" if self.trigger_from else "")
        if self.split:
            text += " (" + ", ".join(f"{key.split('.')[-1]}={value}" for key, value in self.split) + ")"
        return text

    @property
    def split_label(self):
        return ", ".join(f"{key}={value}" for key, value in self.split)


@dataclass
class Record:
    path: str
    row: Row
    column: tuple  # (backbone, DATASET.NAME)
    values: dict  # metric key -> float (absent when the run has no such number)
    config: dict  # flattened


class RunNames:
    """The method name of a run folder a config value points to (BACKDOOR.EVAL_TRIGGER's lender, BAPLe's
    init), each folder read once."""

    def __init__(self):
        self._names = {}

    def of(self, path):
        """The folder's method, or None when ``path`` is not a run folder (any more)."""
        from trainers.run import Run

        if path not in self._names:
            results = Run.open(path).results if Run.is_run(path) else None
            self._names[path] = None if results is None else method_name(results["trainer"], results["attack"])
        return self._names[path]

    def value(self, key, value):
        """A ``--by`` value as shown: a run folder by its method, an unset EVAL_TRIGGER as "own", a path by
        its folder's name, anything else as it is."""
        if key == EVAL_TRIGGER_KEY and not value:
            return "own"
        if isinstance(value, str) and value and osp.isabs(value):
            return self.of(value) or osp.basename(osp.normpath(value))
        return value


def load_records(root, by=()):
    """One Record per run under ``root``; a run's config is its stored one on today's defaults
    (``trainers.run.Run.cfg``), so a key added since the run was written has its default."""
    from tqdm import tqdm

    from trainers.run import Run

    names, records = RunNames(), []
    for run in tqdm(Run.find([root]), desc="reading runs", unit="run", dynamic_ncols=True, file=sys.stderr):
        path, results = osp.join(run.path, "results.json"), run.results
        config = flat_keys(run.cfg)
        missing = [key for key in by if key not in config]
        if missing:
            raise InputError(f"--by {missing[0]}: no such config key in {path}; use a dotted key such as "
                             "BACKDOOR.NOISE_EPS")
        lender = config.get(EVAL_TRIGGER_KEY) or ""
        trigger_from = ""
        if lender:
            trigger_from = names.of(lender) or "another run"
            if names.of(lender) is None:
                print(f"warning: {path} was tested with the trigger of {lender}, which is no run folder any more; "
                      "its row says \"another run's trigger\"", file=sys.stderr)
        row = Row(method_name(results["trainer"], results["attack"]), trigger_from,
                  tuple((key, names.value(key, config[key])) for key in by))
        values = {}
        for key, _, (section, name) in METRICS:
            value = (results.get(section) or {}).get(name)
            if value is not None:
                values[key] = float(value)
        records.append(Record(path, row, (results["backbone"], results["dataset"]), values, config))
    return records


def aggregate(records):
    """{(row, column): {metric key: Stat}} over the runs of each cell."""
    cells = {}
    for record in records:
        cells.setdefault((record.row, record.column), []).append(record)
    return {cell: {key: Stat.of([r.values[key] for r in runs if key in r.values])
                   for key, _, _ in METRICS if any(key in r.values for r in runs)}
            for cell, runs in cells.items()}


def mixed_settings(records):
    """Warnings for cells whose runs differ in config values other than seed and target class."""
    cells, warnings = {}, []
    for record in records:
        cells.setdefault((record.row, record.column), []).append(record.config)
    for (row, (backbone, dataset)), configs in sorted(cells.items(), key=lambda item: (item[0][0].label, item[0][1])):
        keys = sorted({key for config in configs for key in config} - PER_RUN_KEYS)

        def value(config, key):
            return bool(config.get(key)) if key in SET_OR_NOT_KEYS else repr(config.get(key))

        differing = [key for key in keys if len({value(config, key) for config in configs}) > 1]
        if differing:
            warnings.append(f"warning: {row.label} on {backbone}/{dataset} averages runs that differ in "
                            f"{', '.join(differing[:5])}; split them with --by {differing[0]}")
    return warnings


def _order(known):
    def key(name):
        return (known.index(name), "") if name in known else (len(known), str(name))

    return key


def row_order(rows):
    """Rows by method in the tables' order; a method's own-trigger rows before its borrowed-trigger ones."""
    by_name = _order([m.name for m in methods()])
    return sorted(rows, key=lambda row: (by_name(row.method), by_name(row.trigger_from) if row.trigger_from
                                         else (-1, ""), row.label))


def published(paper, row, column):
    """The paper's numbers for a row's cell; None for none (the paper tests each method with its own trigger)."""
    return None if paper is None or row.trigger_from else paper.get((row.method, *column))


def backbone_labels():
    """{backbone: label} of every registered backbone, in the paper's column order (``report_order``)."""
    from clip_models import BACKBONE_REGISTRY

    classes = [BACKBONE_REGISTRY.get(name) for name in BACKBONE_REGISTRY.registered_names()]
    return {cls.name: cls.label or cls.name for cls in sorted(classes, key=lambda c: (c.report_order, c.name))}


def dataset_labels():
    """{DATASET.NAME: label} of every registered folder dataset, in the paper's order."""
    from datasets.synthetic import folder_datasets

    return {cls.__name__: cls.label or cls.__name__ for cls in folder_datasets().values()}


def column_order(columns):
    backbones, datasets = _order(list(backbone_labels())), _order(list(dataset_labels()))
    return sorted(columns, key=lambda c: (backbones(c[0]), datasets(c[1])))


def column_label(column):
    backbone, dataset = column
    return f"{backbone_labels().get(backbone, backbone)} {dataset_labels().get(dataset, dataset)}"


def load_paper(path=PAPER_NUMBERS):
    """{(method, backbone, DATASET.NAME): {"ca": float, "ba": float}} of the paper's Tables 1-2."""
    with open(path, encoding="utf-8", newline="") as f:
        return {(row["method"], row["backbone"], row["dataset"]):
                {key: float(row[key]) for key in ("ca", "ba") if row[key]} for row in csv.DictReader(f)}


# ---- rendering -----------------------------------------------------------------------------------
def number(x):
    """The paper's style: three decimals, no leading zero (.823, 1.000)."""
    text = f"{x:.3f}"
    return text[1:] if text.startswith("0.") else text


def ca_ba(means):
    """The paper's cell: "CA/BA", "-" for a missing number."""
    return "/".join(number(means[key]) if key in means else "-" for key in ("ca", "ba"))


def mean_std(stat):
    spread = "" if math.isnan(stat.std) else f" ± {number(stat.std)}"
    return f"{number(stat.mean)}{spread} (n={stat.n})"


@dataclass
class Table:
    key: str  # names its LaTeX label (tab:<key>)
    title: str
    header: list
    rows: list  # cell texts
    notes: list = field(default_factory=list)  # lines under the table


def build_tables(cells, paper):
    """[Table] with cell texts: the CA/BA table, then one table per metric. With ``paper``, a CA/BA cell
    the paper has no number for is marked ``NO_PAPER_MARK`` and listed in the table's note."""
    rows = row_order({row for row, _ in cells})
    columns = column_order({column for _, column in cells})
    header = ["method"] + [column_label(c) for c in columns]
    unpublished = []

    def ca_ba_cell(row, column):
        stats = cells.get((row, column))
        if not stats:
            return ""
        text = ca_ba({key: stat.mean for key, stat in stats.items()})
        if paper is None:
            return text
        numbers = published(paper, row, column)
        if numbers is None:
            unpublished.append(f"{row.label} on {column_label(column)}")
            return f"{text} {NO_PAPER_MARK}"
        return f"{text} (paper {ca_ba(numbers)})"

    ca_ba_table = Table("ca-ba", "CA/BA (means)", header,
                        [[row.label] + [ca_ba_cell(row, c) for c in columns] for row in rows])
    if unpublished:
        ca_ba_table.notes.append(f"{NO_PAPER_MARK} No published number: " + "; ".join(unpublished) + ".")
    tables = [ca_ba_table]
    for key, title, _ in METRICS:
        table_rows = [[row.label] + [mean_std(cells[(row, c)][key]) if key in cells.get((row, c), {}) else ""
                                     for c in columns]
                      for row in rows if any(key in cells.get((row, c), {}) for c in columns)]
        if table_rows:
            tables.append(Table(key, f"{title}: mean ± std (n runs)", header, table_rows))
    return tables


def markdown(tables, root, count):
    lines = [f"# Results under {root}", "",
             f"{count} run(s); means over target classes and seeds. CA: clean accuracy; BA: backdoor accuracy "
             "over every triggered test image (the paper's metric); ASR: attack success over the triggered "
             "test images not of the target class; std: sample standard deviation over runs.", ""]
    for table in tables:
        lines += [f"## {table.title}", "", common_tables.markdown(table.rows, table.header), ""]
        lines += [note + "\n" for note in table.notes]
    return "\n".join(lines)


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$"}


def _latex_text(text):
    """A caption or note in LaTeX: its special characters escaped, ± as math."""
    return "".join(LATEX_ESCAPES.get(char, char) for char in text)


def latex(tables):
    """Each table as a complete ``table`` environment: caption, label ``tab:<key>``, the booktabs
    ``tabular`` (method left, the cells centred) and its notes in small type below."""
    parts = ["% Tables written by scripts.report; they need \\usepackage{booktabs}.", ""]
    for table in tables:
        align = ("left",) + ("center",) * (len(table.header) - 1)
        parts += [r"\begin{table}[t]", r"\centering",
                  r"\caption{" + _latex_text(f"{table.title}. Fractions; means over target classes and seeds.") + "}",
                  r"\label{tab:" + table.key + "}",
                  common_tables.latex(table.rows, table.header, align)]
        parts += [r"\par\smallskip{\footnotesize " + _latex_text(note) + "}" for note in table.notes]
        parts += [r"\end{table}", ""]
    return "\n".join(parts)


CSV_HEADER = ("method", "trigger_from", "split", "backbone", "dataset", "metric", "mean", "std", "n", "paper")


def csv_text(cells, paper):
    """One line per (row, column, metric): the row as its parts (method, the method whose trigger it was
    tested with, the --by split), each number in ``number``'s format."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for row in row_order({row for row, _ in cells}):
        for column in column_order({c for r, c in cells if r == row}):
            for key, stat in cells[(row, column)].items():
                value = (published(paper, row, column) or {}).get(key)
                writer.writerow([row.method, row.trigger_from, row.split_label, *column, key, number(stat.mean),
                                 "" if math.isnan(stat.std) else number(stat.std), stat.n,
                                 "" if value is None else number(value)])
    return out.getvalue()


def _write(text, path):
    from dassl_compat.checkpoint import atomic_write_text

    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    atomic_write_text(text, path)


def report(root, out=None, by=(), with_paper=False):
    """Write the tables; returns {"md": path, "csv": path, "tex": path} and the Markdown text."""
    if not osp.isdir(root):
        raise InputError(f"{root} is not a folder; pass the sweep root (the --out of scripts.sweep)")
    records = load_records(root, by)
    for warning in mixed_settings(records):
        print(warning, file=sys.stderr)
    cells = aggregate(records)
    paper = load_paper() if with_paper else None
    tables = build_tables(cells, paper)
    text = markdown(tables, root, len(records))
    prefix = out or osp.join(root, "report")
    paths = {"md": prefix + ".md", "csv": prefix + ".csv", "tex": prefix + ".tex"}
    _write(text, paths["md"])
    _write(csv_text(cells, paper), paths["csv"])
    _write(latex(tables), paths["tex"])
    return paths, text


def main(argv=None):
    p = cli.parser("python -m scripts.report", __doc__)
    p.add_argument("root", help="folder searched for results.json files (a sweep's --out)")
    p.add_argument("--out", default=None, help="output prefix (default ROOT/report)")
    p.add_argument("--by", nargs="+", default=[], metavar="KEY", help="config keys that split rows")
    p.add_argument("--paper", action="store_true", help="show the paper's published CA/BA beside ours")
    args = p.parse_args(argv)
    paths, text = report(args.root, args.out, args.by, args.paper)
    print(text)
    print("Written: " + ", ".join(paths.values()))
    return 0


run = cli.command(main)  # the console command (setup.py)


if __name__ == "__main__":
    cli.exit_with(main)
