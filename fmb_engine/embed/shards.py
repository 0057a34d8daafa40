"""The shard folder of an embedding file: where it lives, its row grid, its file names, which rows it holds.

Why shards: a foundation-model pass over a large survey runs for hours and gets
killed (Ctrl-C, OOM, job time limit). Rows are embedded in blocks; each block
is written as its own shard file, atomically, under
``embeddings/<model>.shards/shard-<lo>-<hi>.h5`` (rows ``[lo, hi)``). A rerun
skips every row a shard already holds, so an interruption costs at most one
block, and no row is ever embedded twice or skipped.

Blocks follow a global grid of ``shard_size`` rows, so SLURM array tasks given
row ranges ``[start, stop)`` write disjoint shards. The resume, the coverage check
and the merge all learn which shards exist from :func:`list_shards`, the one scan
of the folder. ``run.json`` in the folder names the run key its shards belong to.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from fmb_engine import locks
from fmb_engine.errors import ConfigError
from fmb_engine.progress import Reporter
from fmb_engine.workspace import Workspace, atomic_path, atomic_write_text, make_dirs

#: The run a shard folder belongs to (run key, model, survey, size).
RUN_INFO = "run.json"
#: Marker in the shard folder of a forced recompute: the final file, though made by the same run key,
#: is replaced by the recomputed one (and kept until then).
FORCED = "FORCED"
_SHARD_RE = re.compile(r"^shard-(\d{9})-(\d{9})\.h5$")


def embeddings_path(ws: Workspace, model: str, output: Path | None = None) -> Path:
    """The embedding file of ``model``: ``output`` when given, else ``embeddings/<model>.h5``."""
    return Path(output) if output is not None else ws.folder("embeddings") / f"{model}.h5"


def shard_dir_of(final: Path) -> Path:
    """The shard folder beside embedding file ``final`` (``<stem>.shards``)."""
    return final.with_name(final.stem + ".shards")


def shards_dir(ws: Workspace, model: str) -> Path:
    return shard_dir_of(embeddings_path(ws, model))


def shard_range(n_objects: int, shard: int, shards: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of array task ``shard`` of ``shards``: ``start = floor(shard * N / shards)``."""
    if shards < 1 or not 0 <= shard < shards:
        raise ConfigError(f"shard must be in 0..{shards - 1} (got shard {shard} of {shards})")
    return shard * n_objects // shards, (shard + 1) * n_objects // shards


def shard_file(shard_dir: Path, lo: int, hi: int) -> Path:
    """The file holding rows ``[lo, hi)`` in ``shard_dir``."""
    return shard_dir / f"shard-{lo:09d}-{hi:09d}.h5"


def list_shards(shard_dir: Path) -> list[tuple[int, int, Path]]:
    """Every shard file in ``shard_dir`` as ``(lo, hi, path)``, by row range (none when there is no folder)."""
    out = []
    if shard_dir.is_dir():
        for p in shard_dir.iterdir():
            m = _SHARD_RE.match(p.name)
            if m:
                out.append((int(m.group(1)), int(m.group(2)), p))
    return sorted(out)


def ranges(mask: np.ndarray) -> list[list[int]]:
    """The runs of True in ``mask`` as ``[[lo, hi), ...]`` row ranges."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return [[int(a), int(b)] for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True)]


def coverage(ws: Workspace, model: str, n_objects: int, output: Path | None = None) -> dict[str, Any]:
    """Which rows of ``[0, n_objects)`` the shards of ``model`` hold: ``{"done": n, "missing": [[lo, hi], ...]}``."""
    covered = np.zeros(n_objects, bool)
    for lo, hi, _ in list_shards(shard_dir_of(embeddings_path(ws, model, output))):
        covered[lo : min(hi, n_objects)] = True
    return {"done": int(covered.sum()), "missing": ranges(~covered)}


def todo_pieces(shard_dir: Path, start: int, stop: int, shard_size: int) -> list[tuple[int, int]]:
    """Contiguous row ranges of ``[start, stop)`` not yet in a shard, cut on the global shard grid."""
    covered = np.zeros(stop - start, bool)
    for lo, hi, _ in list_shards(shard_dir):
        a, b = max(lo, start), min(hi, stop)
        if a < b:
            covered[a - start : b - start] = True
    pieces = []
    for g0 in range((start // shard_size) * shard_size, stop, shard_size):
        a, b = max(g0, start), min(g0 + shard_size, stop)
        seg = covered[a - start : b - start]
        i = 0
        while i < seg.size:
            if seg[i]:
                i += 1
                continue
            j = i
            while j < seg.size and not seg[j]:
                j += 1
            pieces.append((a + i, a + j))
            i = j
    return pieces


def prepare_shard_dir(shard_dir: Path, info: dict[str, Any], reporter: Reporter) -> None:
    """Create the shard folder for the run ``info`` describes, or empty it when it holds another run key's shards."""
    path = shard_dir / RUN_INFO
    if path.exists():
        try:
            old = json.loads(path.read_text()).get("run_key")
        except (OSError, json.JSONDecodeError):
            old = None
        if old == info["run_key"]:
            return
        reporter.log(f"discarding shards of a different run in {shard_dir.name} (config, weights or survey changed)")
        shutil.rmtree(shard_dir)
    # a folder without run.json may be another array task's, just being created: never delete it
    make_dirs(shard_dir)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(info, indent=1))


def discard(ws: Workspace, model: str, output: Path | None = None) -> None:
    """Start ``model``'s embedding over (``--force``): earlier shards go, the final file stays.

    The existing ``embeddings/<model>.h5`` stays readable until the recomputed one is merged
    over it (atomic rename); a marker in the fresh shard folder makes the run recompute
    although that file was made by the same run key. A failed recompute loses nothing.
    """
    final = embeddings_path(ws, model, output)
    shard_dir = shard_dir_of(final)
    with locks.hold(final, f"embeddings {final.name}"):
        shutil.rmtree(shard_dir, ignore_errors=True)
        make_dirs(shard_dir)
        atomic_write_text(shard_dir / FORCED, "recompute: the final file is replaced when the merge succeeds\n")
