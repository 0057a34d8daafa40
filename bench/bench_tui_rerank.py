"""Benchmark: fmb-tui stays responsive while `a` re-ranks by the labels (issue 14: key latency unchanged).

A synthetic workspace: ``--objects`` objects with ``--dims``-dimensional vectors of one embedding
run, a ranking of its systems, ``--labels`` labels. The explorer opens the Anomalies screen;
the latency of ``j`` (key event -> the next frame written to the terminal) is measured idle,
then while a re-rank runs (``a``), and the time from ``a`` to the active order on screen.

Reference, same run: the same session with the engine's ``rerank`` door called in the worker
thread itself (what the explorer did first), instead of in a child process at a lower priority.

    python bench/bench_tui_rerank.py [--objects 40000] [--dims 768] [--labels 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tui import record_frames  # noqa: E402  (the frame hook the other TUI benchmark uses)

MODEL = "syn"


def make_workspace(root: Path, objects: int, dims: int, labels: int, seed: int = 0):
    """Vectors with a rare cluster (the 'interesting' kind), a ranking of the run's systems, labels by two users."""
    from fmb_engine.embed.store import EmbeddingMeta, write_embeddings
    from fmb_engine.triage.labels import LabelStore
    from fmb_engine.workspace import Workspace
    from fmb_tui.synthetic import write_rankings

    ws = Workspace.init(root)
    rng = np.random.default_rng(seed)
    ids = np.char.add("obj-", np.char.zfill(np.arange(objects).astype(str), 8))
    vectors = rng.normal(size=(objects, dims)).astype(np.float32)
    rare = rng.random(objects) < 0.01
    vectors[rare, : dims // 8] += 3.0
    write_embeddings(ws.folder("embeddings") / f"{MODEL}.h5", ids, {"image": vectors},
                     EmbeddingMeta(MODEL, aligned=False, modalities=("image",)))
    write_rankings(ws, ids, (f"{MODEL}/image/flow", f"{MODEL}/fused/geo"), anomalous=rare, seed=seed)
    picked = rng.choice(objects, size=min(labels, objects), replace=False)
    for user, part in (("ana", picked[::2]), ("bo", picked[1::2])):
        with LabelStore.for_workspace(ws, user=user) as store:
            for i in part:
                store.set_label(str(ids[i]), "interesting" if rare[i] else "normal")
    return ws


async def key_latency(app, key: str = "j", until=None, count: int = 60) -> list[float]:
    """Key event -> next frame, in seconds; ``until()`` true stops early (polls with a real sleep: a busy
    loop would hold the GIL and slow the worker being measured against)."""
    from textual import events

    frames, restore = record_frames(app)
    lat: list[float] = []
    try:
        while len(lat) < count and not (until is not None and until()):
            await asyncio.sleep(0.02)
            n = len(frames)
            event = events.Key(key, key)
            event.set_sender(app)
            t = time.perf_counter()
            app._driver.send_message(event)
            while len(frames) == n and time.perf_counter() - t < 2.0:
                await asyncio.sleep(0.001)
            lat.append(frames[-1] - t if len(frames) > n else 2.0)
    finally:
        restore()
    return lat


def rerank_in_thread(self):
    """The reference: the engine door in the explorer's own process (its worker thread)."""
    from fmb_engine.config import load
    from fmb_engine.discover.run import rerank

    summary = dict(rerank(self.ws, load("discover", self.ws)).summary)
    data, system = self.open_ranking(summary["system"])
    rows = data.rows_of([str(summary["best_unlabelled"])])
    return summary, (data, system), int(rows[0]) if len(rows) else None


async def run(ws) -> dict[str, object]:
    from textual import events

    from fmb_engine.config.tui import TuiConfig
    from fmb_tui.app import FMBApp
    from fmb_tui.widgets.ranking_table import RankingTable

    app = FMBApp(ws, TuiConfig(preview=False), start="anomalies")
    out: dict[str, object] = {}
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        while screen.rdata is None or not app.labels_loaded or not all(screen.rdata.loaded(s) for s in screen.rdata.systems):
            await asyncio.sleep(0.01)
        await app.workers.wait_for_complete()
        await pilot.pause()
        out["idle"] = await key_latency(app)
        event = events.Key("a", "a")
        event.set_sender(app)
        t0 = time.perf_counter()
        app._driver.send_message(event)
        while screen._rerank_started is None:
            await asyncio.sleep(0.001)
        out["during"] = await key_latency(app, until=lambda: screen._rerank_started is None, count=10_000)
        while screen.spec.system != f"{MODEL}/image/active" or not screen.query_one(RankingTable).n_rows:
            await asyncio.sleep(0.005)
        out["rerank"] = time.perf_counter() - t0
        await app.workers.wait_for_complete()
        await pilot.pause()
        out["after"] = await key_latency(app)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=40_000)
    parser.add_argument("--dims", type=int, default=768)
    parser.add_argument("--labels", type=int, default=200)
    args = parser.parse_args()
    os.environ.pop("FMB_WORKSPACE", None)
    from fmb_tui.data import WorkspaceData

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        ws = make_workspace(Path(tmp) / "ws", args.objects, args.dims, args.labels)
        made = time.perf_counter() - t
        out = asyncio.run(run(ws))
        child = WorkspaceData.rerank
        WorkspaceData.rerank = rerank_in_thread
        try:
            ref = asyncio.run(run(ws))
        finally:
            WorkspaceData.rerank = child

    def ms(values) -> str:
        return (f"median {statistics.median(values) * 1000:5.1f} ms, p95 {np.percentile(values, 95) * 1000:5.1f} ms, "
                f"max {max(values) * 1000:5.1f} ms ({len(values)} keys)")

    print(f"machine        {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; textual {__import__('textual').__version__}")
    print(f"workspace      {args.objects:,} objects x {args.dims} dims, {args.labels} labels (made in {made:.1f} s)")
    for name, res in (("child process", out), ("reference: in the worker thread", ref)):
        print(f"{name}")
        print(f"  key 'j' idle    {ms(res['idle'])}")
        print(f"    during        {ms(res['during'])}  (while the re-rank runs)")
        print(f"    after         {ms(res['after'])}")
        print(f"  re-rank         {res['rerank']:.2f} s from 'a' to the active order on screen (engine, reload, cursor)")


if __name__ == "__main__":
    main()
