"""scripts/fidelity.py: the runs it plans and the table it renders into docs/FIDELITY.md."""
import json
import os

import pytest

from common.errors import InputError
from helpers_runs import markdown_rows
from scripts import fidelity


def write_results(folder, ca, ba):
    os.makedirs(folder)
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump({"clean": {"accuracy": ca}, "backdoor": {"accuracy": ba}, "config": {}}, f)


def test_the_runs_are_the_defaults_each_measured_row_alone_and_the_whole_profile():
    rows = fidelity.read_rows("reference")
    runs = fidelity.runs_of(rows, "reference")
    values = fidelity.profile_values("reference")
    assert runs[0] == ("defaults", "", []) and runs[-1] == (fidelity.profile_run("reference"), "reference", [])
    alone = {name.rsplit("-", 1)[0]: overrides for name, _, overrides in runs[1:-1]}
    assert alone["row-order"] == ["BACKDOOR.ORDER", "patch_then_noise"]
    assert alone["row-precision"] == ["TRAINER.PREC", values["TRAINER.PREC"]]
    assert "row-context-files" not in alone  # measure: false
    assert [name.rsplit("-", 1)[0] for name, _, _ in fidelity.runs_of(rows, "reference", {"order"})][1:] == [
        "row-order", "profile-reference"]


def test_a_changed_profile_value_names_a_new_run():
    row = {"id": "order", "keys": ["BACKDOOR.ORDER"]}
    first = fidelity.row_run(row, {"BACKDOOR.ORDER": "patch_then_noise", "TRAINER.PREC": "fp16"})[0]
    assert first == fidelity.row_run(row, {"BACKDOOR.ORDER": "patch_then_noise"})[0]  # only its own keys count
    assert first != fidelity.row_run(row, {"BACKDOOR.ORDER": "noise_then_patch"})[0]


def test_the_table_shows_the_measured_runs_and_keeps_the_rest_of_the_doc(tmp_path):
    rows = fidelity.read_rows("reference")
    order = next(row for row in rows if row["id"] == "order")
    write_results(tmp_path / "runs" / fidelity.row_run(order, fidelity.profile_values("reference"))[0], 0.9125, 0.5)
    write_results(tmp_path / "runs" / fidelity.profile_run("reference"), 0.8, 0.75)
    doc = tmp_path / "FIDELITY.md"
    doc.write_text(f"intro\n{fidelity.BEGIN}\nold table\n{fidelity.END}\noutro\n")
    fidelity.write_table(str(doc), fidelity.render_table(rows, "reference", str(tmp_path / "runs")))
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{fidelity.END}\noutro\n") and "old table" not in text
    table = markdown_rows(text)
    order = next(row for row in table if row[0] == "Trigger order")
    assert "`BACKDOOR.ORDER noise_then_patch`" in order and "`BACKDOOR.ORDER patch_then_noise`" in order
    assert order[-1] == "0.912 / 0.500"
    assert next(row for row in table if row[0] == "**project defaults**")[-1] == "not measured"
    assert table[-1][-1] == "0.800 / 0.750"  # the whole profile's row


def test_a_row_naming_a_key_the_profile_does_not_set_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "fidelity").mkdir()
    (tmp_path / "p.yaml").write_text("BACKDOOR:\n  ORDER: patch_then_noise\n")
    (tmp_path / "fidelity" / "p.yaml").write_text(
        "- {id: grad, behaviour: b, paper: p, reference: r, models: m, keys: [BACKDOOR.NOISE_GRAD]}\n")
    monkeypatch.setattr(fidelity, "PROFILE_DIR", str(tmp_path))
    monkeypatch.setattr("configs.defaults.PROFILE_DIR", str(tmp_path))
    with pytest.raises(InputError, match="row grad names BACKDOOR.NOISE_GRAD, which profile p does not set"):
        fidelity.read_rows("p")
