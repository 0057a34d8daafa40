"""Long form of the fmb-tui random explorer: many seeds x long key sequences on a workspace of odd records.

Each seed is one app session on a fresh copy of the workspace (a small mock survey,
synthetic rankings, run manifests of every stage and status plus broken ones, jobs in
every state, labels by several people). Every failure prints its seed; replay one with
``FMB_FUZZ_SEED=<seed> FMB_FUZZ_STEPS=<steps> pytest tests/tui/test_fuzz.py``.

    python bench/fuzz_tui.py [--seeds 50] [--first 100] [--steps 800] [--size 80x24]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_workspace(root: Path) -> Path:
    from fmb_engine.config import load
    from fmb_engine.survey.stages import make_mock
    from fmb_engine.workspace import Workspace
    from fmb_tui.synthetic import populate
    from tests.tui.fuzz_explorer import add_odd_records

    ws = Workspace.init(root)
    make_mock(ws, load("mock", cli={"objects": 120, "image_size": 32, "batch_size": 40, "workers": -1}))
    populate(ws)
    add_odd_records(ws)
    return root


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=50)
    p.add_argument("--first", type=int, default=100, help="first seed")
    p.add_argument("--steps", type=int, default=800, help="keys per session")
    p.add_argument("--size", default="80x24")
    args = p.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    from tests.tui.fuzz_explorer import explore

    with tempfile.TemporaryDirectory(prefix="fmb-fuzz-") as tmp:
        template = build_workspace(Path(tmp) / "template")
        os.chdir(tmp)  # a palette "save screenshot" lands here
        failures, t0 = 0, time.perf_counter()
        for seed in range(args.first, args.first + args.seeds):
            root = Path(tmp) / f"ws-{seed}"
            shutil.copytree(template, root, symlinks=True)
            s0 = time.perf_counter()
            finding = asyncio.run(explore(root, seed, args.steps, (width, height)))
            status = "FAIL" if finding else "ok"
            print(f"seed {seed}: {status} ({time.perf_counter() - s0:.1f} s)", flush=True)
            if finding:
                failures += 1
                print(finding, flush=True)
            shutil.rmtree(root, ignore_errors=True)
        total = time.perf_counter() - t0
        print(f"{args.seeds} sessions x {args.steps} keys = {args.seeds * args.steps} keys in {total:.0f} s; "
              f"{failures} failing seed(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
