"""`fmb-engine triage summary | export`: labels given in the TUI, read from scripts."""

from __future__ import annotations

import csv

from typer.testing import CliRunner

from fmb_engine.cli.main import app
from fmb_engine.errors import DataError
from fmb_engine.triage.labels import LabelStore


def test_summary_and_export(workspace, tmp_path):
    with LabelStore.for_workspace(workspace, user="ana") as store:
        store.set_label("a", "lens", system="cca/fused/fisher", rank=1)
        store.set_label("b", "artefact")
        store.set_label("c", "lens")
        store.set_label("c", "merger")  # changed: current is merger, history keeps both
    runner = CliRunner()
    out = runner.invoke(app, ["triage", "summary", "--workspace", str(workspace.root)])
    assert out.exit_code == 0, out.output
    assert "lens" in out.output and "merger" in out.output and "4 changes by ana" in out.output

    current = tmp_path / "labels.csv"
    assert runner.invoke(app, ["triage", "export", str(current), "-l", "lens", "-l", "merger",
                               "--workspace", str(workspace.root)]).exit_code == 0
    rows = list(csv.DictReader(current.open()))
    assert {(r["object_id"], r["label"]) for r in rows} == {("a", "lens"), ("c", "merger")}

    history = tmp_path / "history.csv"
    assert runner.invoke(app, ["triage", "export", str(history), "--history", "--workspace", str(workspace.root)]).exit_code == 0
    events = list(csv.DictReader(history.open()))
    assert [e["value"] for e in events if e["object_id"] == "c"] == ["lens", "merger"]
    assert events[0]["system"] == "cca/fused/fisher" and events[0]["rank"] == "1"


def test_no_labels_yet_is_a_clear_error(workspace):
    result = CliRunner().invoke(app, ["triage", "summary", "--workspace", str(workspace.root)])
    assert isinstance(result.exception, DataError) and "no labels yet" in str(result.exception)


def test_export_of_an_unknown_label_is_an_error_and_writes_nothing(workspace, tmp_path):
    with LabelStore.for_workspace(workspace, user="ana") as store:
        store.set_label("a", "lens")
    out = tmp_path / "labels.csv"
    result = CliRunner().invoke(app, ["triage", "export", str(out), "-l", "lnes", "--workspace", str(workspace.root)])
    assert isinstance(result.exception, DataError)
    message = str(result.exception)
    assert "'lnes'" in message and "lens" in message and "interesting" in message  # given + configured labels
    assert result.exception.exit_code == 1 and not out.exists()
    # a configured label nobody has used yet is known: an empty (header-only) export is the right answer
    assert CliRunner().invoke(app, ["triage", "export", str(out), "-l", "interesting",
                                    "--workspace", str(workspace.root)]).exit_code == 0
    assert out.read_text().splitlines() == ["object_id,label,note,label_user,label_time,note_user,note_time"]
