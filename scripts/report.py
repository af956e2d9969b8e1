"""Tables 1-2 from finished runs: every ``results.json`` under ROOT, methods as rows, (backbone,
dataset) as columns, the mean over target classes and seeds with its standard deviation and run count.

    python -m scripts.report output/table1 [--paper] [--by KEY ...] [--out PREFIX]

Writes PREFIX.md, PREFIX.csv and PREFIX.tex (default PREFIX: ROOT/report) and prints the Markdown.
Metrics: CA (clean accuracy), BA (backdoor accuracy over every triggered test image, the paper's
metric) and ASR (attack success over the triggered test images not of the target class). A run's
row is its method (``scripts.methods``, from its trainer and attack), split further by the config
values of ``--by`` keys; runs in one cell that differ in other config values (BAPLe's init: set or
not) are reported with a warning. ``--paper`` puts the published numbers beside ours
(``scripts/paper_numbers.csv``, transcribed from the paper's Tables 1-2).
"""
import csv
import io
import math
import os
import os.path as osp
import sys
from dataclasses import dataclass

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
SET_OR_NOT_KEYS = {"TRAINER.BAPLE.INIT"}


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


@dataclass
class Record:
    path: str
    row: str
    column: tuple  # (backbone, DATASET.NAME)
    values: dict  # metric key -> float (absent when the run has no such number)
    config: dict  # flattened


def load_records(root, by=()):
    """One Record per run under ``root``; a run's config is its stored one on today's defaults
    (``trainers.run.Run.cfg``), so a key added since the run was written has its default."""
    from trainers.run import Run

    records = []
    for run in Run.find([root]):
        path, results = osp.join(run.path, "results.json"), run.results
        config = flat_keys(run.cfg)
        missing = [key for key in by if key not in config]
        if missing:
            raise InputError(f"--by {missing[0]}: no such config key in {path}; use a dotted key such as "
                             "BACKDOOR.NOISE_EPS")
        row = method_name(results["trainer"], results["attack"])
        if by:
            row += " (" + ", ".join(f"{key.split('.')[-1]}={config[key]}" for key in by) + ")"
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
    for (row, (backbone, dataset)), configs in sorted(cells.items()):
        keys = sorted({key for config in configs for key in config} - PER_RUN_KEYS)

        def value(config, key):
            return bool(config.get(key)) if key in SET_OR_NOT_KEYS else repr(config.get(key))

        differing = [key for key in keys if len({value(config, key) for config in configs}) > 1]
        if differing:
            warnings.append(f"warning: {row} on {backbone}/{dataset} averages runs that differ in "
                            f"{', '.join(differing[:5])}; split them with --by {differing[0]}")
    return warnings


def _order(known):
    def key(name):
        return (known.index(name), "") if name in known else (len(known), str(name))

    return key


def row_method(row):
    """The method of a row ("BAPLe (NOISE_EPS=4.0)" -> "BAPLe")."""
    return row.split(" (")[0]


def row_order(rows):
    names = [m.name for m in methods()]
    return sorted(rows, key=lambda row: (_order(names)(row_method(row)), row))


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


def build_tables(cells, paper):
    """[(title, header, rows)] with cell texts: the CA/BA table, then one table per metric."""
    rows = row_order({row for row, _ in cells})
    columns = column_order({column for _, column in cells})
    header = ["method"] + [column_label(c) for c in columns]

    def ca_ba_cell(row, column):
        stats = cells.get((row, column))
        text = ca_ba({key: stat.mean for key, stat in stats.items()}) if stats else ""
        published = (paper or {}).get((row_method(row), *column))
        return f"{text} (paper {ca_ba(published)})".strip() if published else text

    tables = [("CA/BA (means)", header, [[row] + [ca_ba_cell(row, c) for c in columns] for row in rows])]
    for key, title, _ in METRICS:
        table_rows = [[row] + [mean_std(cells[(row, c)][key]) if key in cells.get((row, c), {}) else ""
                               for c in columns]
                      for row in rows if any(key in cells.get((row, c), {}) for c in columns)]
        if table_rows:
            tables.append((f"{title}: mean ± std (n runs)", header, table_rows))
    return tables


def markdown(tables, root, count):
    lines = [f"# Results under {root}", "",
             f"{count} run(s); means over target classes and seeds. CA: clean accuracy; BA: backdoor accuracy "
             "over every triggered test image (the paper's metric); ASR: attack success over the triggered "
             "test images not of the target class; std: sample standard deviation over runs.", ""]
    for title, header, rows in tables:
        lines += [f"## {title}", "", common_tables.markdown(rows, header), ""]
    return "\n".join(lines)


def latex(tables):
    """Each table as a booktabs ``tabular`` (method left, the cells centred) under a comment naming it."""
    parts = []
    for title, header, rows in tables:
        align = ("left",) + ("center",) * (len(header) - 1)
        parts += [f"% {title}", common_tables.latex(rows, header, align), ""]
    return "\n".join(parts)


def csv_text(cells, paper):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["row", "method", "backbone", "dataset", "metric", "mean", "std", "n", "paper"])
    for row in row_order({row for row, _ in cells}):
        for column in column_order({c for r, c in cells if r == row}):
            for key, stat in cells[(row, column)].items():
                published = (paper or {}).get((row_method(row), *column), {}).get(key, "")
                writer.writerow([row, row_method(row), *column, key, f"{stat.mean:.6f}",
                                 "" if math.isnan(stat.std) else f"{stat.std:.6f}", stat.n, published])
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
