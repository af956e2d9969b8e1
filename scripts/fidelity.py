"""docs/FIDELITY.md's table: each reference-code behaviour of a profile, and what it does to BAPLe on the demo.

    python -m scripts.fidelity [--profile reference] [--rows ID ...] [--output output/fidelity]
                               [--data data/quickstart] [--seed 1] [--render-only]

Runs, through ``train.py`` on the quickstart's data and demo model (``scripts.quickstart``: the same
files, scale-down and class-specific context), the clean CoOp run BAPLe starts from, then BAPLe with
the project's defaults, with each measured row's keys alone set to the profile's values, and with the
whole profile (``--profile``); a finished run (its ``results.json``) is reused. A run's folder name ends in
a digest of the values it sets, so changing the profile starts new runs rather than reusing stale ones. Then it renders the
table from the rows (``configs/profiles/fidelity/<profile>.yaml``), the configs (default and profile
values) and the runs' ``results.json`` (CA / BA) into ``docs/FIDELITY.md`` between its markers. Rows
not run yet read "not measured"; ``--render-only`` runs nothing.
"""
import hashlib
import os.path as osp
import time

import yaml

from common import cli, tables
from common.errors import InputError
from configs.defaults import PROFILE_DIR, flat_keys, get_cfg, profile_file
from scripts import quickstart
from trainers.run import Run

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DOC = osp.join(REPO, "docs", "FIDELITY.md")
BEGIN = "<!-- fidelity table: rendered by python -m scripts.fidelity; edit configs/profiles/fidelity/, not here -->"
END = "<!-- end of the fidelity table -->"
COLUMNS = ("behaviour", "paper", "reference code", "each model's own code", "project default", "profile",
           "CA / BA, this alone")


def profile_values(name):
    with open(profile_file(name), encoding="utf-8") as f:
        return flat_keys(yaml.safe_load(f) or {})


def read_rows(name):
    """The table's rows for profile ``name``, each of its keys checked against the profile."""
    path = osp.join(PROFILE_DIR, "fidelity", f"{name}.yaml")
    if not osp.isfile(path):
        raise InputError(f"Profile {name} has no fidelity rows at {path}; write one entry per behaviour there")
    with open(path, encoding="utf-8") as f:
        rows = yaml.safe_load(f) or []
    values = profile_values(name)
    for row in rows:
        unknown = [key for key in row.get("keys", []) if key not in values]
        if unknown:
            raise InputError(f"{path}: row {row['id']} names {', '.join(unknown)}, which profile {name} does not set; "
                             "add the key to the profile or remove it from the row")
    return rows


def measured(row):
    return row.get("measure", True) and bool(row.get("keys"))


def effect_cell(row, values, output_root):
    if not row.get("measure", True):
        return "-"
    return result_cell(output_root, row_run(row, values)[0]) if row.get("keys") else "no setting yet"


def digest(values):
    return hashlib.sha1(repr(sorted(values.items())).encode()).hexdigest()[:8]


def row_run(row, values):
    """(run name, overrides) of a measured row: its keys alone at the profile's values."""
    own = {key: values[key] for key in row["keys"]}
    return f"row-{row['id']}-{digest(own)}", [str(x) for item in own.items() for x in item]


def profile_run(name):
    return f"profile-{name}-{digest(profile_values(name))}"


def runs_of(rows, name, selected=None):
    """``[(run name, profile flag, overrides)]``: the defaults, each measured row, the whole profile."""
    values = profile_values(name)
    runs = [("defaults", "", [])]
    for row in rows:
        if measured(row) and (not selected or row["id"] in selected):
            run_name, overrides = row_run(row, values)
            runs.append((run_name, "", overrides))
    runs.append((profile_run(name), name, []))
    return runs


def baple_arguments(run, args, weights, coop_dir):
    name, profile, overrides = run
    flags = ["--init", coop_dir] + (["--profile", profile] if profile else [])
    return quickstart.run_arguments(name, "BAPLe", args.root, args.output_dir, args.seed, weights, workers=args.workers,
                                    flags=flags, overrides=overrides, extra=quickstart.DEMO_OVERRIDES)


