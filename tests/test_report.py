"""``scripts.report`` on tiny stand-in runs (``results.json`` files only: the report reads no checkpoint):
a run tested with another run's trigger, ``--by`` a run folder, ``--paper``'s missing numbers and the
three outputs' form."""
import csv
import json
import os
import shutil

import pytest

from helpers_runs import markdown_rows
from scripts import report


def write_run(folder, trainer, attack, ca, ba=None, backbone="biomedclip", eval_trigger="", seed=1):
    os.makedirs(folder)
    backdoor = None if ba is None else {"accuracy": ba, "asr_non_target": ba}
    config = {"SEED": seed, "OUTPUT_DIR": str(folder),
              "BACKDOOR": {"TARGET_CLASS": 0, "EVAL_TRIGGER": str(eval_trigger)}}
    with open(folder / "results.json", "w") as f:
        json.dump({"trainer": trainer, "attack": attack, "backbone": backbone, "dataset": "Covid",
                   "clean": {"accuracy": ca}, "backdoor": backdoor, "config": config}, f)


@pytest.fixture
def quickstart_like(tmp_path):
    """The quickstart's layout: CoOp, BAPLe, and CoOp (eval-only) tested with BAPLe's trigger."""
    root = tmp_path / "quickstart"
    write_run(root / "coop", "CoOp", "none", 0.7)
    write_run(root / "baple", "BAPLe", "baple", 0.8, 0.9)
    write_run(root / "coop_under_baple", "CoOp", "none", 0.7, 0.353, eval_trigger=root / "baple")
    return root


def test_a_run_tested_with_another_runs_trigger_has_its_own_row_named_by_both_methods(quickstart_like):
    _, text = report.report(str(quickstart_like))
    rows = markdown_rows(text)
    assert ["Clean_PL", ".700/-"] in rows
    assert ["Clean_PL, BAPLe's trigger", ".700/.353"] in rows
    assert ["BAPLe", ".800/.900"] in rows
    assert not any("n=2" in cell for row in rows for cell in row)  # nothing merged
    labels = [row[0] for row in rows if row[0] != "method" and not set(row[0]) <= set("-:")]
    assert labels[:3] == ["Clean_PL", "Clean_PL, BAPLe's trigger", "BAPLe"]  # the plain run first


def test_by_eval_trigger_names_the_lender_run_not_its_path(quickstart_like):
    paths, text = report.report(str(quickstart_like), by=["BACKDOOR.EVAL_TRIGGER"])
    rows = markdown_rows(text)
    assert ["Clean_PL (EVAL_TRIGGER=own)", ".700/-"] in rows
    assert ["Clean_PL, BAPLe's trigger (EVAL_TRIGGER=BAPLe)", ".700/.353"] in rows
    table = "\n".join(" | ".join(row) for row in rows)
    assert str(quickstart_like) not in table and "coop_under_baple" not in table
    for kind in ("csv", "tex"):
        assert str(quickstart_like) not in open(paths[kind]).read()


def test_paper_marks_the_cells_without_a_published_number(quickstart_like):
    write_run(quickstart_like / "coop_clip", "CoOp", "none", 0.6, backbone="clip")  # the paper has no CLIP column
    paths, text = report.report(str(quickstart_like), with_paper=True)
    rows = markdown_rows(text)
    plain_row = next(row for row in rows if row[0] == "Clean_PL")
    assert ".700/- (paper .843/-)" in plain_row and ".600/- *" in plain_row
    lender_row = next(row for row in rows if row[0] == "Clean_PL, BAPLe's trigger")
    assert ".700/.353 *" in lender_row  # the paper tests each method with its own trigger only
    note = next(line for line in text.splitlines() if line.startswith("* No published number:"))
    assert "Clean_PL, BAPLe's trigger on" in note and "Clean_PL on" in note and "BAPLe on" not in note
    assert "{\\footnotesize * No published number: Clean\\_PL on" in open(paths["tex"]).read()


def test_latex_is_complete_tables_and_csv_columns_are_unique(quickstart_like):
    paths, text = report.report(str(quickstart_like), with_paper=True)
    tex = open(paths["tex"]).read()
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") == text.count("\n## ") == 4
    assert tex.count(r"\caption{") == 4 and r"\label{tab:ca-ba}" in tex and r"\label{tab:asr}" in tex
    first = tex[tex.index(r"\begin{table}"):tex.index(r"\end{table}")]
    assert first.index(r"\caption{") < first.index(r"\begin{tabular}") < first.index(r"\bottomrule")
    assert r"Clean\_PL, BAPLe's trigger" in tex and r"$\pm$" in tex  # escaped in tabular and caption

    with open(paths["csv"], newline="") as f:
        lines = list(csv.reader(f))
    header, body = lines[0], lines[1:]
    assert len(set(header)) == len(header)
    columns = [column for column in zip(*body) if any(column)]  # (no --by: the split column is empty)
    assert len(set(columns)) == len(columns)  # no column repeats another
    record = dict(zip(header, next(line for line in body if line[1] == "BAPLe" and line[5] == "ba")))
    assert record["method"] == "Clean_PL" and record["mean"] == ".353"  # the table's number format
    assert record["paper"] == ""


def test_the_progress_bar_goes_to_stderr_and_the_table_to_stdout(quickstart_like, capsys):
    assert report.main([str(quickstart_like)]) == 0
    captured = capsys.readouterr()
    assert "reading runs" in captured.err and "3/3" in captured.err
    assert "reading runs" not in captured.out and "| Clean_PL, BAPLe's trigger" in captured.out


def test_a_lender_run_that_is_gone_is_named_without_its_path_and_warned_about(quickstart_like, capsys):
    shutil.rmtree(quickstart_like / "baple")
    _, text = report.report(str(quickstart_like))
    assert ["Clean_PL, another run's trigger", ".700/.353"] in markdown_rows(text)
    assert "was tested with the trigger of" in capsys.readouterr().err
