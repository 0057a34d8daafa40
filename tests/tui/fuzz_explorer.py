"""A seeded random explorer of fmb-tui: long key sequences on every screen of a workspace holding every kind of record.

Used by ``test_fuzz.py`` (a short run in the default suite) and ``bench/fuzz_tui.py`` (many
seeds, long sequences). A run fails on any exception -- also one the app caught, logged
and notified (:class:`fmb_tui.error_log.ErrorLog`) -- and names its seed, so
``FMB_FUZZ_SEED=<seed>`` replays it.
"""

from __future__ import annotations

import json
import random
import sqlite3
import string
import time
from dataclasses import dataclass, field
from pathlib import Path

from textual import events

from fmb_engine.jobs.registry import JobRecord, RunRecord, open_registry
from fmb_engine.jobs.states import State
from fmb_engine.triage.labels import LabelStore
from fmb_engine.workspace import Workspace, atomic_write_text

#: every key the explorer presses ("q" and ctrl+c are left out: they end the session; the palette can still quit)
NAMED_KEYS = ("up", "down", "left", "right", "enter", "escape", "tab", "shift+tab", "ctrl+p", "pageup", "pagedown",
              "home", "end", "backspace", "space", "question_mark", "slash", "colon", "plus", "minus", "ctrl+r",
              "ctrl+u", "ctrl+d", "f1")
PRINTABLE = [c for c in string.ascii_letters + string.digits if c != "q"] + ["[", "]", "/", "\\"]
SCREEN_KEYS = ("W", "R", "J", "A", "C", "F")

MARKUP_TEXT = "[/] [b]bold [ERROR] \\[x] [@click=app.quit]q[/]"


def _manifest(root: Path, name: str, payload) -> None:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    atomic_write_text(root / "runs" / f"{name}.json", text)


def add_odd_records(ws: Workspace) -> None:
    """Run manifests of every stage and status, and broken ones; jobs in every state; labels by several people."""
    base = {"command": ["fmb-engine"], "config": {"values": {"seed": 1}, "sources": {"seed": "fmb.yaml"}},
            "counts": {"objects": 120}, "timings_s": {"total": 1.5}, "outputs": {"x": "scores/x.parquet"}}
    records = {
        "20260101T000001-detect-aaaaaa": base | {"run_id": "r1", "stage": "detect.flows+mismatch+fuse", "status": "completed",
                                                 "started": "2026-01-01T00:00:01", "dropped": {"cca:invalid": 2},
                                                 "warnings": ["few objects", MARKUP_TEXT]},
        "20260101T000002-retrain-bbbbbb": base | {"run_id": "r2", "stage": "retrain.astropt", "status": "failed",
                                                  "error": "RuntimeError: [Errno 2] no such file"},
        "20260101T000003-embed-cccccc": base | {"run_id": "r3", "stage": "embed.pca", "status": "interrupted"},
        "20260101T000004-weird-dddddd": {"run_id": None, "stage": None, "status": None, "started": None, "config": None,
                                         "counts": None, "timings_s": None, "warnings": None},
        "20260101T000005-types-eeeeee": {"run_id": 5, "stage": ["x"], "status": "queued?", "started": 1.5,
                                         "config": {"values": [1, 2], "sources": "cli"}, "counts": [1, 2],
                                         "dropped": ["a"], "outputs": "one path", "timings_s": 3.0, "warnings": "one"},
        "20260101T000006-markup-ffffff": {"run_id": MARKUP_TEXT, "stage": MARKUP_TEXT, "status": MARKUP_TEXT,
                                          "config": {"values": {MARKUP_TEXT: MARKUP_TEXT}, "sources": {MARKUP_TEXT: MARKUP_TEXT}},
                                          "outputs": {MARKUP_TEXT: "x" * 500}},
        "20260101T000007-list-gggggg": [1, 2, 3],
        "20260101T000008-truncated-hhhhhh": '{"run_id": "cut',
        "20260101T000009-empty-iiiiii": {},
    }
    for name, payload in records.items():
        _manifest(ws.root, name, payload)
    (ws.root / "runs" / "20260101T000010-binary-jjjjjj.json").write_bytes(b"\xff\xfe\x00garbage")

    now = time.time()
    with open_registry(ws) as reg:
        for i, state in enumerate(State):
            run_id = f"20260101T0001{i:02d}-fuzz-{state.value.lower()[:6]}"
            executor = "slurm" if state in (State.PENDING, State.RUNNING) else "debug"
            reg.add_run(RunRecord(run_id, f"fuzz.{state.value.lower()}", executor, str(ws.folder("jobs") / run_id),
                                  params={"note": MARKUP_TEXT}),
                        [JobRecord(run_id, f"{1000 + i}", state=state, submitted=now - 60 * i,
                                   started=now - 30 * i if state != State.PENDING else None,
                                   reason=MARKUP_TEXT if state == State.PENDING else None,
                                   error=MARKUP_TEXT if state == State.FAILED else None,
                                   stdout=str(ws.root / "missing.out"), node="node[01-02]")])
    # a state this version does not know (written by a newer fmb or by hand)
    con = sqlite3.connect(ws.folder("jobs") / "registry.sqlite")
    with con:
        con.execute("UPDATE jobs SET state = 'SUSPENDED_BY_ADMIN' WHERE job_id = ?", (f"{1000 + list(State).index(State.UNKNOWN)}",))
    con.close()

    add_active_systems(ws)
    ids = _object_ids(ws)
    for user, label, note in (("ana", "interesting", None), ("bo", "AGN", MARKUP_TEXT), ("chen", "artefact", "see [/]")):
        with LabelStore.for_workspace(ws, user=user) as store:
            for oid in ids[: 5]:
                store.set_label(oid, label)
                if note:
                    store.set_note(oid, note)
            ids = ids[3:]