def result_cell(output_root, run_name):
    path = osp.join(output_root, run_name, "results.json")
    if not osp.isfile(path):
        return "not measured"
    results = quickstart.read_results(osp.join(output_root, run_name))
    return f"{results['clean']['accuracy']:.3f} / {results['backdoor']['accuracy']:.3f}"


def setting_text(keys, cfg_values):
    return "<br>".join(f"`{key} {cfg_values[key]}`" for key in keys)


def render_table(rows, name, output_root):
    defaults, values = flat_keys(yaml.safe_load(get_cfg().dump())), profile_values(name)
    cells = []
    for row in rows:
        keys = row.get("keys", [])
        default = setting_text(keys, defaults) if keys else row.get("default", "-")
        profile = setting_text(keys, values) if keys else row.get("profile", "-")
        cells.append([row["behaviour"], row["paper"], row["reference"], row["models"], default, profile,
                      effect_cell(row, values, output_root)])
    cells.append(["**project defaults**", "", "", "", "every default", "", result_cell(output_root, "defaults")])
    cells.append([f"**whole profile** (`--profile {name}`)", "", "", "", "", "every value",
                  result_cell(output_root, profile_run(name))])
    return tables.markdown(cells, COLUMNS)


def write_table(doc, table):
    from dassl_compat.checkpoint import atomic_write_text

    with open(doc, encoding="utf-8") as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        raise InputError(f"{doc} lacks the table markers; put the two lines\n{BEGIN}\n{END}\nwhere the table goes")
    head, rest = text.split(BEGIN, 1)
    atomic_write_text(head + BEGIN + "\n" + table + "\n" + END + rest.split(END, 1)[1], doc)


def main(argv=None):
    parser = cli.parser("python -m scripts.fidelity", __doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="reference", help="the profile (configs/profiles/NAME.yaml)")
    parser.add_argument("--rows", nargs="+", help="measure only these rows (ids; default: every measured row)")
    cli.add_output_dir(parser, default="output/fidelity", help="folder of the runs (default %(default)s)")
    cli.add_root(parser, default="data/quickstart", help="the quickstart's DATASET.ROOT (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--doc", default=DOC, help="the Markdown file to render the table into")
    parser.add_argument("--render-only", action="store_true", help="run nothing; render from the finished runs")
    args = parser.parse_args(argv)
    args.root, args.output_dir = osp.abspath(args.root), osp.abspath(args.output_dir)
    rows = read_rows(args.profile)
    unknown = sorted(set(args.rows or []) - {row["id"] for row in rows if measured(row)})
    if unknown:
        raise InputError(f"--rows {', '.join(unknown)}: not a measured row of profile {args.profile}; choose from "
                         f"{', '.join(row['id'] for row in rows if measured(row))}")
    if not args.render_only:
        quickstart.ensure_dataset(args.root)
        weights = quickstart.demo_weights()
        coop = dict((n, a) for n, _, a in quickstart.plan(args.root, args.output_dir, weights, args.seed,
                                                          workers=args.workers))["coop"]
        coop_dir = osp.join(args.output_dir, "coop")
        todo = [("coop", coop)] + [(run[0], baple_arguments(run, args, weights, coop_dir))
                                   for run in runs_of(rows, args.profile, args.rows)]
        for number, (name, argv_run) in enumerate(todo, start=1):
            if Run.is_run(osp.join(args.output_dir, name)):
                print(f"[{number}/{len(todo)}] {name}: finished before, reused")
                continue
            start = time.time()
            print(f"[{number}/{len(todo)}] {name} ...", end=" ", flush=True)
            quickstart.run_train(argv_run)
            print(f"{time.time() - start:.0f} s", flush=True)
    write_table(args.doc, render_table(rows, args.profile, args.output_dir))
    print(f"Table written to {args.doc}")


run = cli.command(main)  # the console command (setup.py)


if __name__ == "__main__":
    cli.exit_with(main)
