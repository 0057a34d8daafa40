"""Tiny job functions for tests and ``fmb-engine jobs selftest``.

submitit pickles functions by reference, so a job function must be importable at
module level by the job's interpreter: these live here, not in test files.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from fmb_engine.workspace import atomic_write_text, make_dirs


def _env() -> dict[str, str | None]:
    keys = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SUBMITIT_EXECUTOR", "SUBMITIT_LOCAL_JOB_ID")
    return {k: os.environ.get(k) for k in keys}


def write_shard(out_dir: str, shard: int, n_shards: int) -> dict[str, str]:
    """Write ``shard-<i>-of-<n>.json`` (host, pid, python, SLURM ids); resumable: an existing file is kept."""
    out = Path(out_dir) / f"shard-{shard:04d}-of-{n_shards:04d}.json"
    print(f"shard {shard}/{n_shards} on {socket.gethostname()} pid {os.getpid()} python {sys.executable}", flush=True)
    if not out.exists():
        atomic_write_text(out, json.dumps({
            "shard": shard, "n_shards": n_shards, "host": socket.gethostname(), "pid": os.getpid(),
            "python": sys.executable, "env": _env(),
        }, indent=1) + "\n")
    print(f"wrote {out}", flush=True)
    return {"shard": str(out)}


def sleep_then(seconds: float, message: str = "done") -> str:
    """Sleep (printing a heartbeat every second), then return ``message``."""
    end = time.time() + seconds
    while time.time() < end:
        print(f"sleeping, {end - time.time():.0f}s left", flush=True)
        time.sleep(min(1.0, max(0.0, end - time.time())))
    return message


def fail(message: str = "selftest failure") -> None:
    """Raise, so the job ends FAILED with ``message`` in its error."""
    print("about to fail", flush=True)
    print("this goes to stderr", file=sys.stderr, flush=True)
    raise RuntimeError(message)


def count_steps(out_dir: str, steps: int, step_s: float = 0.2) -> dict[str, str]:
    """A resumable stage in miniature: one file per finished step; a rerun skips finished steps.

    Returns the path of the step log, which lists every start, so tests can see a
    requeued job continue instead of starting over.
    """
    folder = Path(out_dir)
    make_dirs(folder)
    log = folder / "starts.log"
    with log.open("a", encoding="utf-8") as fh:
        done = sorted(int(p.stem.split("-")[1]) for p in folder.glob("step-*.done"))
        fh.write(f"start pid={os.getpid()} done={len(done)}\n")
    for step in range(steps):
        marker = folder / f"step-{step:04d}.done"
        if marker.exists():
            continue
        time.sleep(step_s)
        marker.write_text("ok\n")
        print(f"step {step} done", flush=True)
    return {"log": str(log), "steps": str(steps)}