def add_active_systems(ws: Workspace) -> None:
    """Two re-ranked (active) systems, one of them shown first: a record with markup in every text and a
    malformed one; auto mode on (the re-rank itself fails here: no embeddings, so auto mode pauses)."""
    import numpy as np
    import pyarrow.parquet as pq

    from fmb_engine.detect.tables import rank_descending
    from fmb_engine.discover.run import write_active
    from fmb_engine.rankings import systems_path

    ids = np.asarray(pq.read_table(systems_path(ws), columns=["object_id"]).column(0).to_pylist(), dtype=str)
    score = np.random.default_rng(7).normal(size=ids.size)
    write_active(ws, "astropt/fused/active", ids, score, rank_descending,
                 {"strategy": MARKUP_TEXT, "labels": 3, "labels_total": 4, "labels_digest": "0" * 64,
                  "label_version": 2, "users": {MARKUP_TEXT: 3, "bo": 1}, "base": MARKUP_TEXT, "time": "2026-01-01",
                  "notes": [MARKUP_TEXT]})
    write_active(ws, "aion/image/active", ids[: ids.size // 2], score[: ids.size // 2], rank_descending,
                 {"strategy": None, "labels": "many", "users": ["x"], "label_version": "?", "notes": "one"})
    with (ws.root / "fmb.yaml").open("a", encoding="utf-8") as fh:
        fh.write("tui:\n  system: astropt/fused/active\ndiscover:\n  auto_every: 2\n")


def _object_ids(ws: Workspace) -> list[str]:
    import pyarrow.parquet as pq

    from fmb_engine.rankings import systems_path

    return [str(x) for x in pq.read_table(systems_path(ws), columns=["object_id"]).column(0).to_pylist()[:40]]


@dataclass
class Finding:
    seed: int
    screen: str
    keys: list[str]
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"fuzz seed {self.seed} (replay: FMB_FUZZ_SEED={self.seed}) on screen {self.screen} after "
                f"{len(self.keys)} keys, last {self.keys[-12:]}:\n" + "\n".join(self.errors))


def key_sequence(rng: random.Random, steps: int) -> list[str]:
    """Random keys with repeats: a screen switch now and then, bursts of one key (fast scrolling)."""
    keys: list[str] = []
    while len(keys) < steps:
        r = rng.random()
        if r < 0.08:
            keys.append(rng.choice(SCREEN_KEYS))
        elif r < 0.25:
            keys.extend([rng.choice(("up", "down", "pagedown", "j", "k", "left", "right"))] * rng.randint(3, 25))
        elif r < 0.6:
            keys.append(rng.choice(NAMED_KEYS))
        else:
            keys.append(rng.choice(PRINTABLE))
    return keys[:steps]


def _key_event(key: str) -> events.Key:
    from textual.keys import _character_to_key

    if len(key) == 1:
        return events.Key(_character_to_key(key), key)
    return events.Key(key, {"space": " ", "question_mark": "?", "slash": "/", "colon": ":", "plus": "+",
                             "minus": "-", "enter": "\r", "tab": "\t"}.get(key))


async def explore(root: Path, seed: int, steps: int, size: tuple[int, int] = (80, 24)) -> Finding | None:
    """Drive one app session with ``steps`` random keys from a random first screen; a Finding on any error."""
    from fmb_tui.app import SCREENS, FMBApp

    rng = random.Random(seed)
    start = rng.choice(SCREENS)
    keys = key_sequence(rng, steps)
    app = FMBApp(Workspace(root), start=start)
    pressed: list[str] = []
    problem: Exception | None = None
    try:
        async with app.run_test(size=size) as pilot:
            await pilot.pause(0.05)
            i = 0
            while i < len(keys) and app.is_running and not app._exit:
                if rng.random() < 0.3:  # a burst straight into the queue, as a fast typist or key repeat would
                    burst = keys[i:i + rng.randint(2, 8)]
                    for key in burst:
                        app.post_message(_key_event(key))
                    pressed.extend(burst)
                    i += len(burst)
                    await pilot.pause()
                else:
                    await pilot.press(keys[i])
                    pressed.append(keys[i])
                    i += 1
                if rng.random() < 0.05:
                    await pilot.pause(0.05)  # let background work finish now and then
            await pilot.pause(0.1)
            try:
                await app.workers.wait_for_complete()
            except Exception:  # noqa: BLE001 - a failed worker is in the error log, checked below
                pass
            app.label_writer.drain(10.0)
    except Exception as exc:  # noqa: BLE001 - what escaped the app is a finding too
        problem = exc
    errors = []
    if problem is not None:
        errors.append(f"escaped the app: {type(problem).__name__}: {problem}")
    if app.error_log.count:
        log = app.error_log.path.read_text(encoding="utf-8") if app.error_log.path.is_file() else "(no log file)"
        errors.append(f"{app.error_log.count} internal error(s); {app.error_log.path}:\n{log[-6000:]}")
    if errors:
        return Finding(seed, start, pressed, errors)
    return None
