"""fmb_tui.discovery without an app: the labels an order reflects, rebuilt from the history; the line; auto mode."""

from fmb_engine.discover.run import labels_digest
from fmb_engine.triage.labels import LabelStore
from fmb_tui.discovery import ActiveState, auto_due, changed, describe, is_active, labels_at, latest_record


def test_labels_at_a_version_are_rebuilt_from_the_history(tmp_path):
    path = tmp_path / "labels.sqlite"
    with LabelStore(path, user="ana") as ana, LabelStore(path, user="bo") as bo:
        ana.set_label("a", "lens")
        bo.set_label("b", "artefact")
        then, version = ana.labels(), ana.data_version()
        ana.set_label("a", "merger")  # changed
        ana.set_label("c", "AGN")  # new
        bo.set_label("b", None)  # cleared
        bo.set_label("d", "normal")
        bo.undo()  # d: set and undone: as it was
        now = ana.labels()
        rebuilt = labels_at(now, ana.history(), version)
    assert rebuilt == then == {"a": "lens", "b": "artefact"}
    assert labels_digest(rebuilt) == labels_digest(then)
    assert changed(rebuilt, now) == 3  # a, b, c; not d
    assert labels_at(now, [], version) == now


def test_describe_says_strategy_labels_users_and_staleness():
    record = {"strategy": "evidence", "labels": 18, "labels_total": 20, "users": {"bob": 5, "alice": 15},
              "base": "cca/fused/fisher", "notes": ["only one kind of label: ranked by distance"]}
    fresh = describe(ActiveState("cca/fused/active", record, 0, "d"))
    assert fresh.startswith("evidence · 20 labels (alice 15, bob 5) · 18 used · up to date · base cca/fused/fisher")
    assert fresh.endswith("note: only one kind of label: ranked by distance")
    stale = describe(ActiveState("cca/fused/active", record, 1, "d"), rerank_key="ctrl+r")
    assert "stale: 1 label since (ctrl+r re-ranks)" in stale
    # a record written by hand or another version: said, never raised
    odd = describe(ActiveState("x/image/active", {"strategy": None, "labels": "many", "users": ["x"], "notes": "one"}, 2, "d"))
    assert odd.startswith("? · 0 labels") and "stale: 2 labels since" in odd
    assert "no record" in describe(ActiveState("x/image/active", None, 3, "d"))
    assert describe(ActiveState(None, None, 0, "d", problem="bad setting")) == "active order: bad setting"


def test_auto_mode_needs_enough_new_labels_once_per_label_state():
    state = ActiveState("m/fused/active", {}, 3, "digest-1", auto_every=3)
    assert auto_due(state, tried=None)
    assert not auto_due(state, tried="digest-1")  # already tried for these labels
    assert not auto_due(ActiveState("m/fused/active", {}, 2, "digest-2", auto_every=3), None)
    assert not auto_due(ActiveState("m/fused/active", {}, 9, "digest-2", auto_every=0), None)  # off
    assert not auto_due(ActiveState(None, None, 9, "digest-2", auto_every=1, problem="bad"), None)


def test_active_systems_and_the_latest_record():
    assert is_active("cca/fused/active") and not is_active("cca/fused/geo") and not is_active(None)
    assert latest_record({}) == (None, None)
    name, record = latest_record({"a/image/active": {"time": "2026-12-01T10:00:00"},
                                  "b/fused/active": {"time": "2026-12-03T09:00:00"}, "c/x/active": "garbage"})
    assert name == "b/fused/active" and record["time"].startswith("2026-12-03")
