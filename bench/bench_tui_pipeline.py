"""Benchmark: fmb-tui on the output of the pipeline itself (issue 15: the explorer on real scale).

``bench/bench_tui.py`` opens a ranking file written by ``fmb_tui.synthetic``; this one opens what
``fmb-engine embed synthetic`` -> ``detect all`` (-> ``analyze rankings``) wrote, e.g. at 10^6
objects: the systems table with its provenance, the run manifests, a survey-free embedding file
(so no preview can exist: the screens must say so), the comparison matrices when present.
Same targets as today (docs/benchmarks.md "Terminal explorer"): cold start to the first screen
<= 1.5 s, open the ranking <= 1 s, a key while scrolling p95 <= 50 ms.

The workspace is not modified: its outputs are linked into a scratch workspace, where the
labels set by the benchmark land. Measured, each with the CPU time of the process (all its
threads) next to the wall time and the 1-minute load average:

* cold start (fresh interpreter, headless) to the first screen, and to the overview read;
* every screen's first open (key event -> the next frame; then until its workers are done);
* the ranking: `A` -> the frame with rows, then every system's columns; `j` and page keys
  (key event -> frame) with the preview on, as a user has it; `m` (system chooser) and the
  switch to another system; a re-sort of every row; a label key -> frame and -> committed;
  `enter` -> the Object screen.

References, same run: a minimal Textual app's cold start; a Textual ``DataTable`` holding a
slice of the same rows (its load scaled to every row, and its key latency), as bench_tui.py; and
the ranking file bench_tui.py writes (``fmb_tui.synthetic``), same rows and systems: open and `j`.

    python bench/bench_tui_pipeline.py WORKSPACE [--presses 100] [--slice 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tui import cold_start, datatable_reference, key_to_frame, make_ranking, record_frames  # noqa: E402

#: what the explorer writes into a workspace (labels, error log, exports, jobs): made fresh, never linked
WRITTEN = ("triage", "figures", "jobs")


def scratch_copy(source: Path, dest: Path) -> Path:
    """A workspace at ``dest`` whose inputs are links to ``source``'s (read-only use) and whose
    triage/, figures/ and jobs/ are its own, so labels set here never reach ``source``."""
    dest.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name in WRITTEN:
            (dest / entry.name).mkdir()
        elif entry.name == "fmb.yaml":
            shutil.copy2(entry, dest / entry.name)
        else:
            (dest / entry.name).symlink_to(entry)
    return dest


class Clock:
    """Wall and CPU seconds (this process, every thread) since the last ``lap``."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), self._cpu()

    @staticmethod
    def _cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def lap(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), self._cpu()
        out = (wall - self.wall, cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
        return out


async def until(predicate, limit: float = 60.0) -> None:
    """Poll with a real sleep (a busy loop would hold the GIL the workers need)."""
    t = time.perf_counter()
    while not predicate():
        if time.perf_counter() - t > limit:
            raise TimeoutError("the explorer did not get there in time")
        await asyncio.sleep(0.002)


async def first_frame(app, key: str, ready) -> float:
    """Seconds from ``key`` (as the terminal driver posts it) to the first frame written once ``ready()``."""
    from textual import events

    frames, restore = record_frames(app)
    try:
        event = events.Key(key, key if len(key) == 1 else None)
        event.set_sender(app)
        t = time.perf_counter()
        app._driver.send_message(event)
        await until(ready)
        n = len(frames)
        await until(lambda: len(frames) > n)
        return frames[-1] - t
    finally:
        restore()


async def settle(app, pilot) -> None:
    """Until the workers are done (one superseded by a newer one of its group counts as done)."""
    from textual.worker import WorkerCancelled

    try:
        await app.workers.wait_for_complete()
    except WorkerCancelled:
        pass
    await pilot.pause()


def pct(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), float(np.percentile(values, 95))


async def open_and_scroll(root: Path, presses: int) -> dict[str, object]:
    """The reference session: `A` -> rows, then `j`, on the ranking file today's bench writes."""
    from fmb_engine.workspace import Workspace
    from fmb_tui.app import FMBApp
    from fmb_tui.widgets.ranking_table import RankingTable

    app = FMBApp(Workspace(root))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        opened = await first_frame(app, "A", lambda: bool(app.screen.query(RankingTable))
                                   and app.screen.query_one(RankingTable).n_rows > 0)
        screen = app.screen
        await until(lambda: all(screen.rdata.loaded(s) for s in screen.rdata.systems))
        await settle(app, pilot)
        return {"open": opened, "key": pct(await key_to_frame(app, pilot, ["j"] * presses))}


async def explore(root: Path, presses: int) -> dict[str, object]:
    from fmb_engine.workspace import Workspace
    from fmb_tui.app import FMBApp
    from fmb_tui.screens.object import ObjectScreen
    from fmb_tui.widgets.ranking_table import RankingTable

    app = FMBApp(Workspace(root))
    out: dict[str, object] = {}
    clock = Clock()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        clock.lap()
        # every other screen's first open
        screens = {}
        for key, name in (("R", "runs"), ("J", "jobs"), ("C", "compare"), ("F", "figures"), ("W", "workspace")):
            frame = await first_frame(app, key, lambda n=name: app.current_mode == n)
            await settle(app, pilot)
            wall, cpu = clock.lap()
            screens[key] = (frame, wall, cpu)
        out["screens"] = screens

        # the ranking
        def has_rows() -> bool:
            tables = app.screen.query(RankingTable)
            return bool(tables) and tables.first().n_rows > 0

        out["open"] = await first_frame(app, "A", has_rows)
        screen = app.screen
        await until(lambda: all(screen.rdata.loaded(s) for s in screen.rdata.systems))
        out["all_systems"] = clock.lap()
        await settle(app, pilot)
        table = screen.query_one(RankingTable)
        out["rows"], out["systems"] = table.n_rows, len(screen.rdata.systems)
        clock.lap()
        out["key"] = pct(await key_to_frame(app, pilot, ["j"] * presses))
        out["key_cpu"] = clock.lap()
        out["page"] = pct(await key_to_frame(app, pilot, ["pagedown"] * 20 + ["G", "g"] * 5))
        clock.lap()
        # choose another system: `m` shows the chooser, the choice shows its order
        chooser = await key_to_frame(app, pilot, ["m"])
        target = next(s for s in screen.rdata.systems if s != screen.spec.system)
        frames, restore = record_frames(app)
        t = time.perf_counter()
        await app.screen.dismiss(target)
        await until(lambda: table.system == target)
        n = len(frames)
        await until(lambda: len(frames) > n)
        restore()
        out["switch"] = (chooser[0], frames[-1] - t, *clock.lap())
        # re-sort every row by another system's score (worker thread)
        t = time.perf_counter()
        screen.spec = screen.spec.with_(sort=f"score:{screen.rdata.systems[0]}", descending=True)
        screen.recompute(cursor=0)
        await settle(app, pilot)
        out["sort"] = (time.perf_counter() - t, clock.lap()[1])
        # a label: key -> frame, and -> committed by the writer thread
        labels = []
        for key in ("2", "j", "5", "j", "0"):
            lat = await key_to_frame(app, pilot, [key])
            if key != "j":
                t = time.perf_counter()
                await asyncio.to_thread(app.label_writer.drain, 10.0)
                labels.append((lat[0], lat[0] + time.perf_counter() - t))
        out["label"] = (statistics.median(x[0] for x in labels), statistics.median(x[1] for x in labels))
        # the Object screen of the current row (survey-free: it says there is no spectrum or image)
        def object_shown() -> bool:
            shown = app.screen
            return isinstance(shown, ObjectScreen) and (shown.obj is not None or shown.problem != "")

        out["object"] = await first_frame(app, "enter", object_shown)
        out["object_says"] = getattr(app.screen, "problem", "")
        await pilot.press("escape")
        await settle(app, pilot)
        out["errors"] = app.error_log.path.is_file() and app.error_log.path.stat().st_size > 0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path, help="a workspace with the pipeline's outputs (not modified)")
    parser.add_argument("--presses", type=int, default=100)
    parser.add_argument("--slice", type=int, default=20_000, help="rows loaded into the reference DataTable")
    parser.add_argument("--repeats", type=int, default=5, help="cold starts of each kind")
    args = parser.parse_args()
    os.environ.pop("FMB_WORKSPACE", None)
    import textual

    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = scratch_copy(args.workspace.resolve(), Path(tmp) / "ws")
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t_first, t_full = cold_start("fmb", root, args.repeats)
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r_first, _ = cold_start("reference", root, args.repeats)
        c2 = resource.getrusage(resource.RUSAGE_CHILDREN)
        tui = asyncio.run(explore(root, args.presses))
        from fmb_engine.workspace import Workspace

        ref = asyncio.run(datatable_reference(Workspace(root), args.slice, args.presses))
        # today's bench input, same size: a ranking file written by fmb_tui.synthetic (no provenance, no embeddings)
        synthetic = Workspace.init(Path(tmp) / "synthetic")
        make_ranking(synthetic, tui["rows"], tui["systems"])
        syn = asyncio.run(open_and_scroll(synthetic.root, args.presses))
    load1 = os.getloadavg()[0]
    cpu_start = ((c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)) / args.repeats
    cpu_ref = ((c2.ru_utime + c2.ru_stime) - (c1.ru_utime + c1.ru_stime)) / args.repeats
    ok = {True: "PASS", False: "FAIL"}

    print(f"machine               {os.cpu_count()} cores, load {load0:.1f} before / {load1:.1f} after; "
          f"textual {textual.__version__}")
    print(f"workspace             {args.workspace}: {tui['rows']:,} objects x {tui['systems']} systems")
    print()
    print(f"cold start            {t_first:6.2f} s to the first screen ({t_full:.2f} s with the overview read; "
          f"CPU {cpu_start:.2f} s per start)")
    print(f"  reference           {r_first:6.2f} s  minimal Textual app (CPU {cpu_ref:.2f} s) -> ratio "
          f"{t_first / r_first:.2f}x | target <= 1.5 s: {ok[t_first <= 1.5]}")
    for key, (frame, wall, cpu) in tui["screens"].items():
        print(f"first open {key}          {frame * 1000:6.0f} ms key -> frame; {wall:.2f} s until its workers are "
              f"done (CPU {cpu:.2f} s)")
    wall, cpu = tui["all_systems"]
    print(f"open the ranking (A)  {tui['open']:6.2f} s to rows on screen ({wall:.2f} s until every system's "
          f"columns are loaded; CPU {cpu:.2f} s)")
    scale = tui["rows"] / args.slice
    ref_open = ref["load_slice"] * scale
    print(f"  reference           {ref_open:6.1f} s  DataTable.add_rows, scaled from {args.slice:,} rows "
          f"({ref['load_slice']:.2f} s) -> {ref_open / tui['open']:.0f}x faster | target <= 1 s: "
          f"{ok[tui['open'] <= 1.0]}")
    print(f"  reference           {syn['open']:6.2f} s  the synthetic ranking file of bench_tui.py, same size "
          f"-> ratio {tui['open'] / syn['open']:.2f}x")
    (k50, k95), (_, kcpu) = tui["key"], tui["key_cpu"]
    print(f"key while scrolling   {k50 * 1000:6.1f} ms median, {k95 * 1000:.1f} ms p95 ('j', preview on; "
          f"CPU {kcpu / args.presses * 1000:.1f} ms per key); page down / jump {tui['page'][0] * 1000:.1f} ms "
          f"median, {tui['page'][1] * 1000:.1f} ms p95")
    print(f"  reference           {ref['key_median'] * 1000:6.1f} ms  DataTable with {args.slice:,} rows, 'down' "
          f"-> ratio {ref['key_median'] / k50:.2f}x | target <= 50 ms: {ok[k95 <= 0.050]}")
    print(f"  reference           {syn['key'][0] * 1000:6.1f} ms median, {syn['key'][1] * 1000:.1f} ms p95 on the "
          "synthetic ranking file (its preview reads no survey either)")
    chooser, switch, wall, cpu = tui["switch"]
    print(f"switch system (m)     {chooser * 1000:6.0f} ms to the chooser; {switch:.2f} s from the choice to "
          f"its order on screen (CPU {cpu:.2f} s)")
    print(f"re-sort all rows      {tui['sort'][0]:6.2f} s (worker thread; CPU {tui['sort'][1]:.2f} s)")
    print(f"label key             {tui['label'][0] * 1000:6.1f} ms key -> frame, {tui['label'][1] * 1000:.1f} ms "
          f"to committed (median of 3)")
    print(f"Object screen         {tui['object'] * 1000:6.0f} ms enter -> frame; says: {tui['object_says'] or '(a preview)'}")
    print(f"internal errors       {'see the error log' if tui['errors'] else 'none'}")


if __name__ == "__main__":
    main()
