"""The `tui` config section."""

import pytest

from fmb_engine.config import load
from fmb_engine.errors import ConfigError
from fmb_engine.config.tui import DEFAULT_LABELS, TuiConfig


def test_defaults():
    cfg = TuiConfig()
    assert cfg.labels == list(DEFAULT_LABELS) == ["artefact", "interesting", "AGN", "lens", "merger", "normal", "skip"]
    assert cfg.keymap == {} and cfg.top_k == 100 and cfg.label_journal == "wal"


def test_layers_and_provenance(workspace):
    workspace.config_file.write_text("tui:\n  labels: [junk, keep]\n  keymap: {triage.next: 'down, n'}\n")
    resolved = load("tui", workspace)
    assert resolved.values.labels == ["junk", "keep"]
    assert resolved.values.keymap == {"triage.next": "down,n"}
    assert resolved.sources["labels"] == str(workspace.config_file)
    assert resolved.sources["top_k"] == "default"


@pytest.mark.parametrize(
    "body, message",
    [
        ("labels: [a, b, A]", "unique"),
        ("labels: [a, b, c, d, e, f, g, h, i, j]", "1 to 9"),
        ("labels: ['two words']", "one word"),
        ("keymap: {triage.next: 'j k'}", "separated by commas"),
        ("top_k: 0", "greater than or equal to 1"),
        ("lables: [a]", "Did you mean 'labels'"),
    ],
)
def test_invalid_values_name_the_file_and_the_problem(workspace, body, message):
    workspace.config_file.write_text(f"tui:\n  {body}\n")
    with pytest.raises(ConfigError, match=message):
        load("tui", workspace)
