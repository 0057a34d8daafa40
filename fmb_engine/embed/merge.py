"""Merging a run's shards into its embedding file: every survey row exactly once, the fitted state kept.

Why separate from the run: the merge happens when the shards cover the whole
survey, which is either at the end of an ``embed`` command or in whichever SLURM
array task completes the coverage; both call :func:`merge_shards`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from fmb_engine.embed.fit import STATE_FILE, load_state
from fmb_engine.embed.shards import FORCED, RUN_INFO, embeddings_path, list_shards, ranges, shard_dir_of
from fmb_engine.embed.store import EmbeddingReader, EmbeddingWriter
from fmb_engine.errors import DataError
from fmb_engine.progress import Reporter
from fmb_engine.workspace import Workspace


def merge_shards(
    ws: Workspace, model: str, *, output: Path | None = None, keep_shards: bool = False,
    reporter: Reporter | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Merge the shards of ``model`` into one embedding file (atomic); every survey row exactly once.

    Raises DataError naming the missing row ranges when the shards do not cover the survey,
    or when shards of different runs are mixed. Rows held by two shards (overlapping array
    ranges) are taken once, from the shard listed first. The shards are removed afterwards
    unless ``keep_shards``.
    """
    final = embeddings_path(ws, model, output)
    shard_dir = shard_dir_of(final)
    info_path = shard_dir / RUN_INFO
    if not info_path.exists():
        raise DataError(f"no shards to merge in {shard_dir}")
    info = json.loads(info_path.read_text())
    n = int(info["n_objects"])
    shards = list_shards(shard_dir)
    cov = np.zeros(n, bool)
    for lo, hi, _ in shards:
        cov[lo:hi] = True
    if not cov.all():
        missing = ranges(~cov)
        shown = ", ".join(f"[{a}, {b})" for a, b in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(
            f"cannot merge {model}: rows {shown} are not embedded yet ({int((~cov).sum())} of {n}). "
            f"Run `fmb-engine embed {model}` (or the missing --start/--stop ranges) to complete them."
        )
    if not shards:
        raise DataError(f"no shard files in {shard_dir}")
    with EmbeddingReader(shards[0][2]) as first:
        meta = first.meta
        dims = dict(first.dims)
    state_file = shard_dir / STATE_FILE
    state = load_state(state_file)[0] if state_file.exists() else {}
    meta.extra = {k: v for k, v in meta.extra.items() if k != "rows"} | {"shards": len(shards)}
    meta.created = ""
    taken = np.zeros(n, bool)
    duplicates = 0
    writer = EmbeddingWriter(final, n, dims, meta)  # streams: one shard in memory at a time
    try:
        for _lo, _hi, p in shards:
            with EmbeddingReader(p) as r:
                if r.extra.get("run_key") != info["run_key"]:
                    raise DataError(f"{p.name} belongs to another run (run key differs); delete {shard_dir} and rerun")
                if r.extra.get("state_digest") != meta.extra.get("state_digest") or r.dims != dims:
                    raise DataError(f"{p.name} was embedded with a different fitted state; delete {shard_dir} and rerun")
                rows = r.rows()
                fresh = ~taken[rows]
                duplicates += int((~fresh).sum())
                if not fresh.any():
                    continue
                sel, dest = np.flatnonzero(fresh), rows[fresh]
                if np.any(np.diff(dest) <= 0):
                    order = np.argsort(dest)
                    sel, dest = sel[order], dest[order]
                contiguous = dest[-1] - dest[0] + 1 == dest.size
                where = slice(int(dest[0]), int(dest[-1]) + 1) if contiguous else dest
                writer.write(where, r.object_ids[sel], {m: r.load(m)[sel] for m in r.modalities}, rows=dest,
                             valid={m: r.valid(m)[sel] for m in r.modalities}, reasons=r.reasons()[sel])
                taken[dest] = True
        if not taken.all():  # cannot happen after the coverage check; keep the invariant explicit
            raise DataError(f"merge of {model}: rows {ranges(~taken)[:3]} missing")
        if state:
            writer.set_state(state)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    if not keep_shards:
        shutil.rmtree(shard_dir, ignore_errors=True)
    (shard_dir / FORCED).unlink(missing_ok=True)  # the recompute is published
    if reporter:
        reporter.log(f"merged {len(shards)} shard(s) -> {final}")
    return final, {"shards": len(shards), "duplicates_dropped": duplicates, "objects": n}
