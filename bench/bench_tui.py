"""Benchmark: fmb-tui responsiveness (targets: cold start <= 1.5 s, opening a 1,000,000-row ranking
<= 1 s, a key press while scrolling it <= 50 ms, the spectrum preview of a new object <= 100 ms).

Each figure comes with a reference measured in the same run:

* cold start: a minimal Textual app (one Static) started the same way (fresh interpreter, headless);
* opening the ranking: a Textual ``DataTable`` loaded with the same rows (timed on a slice and
  scaled linearly: its ``add_rows`` costs a constant time per row, and a million rows take minutes);
* key press: the same key in a ``DataTable`` holding that slice;
* spectrum preview: the engine's quick-look PNG (matplotlib) of the same object.

    python bench/bench_tui.py [--rows 1000000] [--systems 8] [--slice 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHILD = "--child"


# --- cold start (each in a fresh interpreter) ------------------------------------------------------


def child_start(kind: str, ws_root: str, t0: float) -> None:
    """Runs in the child: start the app headless, report when the first screen is painted."""
    if kind == "reference":
        from textual.app import App
        from textual.widgets import Static

        class Minimal(App):
            def compose(self):
                yield Static("hello")

        app = Minimal()
    else:
        from fmb_engine.workspace import Workspace
        from fmb_tui.app import FMBApp

        app = FMBApp(Workspace(Path(ws_root)))

    async def auto(pilot):
        await pilot.pause()
        first = time.time() - t0
        if kind != "reference":  # also: the overview read by its worker
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()
        print(f"RESULT {first:.4f} {time.time() - t0:.4f}", flush=True)
        pilot.app.exit()

    app.run(headless=True, size=(100, 30), auto_pilot=auto)


def cold_start(kind: str, ws_root: Path, repeats: int = 5) -> tuple[float, float]:
    firsts, fulls = [], []
    for _ in range(repeats):
        t0 = time.time()
        out = subprocess.run([sys.executable, __file__, CHILD, kind, str(ws_root), repr(t0)], capture_output=True,
                             text=True, check=True, cwd=ROOT).stdout
        line = next(x for x in out.splitlines() if x.startswith("RESULT"))
        first, full = map(float, line.split()[1:])
        firsts.append(first)
        fulls.append(full)
    return statistics.median(firsts), statistics.median(fulls)


# --- the big ranking -----------------------------------------------------------------------------


def make_ranking(ws, rows: int, systems: int) -> list[str]:
    from fmb_tui.synthetic import write_rankings

    names = [f"{m}/{mod}/{meth}" for m in ("astropt", "aion", "astroclip")
             for mod, meth in (("image", "flow"), ("spectrum", "flow"), ("joint", "mismatch"), ("fused", "geo"))]
    names = names[:systems]
    ids = np.char.add("obj-", np.char.zfill(np.arange(rows).astype(str), 8))
    write_rankings(ws, ids, names, seed=1)
    return names


def record_frames(app) -> tuple[list[float], object]:
    """Record the time of every frame the app writes to its terminal; returns (times, restore)."""
    frames: list[float] = []
    original = app._display

    def display(screen, renderable):
        frames.append(time.perf_counter())
        return original(screen, renderable)

    def restore() -> None:
        app._display = original

    app._display = display
    return frames, restore


async def tui_ranking(ws, presses: int) -> dict[str, float]:
    from fmb_engine.config.tui import TuiConfig
    from fmb_tui.app import FMBApp
    from fmb_tui.widgets.ranking_table import RankingTable

    app = FMBApp(ws, TuiConfig(preview=False), start="workspace")
    out: dict[str, float] = {}
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        frames, restore = record_frames(app)
        from textual import events

        key = events.Key("A", "A")
        key.set_sender(app)
        t0 = time.perf_counter()
        app._driver.send_message(key)
        # Poll with a real sleep: a busy `sleep(0)` loop would hold the GIL and starve the
        # worker thread that reads and sorts the ranking (measured: 3-7 s instead of 0.5 s).
        # The frame times come from the hook above, so polling does not blur them.
        while True:  # until the table has rows ...
            await asyncio.sleep(0.002)
            screen = app.screen
            if screen.query(RankingTable) and screen.query_one(RankingTable).n_rows:
                break
        n = len(frames)
        while len(frames) == n:  # ... and the next frame (the one showing them) is written
            await asyncio.sleep(0.002)
        out["open"] = frames[-1] - t0
        restore()
        screen = app.screen
        while not all(screen.rdata.loaded(s) for s in screen.rdata.systems):
            await asyncio.sleep(0.005)
        await pilot.pause()
        out["all_systems"] = time.perf_counter() - t0
        table = screen.query_one(RankingTable)
        assert table.n_rows == screen.rdata.n
        lat = await key_to_frame(app, pilot, ["j"] * presses)
        out["key_median"], out["key_p95"] = statistics.median(lat), float(np.percentile(lat, 95))
        lat = await key_to_frame(app, pilot, ["pagedown"] * 20 + ["G", "g"] * 5)
        out["page_median"], out["page_p95"] = statistics.median(lat), float(np.percentile(lat, 95))
        lat = []
        for _ in range(20):
            t = time.perf_counter()
            await pilot.press("j")
            lat.append(time.perf_counter() - t)
        out["pilot_median"] = statistics.median(lat)
        # the work behind one key alone: move the cursor and render every visible line
        work = []
        region = table.region
        for _ in range(200):
            t = time.perf_counter()
            table.move_cursor(table.cursor + 1)
            for y in range(region.height):
                table.render_line(y)
            work.append(time.perf_counter() - t)
        out["key_work"] = statistics.median(work)
        # a re-sort of the whole ranking (in a worker; the UI stays responsive meanwhile)
        t = time.perf_counter()
        screen.spec = screen.spec.with_(sort=f"score:{screen.rdata.systems[0]}", descending=True)
        screen.recompute(cursor=0)
        await app.workers.wait_for_complete()
        await pilot.pause()
        out["sort"] = time.perf_counter() - t
    return out


async def key_to_frame(app, pilot, keys: list[str]) -> list[float]:
    """Seconds from a key event (as the terminal driver posts it) to the next frame sent to the terminal.

    This is what a user sees: event dispatch, the action, rendering the changed lines and the
    compositor update (screen updates are paced by Textual's refresh timer, up to 1/60 s).
    """
    from textual import events

    frames, restore = record_frames(app)
    lat = []
    try:
        for key in keys:
            await pilot.pause()
            n = len(frames)
            event = events.Key(key, key if len(key) == 1 else None)
            event.set_sender(app)
            t = time.perf_counter()
            app._driver.send_message(event)
            while len(frames) == n and time.perf_counter() - t < 2.0:
                await asyncio.sleep(0)
            lat.append(frames[-1] - t if len(frames) > n else 2.0)
    finally:
        restore()
    return lat


async def datatable_reference(ws, n: int, presses: int) -> dict[str, float]:
    from textual.app import App
    from textual.widgets import DataTable

    from fmb_engine import rankings

    table = rankings.load_table(ws).slice(0, n)
    names = table.column_names
    cols = [table.column(c).to_pylist() for c in names]
    rows = list(zip(*cols, strict=True))

    class Ref(App):
        def compose(self):
            yield DataTable()

    app = Ref()
    out: dict[str, float] = {}
    async with app.run_test(size=(120, 40)) as pilot:
        dt = app.query_one(DataTable)
        t = time.perf_counter()
        dt.add_columns(*names)
        dt.add_rows(rows)
        await pilot.pause()
        out["load_slice"] = time.perf_counter() - t
        dt.focus()
        await pilot.pause()
        lat = await key_to_frame(app, pilot, ["down"] * presses)
        out["key_median"] = statistics.median(lat)
    return out


# --- spectrum preview --------------------------------------------------------------------------------


def preview(ws, n_objects: int = 40) -> dict[str, float]:
    from fmb_engine.survey.quicklook import render_quicklook
    from fmb_engine.config.tui import TuiConfig
    from fmb_tui.data import WorkspaceData
    from fmb_tui.render import halfblock_text, spectrum_text

    data = WorkspaceData(ws, TuiConfig())
    ids = data.reader().table()["object_id"].tolist()[:n_objects]
    times, read = [], []
    for oid in ids:  # every object new to the cache: read from the HDF5 store, then draw
        t = time.perf_counter()
        obj = data.get_object(oid)
        r = time.perf_counter()
        spectrum_text(obj.wavelength, obj.flux, obj.ivar, obj.mask, float(obj.meta["redshift"]), 100, 9)
        halfblock_text(obj.rgb, 20, 8)
        times.append(time.perf_counter() - t)
        read.append(r - t)
    ref = []
    with tempfile.TemporaryDirectory() as tmp:
        for oid in ids[:5]:
            obj = data.get_object(oid)
            t = time.perf_counter()
            render_quicklook(obj, Path(tmp) / f"{oid}.png")
            ref.append(time.perf_counter() - t)
    data.close()
    return {"median": statistics.median(times), "p95": float(np.percentile(times, 95)),
            "read": statistics.median(read), "quicklook": statistics.median(ref)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--systems", type=int, default=8)
    parser.add_argument("--slice", type=int, default=20_000, help="rows loaded into the reference DataTable")
    parser.add_argument("--presses", type=int, default=100)
    args = parser.parse_args()
    os.environ.pop("FMB_WORKSPACE", None)

    from fmb_engine.config import load
    from fmb_engine.survey.stages import make_mock
    from fmb_engine.workspace import Workspace
    from fmb_tui.synthetic import populate

    with tempfile.TemporaryDirectory() as tmp:
        small = Workspace.init(Path(tmp) / "small")
        make_mock(small, load("mock", cli={"objects": 200, "image_size": 64, "workers": -1}))
        populate(small)
        t_first, t_full = cold_start("fmb", small.root)
        r_first, _ = cold_start("reference", small.root)
        pv = preview(small)

        big = Workspace.init(Path(tmp) / "big")
        t = time.perf_counter()
        names = make_ranking(big, args.rows, args.systems)
        t_make = time.perf_counter() - t
        size = (big.folder("scores") / "systems.parquet").stat().st_size / 1e6
        tui = asyncio.run(tui_ranking(big, args.presses))
        ref = asyncio.run(datatable_reference(big, args.slice, args.presses))

    scale = args.rows / args.slice
    ref_open = ref["load_slice"] * scale
    print(f"machine               {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; textual "
          f"{__import__('textual').__version__}")
    print(f"ranking               {args.rows:,} rows x {len(names)} systems ({size:,.0f} MB parquet, written in {t_make:.1f} s)")
    print()
    print(f"cold start            {t_first:6.2f} s to the first screen ({t_full:.2f} s with the workspace overview read)")
    print(f"  reference           {r_first:6.2f} s  minimal Textual app, same way   -> ratio {t_first / r_first:.2f}x "
          f"| target <= 1.5 s: {'PASS' if t_first <= 1.5 else 'FAIL'}")
    print(f"open the ranking      {tui['open']:6.2f} s to rows on screen ({tui['all_systems']:.2f} s until every "
          f"system's columns are loaded, in the background)")
    print(f"  reference           {ref_open:6.1f} s  DataTable.add_rows, scaled from {args.slice:,} rows "
          f"({ref['load_slice']:.2f} s)  -> ratio {ref_open / tui['open']:.0f}x faster "
          f"| target <= 1 s: {'PASS' if tui['open'] <= 1.0 else 'FAIL'}")
    print(f"key while scrolling   {tui['key_median'] * 1000:6.1f} ms median, {tui['key_p95'] * 1000:.1f} ms p95 "
          f"key event -> frame ('j'); page down / jump {tui['page_median'] * 1000:.1f} ms median, "
          f"{tui['page_p95'] * 1000:.1f} ms p95")
    print(f"                      work per key {tui['key_work'] * 1000:.2f} ms (move + render every visible row); "
          f"pilot.press round trip {tui['pilot_median'] * 1000:.0f} ms (test-harness waits included)")
    print(f"  reference           {ref['key_median'] * 1000:6.1f} ms  DataTable with {args.slice:,} rows, 'down' "
          f"-> ratio {ref['key_median'] / tui['key_median']:.2f}x "
          f"| target <= 50 ms: {'PASS' if tui['key_p95'] <= 0.050 else 'FAIL'}")
    print(f"spectrum preview      {pv['median'] * 1000:6.1f} ms median, {pv['p95'] * 1000:.1f} ms p95 for a new object "
          f"(HDF5 read {pv['read'] * 1000:.1f} ms + braille spectrum + half-block image)")
    print(f"  reference           {pv['quicklook'] * 1000:6.0f} ms  engine quick-look PNG of the same object "
          f"-> ratio {pv['quicklook'] / pv['median']:.0f}x | target <= 100 ms: {'PASS' if pv['p95'] <= 0.100 else 'FAIL'}")
    print(f"re-sort all rows      {tui['sort']:6.2f} s (a worker thread; keys keep working meanwhile)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        child_start(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    else:
        main()
