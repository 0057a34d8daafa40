"""The label store: append-only history, undo, concurrent writers, export."""

from __future__ import annotations

import csv
import multiprocessing as mp
import sqlite3
import threading

import pytest

from fmb_engine.triage.labels import LabelStore, TriageError, labels_path, open_labels


@pytest.fixture
def store(workspace):
    with LabelStore.for_workspace(workspace, user="ana") as s:
        yield s


def test_labels_are_committed_with_user_time_and_context(workspace, store):
    ev = store.set_label("obj-1", "lens", system="astropt/fused/geo", rank=3)
    assert ev.user == "ana" and ev.previous is None and ev.rank == 3
    # another connection sees it at once: it is on disk
    with LabelStore.for_workspace(workspace, user="bob") as other:
        cur = other.get("obj-1")
        assert cur.label == "lens" and cur.label_user == "ana" and cur.label_time > 0
    assert labels_path(workspace).is_file()


def test_relabel_clear_and_note_keep_a_full_history(store):
    store.set_label("o", "lens")
    store.set_label("o", "merger")
    store.set_note("o", "  arc to the left  ")
    store.set_label("o", None)
    assert store.get("o").label is None and store.get("o").note == "arc to the left"
    hist = store.history("o")
    assert [(e.field, e.value, e.previous) for e in hist] == [
        ("label", "lens", None), ("label", "merger", "lens"), ("note", "arc to the left", None), ("label", None, "merger")]
    assert store.labels() == {} and store.notes() == {"o": "arc to the left"}


def test_history_is_append_only(store):
    store.set_label("o", "lens")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store._db.execute("UPDATE events SET value = 'x'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store._db.execute("DELETE FROM events")


def test_undo_reverts_this_sessions_changes_in_order(store):
    store.set_label("a", "lens")
    store.set_label("b", "AGN")
    store.set_label("a", "merger")
    ev = store.undo()
    assert ev.object_id == "a" and ev.value == "lens" and ev.undoes is not None
    assert store.undo().object_id == "b"
    assert store.labels() == {"a": "lens"}
    assert store.undo().value is None
    assert store.undo() is None  # nothing left
    assert store.labels() == {}
    assert len(store.history()) == 6  # undos are events too


def test_undo_refuses_when_someone_else_changed_it_since(workspace, store):
    store.set_label("a", "lens")
    with LabelStore.for_workspace(workspace, user="bob") as bob:
        bob.set_label("a", "artefact")
        assert bob.undo().value == "lens"  # bob may undo his own
        bob.set_label("a", "artefact")
    with pytest.raises(TriageError, match="bob changed it since"):
        store.undo()
    assert store.get("a").label == "artefact"


def test_rebuild_current_agrees_with_the_incremental_table(store):
    for i in range(30):
        store.set_label(f"o{i % 7}", ["lens", "AGN", None][i % 3])
        if i % 4 == 0:
            store.set_note(f"o{i % 5}", f"note {i}")
        if i % 6 == 0:
            store.undo()
    before = store.current()
    store.rebuild_current()
    assert store.current() == before


def test_invalid_input_is_a_clear_error(store):
    with pytest.raises(TriageError, match="invalid label"):
        store.set_label("o", "two,words")
    with pytest.raises(TriageError, match="empty object_id"):
        store.set_label(" ", "lens")
    with pytest.raises(TriageError, match="too long"):
        store.set_note("o", "x" * 5000)


def test_a_newer_schema_is_refused(workspace):
    path = labels_path(workspace)
    LabelStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(TriageError, match="schema version 99"):
        LabelStore(path)


def test_concurrent_writers_in_threads_lose_nothing(workspace):
    def worker(user: str) -> None:
        with LabelStore.for_workspace(workspace, user=user) as s:
            for i in range(40):
                s.set_label(f"{user}-{i}", "lens")
                s.set_label("shared", user)

    threads = [threading.Thread(target=worker, args=(u,)) for u in ("ana", "bob", "cyd")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with open_labels(workspace) as s:
        assert len(s.labels()) == 121
        hist = s.history("shared")
        assert len(hist) == 120
        # every change saw the value the previous one wrote (no lost update)
        assert all(b.previous == a.value for a, b in zip(hist, hist[1:], strict=False))


def _proc_writer(root: str, user: str, n: int) -> None:
    from pathlib import Path

    from fmb_engine.triage.labels import LabelStore
    from fmb_engine.workspace import Workspace

    with LabelStore.for_workspace(Workspace(Path(root)), user=user) as s:
        for i in range(n):
            s.set_label(f"{user}-{i}", "AGN")


def test_concurrent_writer_processes(workspace):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_proc_writer, args=(str(workspace.root), u, 25)) for u in ("p1", "p2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with open_labels(workspace) as s:
        assert len(s.labels()) == 50
        assert {e.user for e in s.history()} == {"p1", "p2"}


def test_export_csv_current_and_history(workspace, store, tmp_path):
    store.set_label("b", "lens")
    store.set_label("a", "interesting")
    store.set_note("a", "look, a ring")
    store.set_label("c", "lens")
    store.set_label("c", None)
    out = store.export_csv(tmp_path / "labels.csv")
    rows = list(csv.DictReader(out.open()))
    assert [(r["object_id"], r["label"], r["note"]) for r in rows] == [("a", "interesting", "look, a ring"), ("b", "lens", "")]
    assert rows[0]["label_user"] == "ana" and rows[0]["label_time"].startswith("20")
    only = list(csv.DictReader(store.export_csv(tmp_path / "lens.csv", labels=["lens"]).open()))
    assert [r["object_id"] for r in only] == ["b"]
    hist = list(csv.DictReader(store.export_csv(tmp_path / "h.csv", history=True).open()))
    assert len(hist) == 5 and hist[-1]["previous"] == "lens"


def test_delete_journal_for_filesystems_without_shared_memory(workspace):
    with LabelStore.for_workspace(workspace, journal="delete") as s:
        assert s.journal == "delete"
        s.set_label("o", "lens")
        assert s.labels() == {"o": "lens"}
