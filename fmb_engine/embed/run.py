"""The embedding stage: survey -> ``embeddings/<model>.h5``, resumable and shardable.

Why shards: a foundation-model pass over a large survey runs for hours and gets
killed (Ctrl-C, OOM, job time limit). Rows are embedded in blocks; each block
is written as its own shard file, atomically, under
``embeddings/<model>.shards/shard-<lo>-<hi>.h5`` (rows ``[lo, hi)``). A rerun
skips every row a shard already holds, so an interruption costs at most one
block, and no row is ever embedded twice or skipped. When the shards cover the
whole survey they are merged into ``embeddings/<model>.h5`` (atomic) and removed.

Shards are only reused by the *same run*: the run key hashes the embedder name,
every config value except ``batch_size`` and ``device`` (they change how fast,
not what), the weights digest and the survey digest. Shards of another key are
discarded with a log line.

Blocks follow a global grid of ``shard_size`` rows, so SLURM array tasks given
row ranges ``[start, stop)`` (:func:`embed_shard`) write disjoint shards; the task
that completes the coverage merges (:func:`merge_shards`).

Fitted embedders (pca, cca) are fitted once on the train split (a seeded subset
of at most ``fit_max_objects``) and the state is stored in the shard folder,
then in the final file, so every shard and every later re-embedding uses the
same fit; ``fit_from`` applies the fit stored in another embedding file to a new
survey (new objects in the same space).

Vectors are bit-identical between runs with the same inputs, seed and shard
layout (an interrupted run recomputes the cut shard with the same batches).
Different row ranges cut batches differently; BLAS may then take other code
paths and vectors agree to float32 rounding only.

Not embeddable objects still get a row (their vector is computed from imputed
input: NaN pixels -> 0 for the foundation models, the train mean for the
baselines) but are flagged per modality (``valid/<modality>`` False) with a
reason: ``missing_band:<BAND>``, ``no_spectrum``, ``no_valid_spectrum_pixels``,
``non_finite_<modality>``. Counts per reason go into the run manifest.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from fmb_engine.config import Resolved
from fmb_engine.devices import resolve_device
from fmb_engine.embed import base
from fmb_engine.embed.base import Embedder
from fmb_engine.embed.catalog import DEFAULT_SHARD_SIZE
from fmb_engine.embed.config import EmbedderConfig
from fmb_engine.embed.store import EmbeddingMeta, EmbeddingReader, EmbeddingWriter, write_embeddings
from fmb_engine import locks
from fmb_engine.errors import BusyError, ConfigError, DataError
from fmb_engine.manifest import RunManifest, versions
from fmb_engine.progress import Reporter, Silent
from fmb_engine.survey.bands import BANDS
from fmb_engine.survey.batch import SurveyBatch
from fmb_engine.survey.stages import StageResult, config_record
from fmb_engine.survey.store import SurveyReader
from fmb_engine.workspace import Workspace, atomic_path, atomic_write_text, make_dirs

#: Config keys that do not change the vectors (excluded from the run key).
_NOT_IN_KEY = {"batch_size", "device"}
_SHARD_RE = re.compile(r"^shard-(\d{9})-(\d{9})\.h5$")
#: Object ids listed in the manifest per reason (the full list is in the file).
_MANIFEST_IDS = 100


def shard_range(n_objects: int, shard: int, shards: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of array task ``shard`` of ``shards``: ``start = floor(shard * N / shards)``."""
    if shards < 1 or not 0 <= shard < shards:
        raise ConfigError(f"shard must be in 0..{shards - 1} (got shard {shard} of {shards})")
    return shard * n_objects // shards, (shard + 1) * n_objects // shards


def embeddings_path(ws: Workspace, model: str) -> Path:
    return ws.folder("embeddings") / f"{model}.h5"


def shards_dir(ws: Workspace, model: str) -> Path:
    return ws.folder("embeddings") / f"{model}.shards"


# --------------------------------------------------------------------------- validity


def embeddability(batch: SurveyBatch, modalities: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per modality a (B,) valid flag, and per object the reasons it is not (fully) embeddable."""
    n = len(batch)
    missing = ~np.asarray(batch.has_bands, dtype=bool)
    if batch.images is not None:
        missing |= ~np.isfinite(batch.images).any(axis=(2, 3))
    no_spec = ~np.asarray(batch.has_spectrum, dtype=bool)
    no_pix = np.zeros(n, bool)
    if batch.flux is not None:
        good = np.isfinite(batch.flux)
        if batch.ivar is not None:
            good &= np.isfinite(batch.ivar) & (batch.ivar > 0)
        if batch.mask is not None:
            good &= ~np.asarray(batch.mask, dtype=bool)
        no_pix = ~no_spec & ~good.any(axis=1)
    img_ok = ~missing.any(axis=1)
    spec_ok = ~no_spec & ~no_pix
    valid = {"image": img_ok, "spectrum": spec_ok, "joint": img_ok & spec_ok}
    reasons = np.full(n, "", dtype=object)
    for i in np.flatnonzero(~(img_ok & spec_ok)):
        parts = [f"missing_band:{BANDS[b]}" for b in np.flatnonzero(missing[i])]
        if no_spec[i]:
            parts.append("no_spectrum")
        elif no_pix[i]:
            parts.append("no_valid_spectrum_pixels")
        reasons[i] = ";".join(parts)
    return {m: valid.get(m, np.ones(n, bool)).copy() for m in modalities}, reasons


def _add_reason(reasons: np.ndarray, rows: np.ndarray, reason: str) -> None:
    for i in rows:
        reasons[i] = f"{reasons[i]};{reason}" if reasons[i] else reason


# --------------------------------------------------------------------------- the run


@dataclass
class _Run:
    ws: Workspace
    survey: Path
    model: str
    resolved: Resolved
    cfg: EmbedderConfig
    reader: SurveyReader
    embedder: Embedder
    key: str
    weights_digest: str
    device: str
    shard_dir: Path
    final: Path
    reporter: Reporter
    fit_info: dict[str, Any] = field(default_factory=dict)
    state_digest: str = ""
    fixed_state: dict[str, np.ndarray] | None = None  # a fit reused from another embedding file
    fit_warnings: list[str] = field(default_factory=list)  # why the fit is weaker than configured

    @property
    def n(self) -> int:
        return self.reader.n_objects

    def meta(self, extra: dict[str, Any] | None = None) -> EmbeddingMeta:
        cls = type(self.embedder)
        return EmbeddingMeta(
            embedder=self.model,
            aligned=bool(cls.aligned),
            modalities=tuple(cls.modalities),
            config=self.resolved.values.model_dump(mode="json"),
            weights_digest=self.weights_digest or (f"fit:{self.state_digest}" if self.state_digest else ""),
            survey_digest=self.reader.digest,
            survey_path=str(self.survey),
            versions=versions(),
            extra={"run_key": self.key, "device": self.device, "fit": self.fit_info} | (extra or {}),
        )


def _run_key(model: str, cfg: EmbedderConfig, weights_digest: str, survey_digest: str, n: int, fit: str = "") -> str:
    payload = {
        "model": model,
        "config": cfg.model_dump(mode="json", exclude=_NOT_IN_KEY),
        "weights": weights_digest,
        "survey": survey_digest,
        "n": n,
        "fit_from": fit,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _read_fit(path: Path, model: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The fitted state stored in an embedding file of ``model`` (for ``fit_from``)."""
    with EmbeddingReader(path) as r:
        if r.embedder != model:
            raise ConfigError(f"fit_from {path} holds {r.embedder!r} embeddings, not {model!r}")
        state = r.state()
        if not state:
            raise ConfigError(f"fit_from {path} has no fitted state (only fitted embedders such as pca/cca store one)")
        return state, dict(r.extra.get("fit", {})) | {"fit_from": str(path)}


def _open_run(ws: Workspace, survey_path: Path, model: str, resolved: Resolved, reporter: Reporter | None,
              output: Path | None = None, fit_from: Path | None = None) -> _Run:
    cls = base.get(model)
    cfg = resolved.values
    if not isinstance(cfg, cls.config_model):
        raise ConfigError(f"config section {resolved.section!r} is not the config of embedder {model!r}")
    device = resolve_device(cfg.device)
    reader = SurveyReader(survey_path)
    try:
        embedder = cls(cfg)
        from fmb_engine.embed.models_check import weight_files, weights_digest

        files = weight_files(cfg)  # ConfigError now, before any work, when weights are missing
        wd = weights_digest(files)
    except BaseException:
        reader.close()
        raise
    fixed, fit_info, fit_digest = None, {}, ""
    if fit_from is not None:
        try:
            if not cls.needs_fit:
                raise ConfigError(f"{model!r} is pretrained: it has no fit to reuse (fit_from is for pca/cca)")
            from fmb_engine.embed.models_check import state_digest

            fixed, fit_info = _read_fit(Path(fit_from), model)
            fit_digest = state_digest(fixed)
        except BaseException:
            reader.close()
            raise
    key = _run_key(model, cfg, wd, reader.digest, reader.n_objects, fit_digest)
    final = Path(output) if output is not None else embeddings_path(ws, model)
    shard_dir = final.with_name(final.stem + ".shards")
    return _Run(ws, Path(survey_path), model, resolved, cfg, reader, embedder, key, wd, device, shard_dir, final,
                reporter or Silent(), fit_info=fit_info, fixed_state=fixed)


#: Marker in the shard folder of a forced recompute: the final file, though made by the same run key,
#: is replaced by the recomputed one (and kept until then).
FORCED = "FORCED"


def _up_to_date(run: _Run) -> bool:
    if not run.final.exists() or (run.shard_dir / FORCED).exists():
        return False
    try:
        with EmbeddingReader(run.final) as r:
            same = r.extra.get("run_key") == run.key and r.n_objects == run.n
            return same and (not type(run.embedder).needs_fit or bool(r.state()))  # a fit must travel with it
    except DataError:
        return False


def up_to_date(ws: Workspace, survey_path: Path, model: str, resolved: Resolved, output: Path | None = None) -> bool:
    """True when the final embedding file was made by this exact run (config, weights, survey)."""
    run = _open_run(ws, survey_path, model, resolved, Silent(), output)
    try:
        return _up_to_date(run)
    finally:
        run.reader.close()


def discard(ws: Workspace, model: str, output: Path | None = None) -> None:
    """Start ``model``'s embedding over (``--force``): earlier shards go, the final file stays.

    The existing ``embeddings/<model>.h5`` stays readable until the recomputed one is merged
    over it (atomic rename); a marker in the fresh shard folder makes the run recompute
    although that file was made by the same run key. A failed recompute loses nothing.
    """
    final = Path(output) if output is not None else embeddings_path(ws, model)
    shard_dir = final.with_name(final.stem + ".shards")
    with locks.hold(final, f"embeddings {final.name}"):
        shutil.rmtree(shard_dir, ignore_errors=True)
        make_dirs(shard_dir)
        atomic_write_text(shard_dir / FORCED, "recompute: the final file is replaced when the merge succeeds\n")


def _prepare_shard_dir(run: _Run) -> None:
    """Create the shard folder, or empty it when it belongs to another run key."""
    info = run.shard_dir / "run.json"
    if info.exists():
        try:
            old = json.loads(info.read_text()).get("run_key")
        except (OSError, json.JSONDecodeError):
            old = None
        if old == run.key:
            return
        run.reporter.log(f"discarding shards of a different run in {run.shard_dir.name} (config, weights or survey changed)")
        shutil.rmtree(run.shard_dir)
    # a folder without run.json may be another array task's, just being created: never delete it
    make_dirs(run.shard_dir)
    with atomic_path(info) as tmp:
        tmp.write_text(json.dumps({"run_key": run.key, "model": run.model, "survey": str(run.survey),
                                   "survey_digest": run.reader.digest, "n_objects": run.n}, indent=1))


def _fit_rows(run: _Run, manifest: RunManifest | None) -> np.ndarray:
    table = run.reader.table()
    rows = np.flatnonzero(table["split"].to_numpy() == "train")
    if rows.size == 0:
        rows = np.arange(run.n)
        run.fit_warnings.append(f"{run.model}: the survey has no 'train' split: fitted on all {run.n} objects, "
                                "so every object is scored by a fit that saw it")
    limit = getattr(run.cfg, "fit_max_objects", None)
    if limit is not None and rows.size > limit:
        rng = np.random.default_rng([run.cfg.seed, 17])
        rows = np.sort(rng.choice(rows, size=limit, replace=False))
    return rows


def _fields(embedder: Embedder) -> tuple[str, ...]:
    return tuple(getattr(embedder, "input_fields", ("images", "spectra", "rgb")))


def _prepare_embedder(run: _Run, manifest: RunManifest | None = None) -> None:
    """Fit (train split) or load the stored fit; no-op for pretrained models."""
    emb = run.embedder
    if not type(emb).needs_fit:
        return
    from fmb_engine.embed.models_check import state_digest

    state_file = run.shard_dir / "state.h5"
    state: dict[str, np.ndarray] | None = None
    if run.fixed_state is not None:
        state = run.fixed_state
    elif state_file.exists():
        with h5py.File(state_file, "r") as f:
            if f.attrs.get("run_key") == run.key:
                state = {k: v[()] for k, v in f["state"].items()}
                run.fit_info = json.loads(f.attrs.get("fit_info", "{}"))
    elif run.final.exists() and not (run.shard_dir / FORCED).exists():
        with EmbeddingReader(run.final) as r:
            if r.extra.get("run_key") == run.key and (stored := r.state()):  # files merged without state: refit
                state, run.fit_info = stored, r.extra.get("fit", {})
    if state is not None:
        emb.load_state_dict(state)
        run.reporter.log(f"{run.model}: reusing the stored fit ({run.fit_info.get('fit_objects', '?')} train objects)")
        if not state_file.exists():  # the merge copies state.h5 into the final file: keep it for every source
            _save_state(run, state_file, state)
    else:
        rows = _fit_rows(run, manifest)
        bs = run.cfg.batch_size
        t0 = time.perf_counter()
        with run.reporter.task(f"fit {run.model} on {rows.size} train objects", int(rows.size)) as task:

            def batches():
                for i in range(0, rows.size, bs):
                    batch = run.reader.read_rows(rows[i : i + bs], _fields(emb))
                    yield batch
                    task.advance(len(batch))

            emb.fit(batches())
        state = emb.state_dict()
        run.fit_info = {"rows": int(rows.size), "seconds": round(time.perf_counter() - t0, 3)} | dict(
            getattr(emb, "fit_counts", {})
        )
        warnings = run.fit_warnings + list(getattr(emb, "fit_warnings", []))
        if warnings:
            run.fit_info["warnings"] = warnings
        _save_state(run, state_file, state)
    run.state_digest = state_digest(state)
    for warning in run.fit_info.get("warnings", []):  # a reused fit repeats its warnings: its weakness stays
        run.reporter.log(f"warning: {warning}")
        if manifest:
            manifest.warn(warning)


def _save_state(run: _Run, path: Path, state: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["run_key"] = run.key
        f.attrs["fit_info"] = json.dumps(run.fit_info)
        g = f.create_group("state")
        for k, v in state.items():
            g.create_dataset(k, data=np.asarray(v))


def _existing_shards(run: _Run) -> list[tuple[int, int, Path]]:
    out = []
    if run.shard_dir.is_dir():
        for p in run.shard_dir.iterdir():
            m = _SHARD_RE.match(p.name)
            if m:
                out.append((int(m.group(1)), int(m.group(2)), p))
    return sorted(out)


def _todo_pieces(run: _Run, start: int, stop: int, shard_size: int) -> list[tuple[int, int]]:
    """Contiguous row ranges of ``[start, stop)`` not yet in a shard, cut on the global shard grid."""
    covered = np.zeros(stop - start, bool)
    for lo, hi, _ in _existing_shards(run):
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


def _embed_piece(run: _Run, lo: int, hi: int, task) -> dict[str, Any]:
    """Embed rows [lo, hi) and write their shard atomically; returns counts."""
    import torch

    emb = run.embedder
    mods = tuple(type(emb).modalities)
    torch.manual_seed(run.cfg.seed)  # same seed per shard: results do not depend on resume order
    np.random.seed(run.cfg.seed % (2**32))
    parts: dict[str, list[np.ndarray]] = {m: [] for m in mods}
    valid_parts: dict[str, list[np.ndarray]] = {m: [] for m in mods}
    ids, rows, reasons = [], [], []
    for batch in run.reader.iter_batches(run.cfg.batch_size, start=lo, stop=hi, fields=_fields(emb)):
        out = emb.embed(batch)
        valid, why = embeddability(batch, mods)
        for m in mods:
            if m not in out or out[m].shape[0] != len(batch):
                raise DataError(f"embedder {run.model!r} returned {None if m not in out else out[m].shape} for "
                                f"{m!r}, expected {len(batch)} rows")
            vec = np.asarray(out[m], dtype=np.float32)
            bad = ~np.isfinite(vec).all(axis=1)
            if bad.any():
                valid[m] &= ~bad
                _add_reason(why, np.flatnonzero(bad), f"non_finite_{m}")
            parts[m].append(vec)
            valid_parts[m].append(valid[m])
        ids.append(batch.object_ids)
        rows.append(batch.indices)
        reasons.append(why)
        task.advance(len(batch))
    vectors = {m: np.concatenate(v) for m, v in parts.items()}
    shard = run.shard_dir / f"shard-{lo:09d}-{hi:09d}.h5"
    write_embeddings(
        shard, np.concatenate(ids), vectors, run.meta({"rows": [lo, hi], "state_digest": run.state_digest}),
        rows=np.concatenate(rows), valid={m: np.concatenate(v) for m, v in valid_parts.items()},
        reasons=np.concatenate(reasons),
    )
    return {"objects": hi - lo, "shard": shard}


def embed_shard(
    ws: Workspace,
    survey_path: Path,
    model: str,
    resolved: Resolved,
    start: int = 0,
    stop: int | None = None,
    *,
    reporter: Reporter | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    output: Path | None = None,
    manifest: RunManifest | None = None,
    fit_from: Path | None = None,
    _run: _Run | None = None,
) -> dict[str, Any]:
    """Embed survey rows ``[start, stop)`` into shard files (skipping rows already done).

    Returns ``{"embedded": n, "reused": n, "shards": [paths], "range": [start, stop]}``.
    Merging is separate (:func:`merge_shards`), so array tasks can call this independently.
    """
    if shard_size < 1:
        raise ConfigError(f"shard_size must be >= 1, got {shard_size}")
    run = _run or _open_run(ws, survey_path, model, resolved, reporter, output, fit_from)
    try:
        stop = run.n if stop is None else min(int(stop), run.n)
        start = int(start)
        if not 0 <= start <= stop:
            raise ConfigError(f"row range [{start}, {stop}) is invalid for a survey of {run.n} objects")
        _prepare_shard_dir(run)
        ph = manifest.phase if manifest else _null_phase
        with ph("fit"):
            _prepare_embedder(run, manifest)
        pieces = _todo_pieces(run, start, stop, shard_size)
        todo = sum(b - a for a, b in pieces)
        written = []
        with ph("embed"), run.reporter.task(f"embed {run.model} rows {start}-{stop}", stop - start) as task:
            task.advance(stop - start - todo)
            for lo, hi in pieces:
                written.append(_embed_piece(run, lo, hi, task)["shard"])
        return {"embedded": todo, "reused": stop - start - todo, "shards": written, "range": [start, stop]}
    finally:
        if _run is None:
            run.reader.close()


class _null_phase:
    def __init__(self, name: str):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def coverage(ws: Workspace, model: str, n_objects: int, output: Path | None = None) -> dict[str, Any]:
    """Which rows of ``[0, n_objects)`` the shards of ``model`` hold: ``{"done": n, "missing": [[lo, hi], ...]}``."""
    final = Path(output) if output is not None else embeddings_path(ws, model)
    shard_dir = final.with_name(final.stem + ".shards")
    covered = np.zeros(n_objects, bool)
    if shard_dir.is_dir():
        for p in shard_dir.iterdir():
            m = _SHARD_RE.match(p.name)
            if m:
                covered[int(m.group(1)) : min(int(m.group(2)), n_objects)] = True
    return {"done": int(covered.sum()), "missing": _ranges(~covered)}


def _ranges(mask: np.ndarray) -> list[list[int]]:
    if not mask.any():
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return [[int(a), int(b)] for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True)]


def merge_shards(
    ws: Workspace, model: str, *, output: Path | None = None, keep_shards: bool = False,
    reporter: Reporter | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Merge the shards of ``model`` into one embedding file (atomic); every survey row exactly once.

    Raises DataError naming the missing row ranges when the shards do not cover the survey,
    or when shards of different runs are mixed. Rows held by two shards (overlapping array
    ranges) are taken once, from the shard listed first.
    """
    final = Path(output) if output is not None else embeddings_path(ws, model)
    shard_dir = final.with_name(final.stem + ".shards")
    info_path = shard_dir / "run.json"
    if not info_path.exists():
        raise DataError(f"no shards to merge in {shard_dir}")
    info = json.loads(info_path.read_text())
    n = int(info["n_objects"])
    shards = []
    for p in sorted(shard_dir.iterdir()):
        m = _SHARD_RE.match(p.name)
        if m:
            shards.append((int(m.group(1)), int(m.group(2)), p))
    cov = np.zeros(n, bool)
    for lo, hi, _ in shards:
        cov[lo:hi] = True
    if not cov.all():
        missing = _ranges(~cov)
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
    state: dict[str, np.ndarray] = {}
    state_file = shard_dir / "state.h5"
    if state_file.exists():
        with h5py.File(state_file, "r") as f:
            state = {k: v[()] for k, v in f["state"].items()}
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
            raise DataError(f"merge of {model}: rows {_ranges(~taken)[:3]} missing")
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


_REASON_MODALITIES = {"missing_band": ("image", "joint"), "no_spectrum": ("spectrum", "joint"),
                      "no_valid_spectrum_pixels": ("spectrum", "joint")}


def _concerns(part: str, modality: str) -> bool:
    """Whether a reason part explains why ``modality``'s vector is not valid (``non_finite_<m>`` only its own)."""
    if part.startswith("non_finite_"):
        return part == f"non_finite_{modality}"
    return modality in _REASON_MODALITIES.get(part.split(":", 1)[0], (modality,))


def _not_embeddable_summary(path: Path) -> dict[str, Any]:
    """Counts per reason, and per modality how many vectors are valid and why the others are not.

    An object without a spectrum is not embeddable *as a spectrum* only: its image is
    embedded and scored, so the per-modality view is what a user needs to read.
    """
    with EmbeddingReader(path) as r:
        reasons = r.reasons()
        ids = r.object_ids
        valid = {m: r.valid(m) for m in r.modalities}
    per_mod = {m: int((~v).sum()) for m, v in valid.items()}
    modalities = {}
    for m, v in valid.items():
        why = Counter(part for reason in reasons[~v] for part in str(reason).split(";") if _concerns(part, m))
        modalities[m] = {"embedded": int(v.sum()), "missing": int((~v).sum()), "by_reason": dict(why)}
    counter: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for i in np.flatnonzero(reasons != ""):
        for part in str(reasons[i]).split(";"):
            counter[part] += 1
            lst = examples.setdefault(part, [])
            if len(lst) < _MANIFEST_IDS:
                lst.append(str(ids[i]))
    return {"objects": int((reasons != "").sum()), "by_reason": dict(counter), "invalid_per_modality": per_mod,
            "modalities": modalities, "examples": examples}


def embed_survey(
    ws: Workspace,
    survey_path: Path,
    model: str,
    resolved: Resolved,
    reporter: Reporter | None = None,
    *,
    start: int = 0,
    stop: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    output: Path | None = None,
    force: bool = False,
    keep_shards: bool = False,
    fit_from: Path | None = None,
) -> StageResult:
    """The stage door: embed ``survey_path`` with embedder ``model`` (config ``resolved`` = section embed.<model>).

    Embeds rows ``[start, stop)`` (default: all) into shards, resuming any earlier run
    with the same run key, and merges into ``embeddings/<model>.h5`` once every row
    is done. ``force`` discards earlier shards and the final file's reuse. ``fit_from``
    (pca/cca) reuses the fitted state stored in another embedding file instead of fitting
    on this survey's train split, so new objects land in the same space.
    """
    run = _open_run(ws, survey_path, model, resolved, reporter, output, fit_from)
    manifest = RunManifest(ws, f"embed.{model}", config_record(resolved), seed=run.cfg.seed)
    manifest.input("survey", survey_path, digest=run.reader.digest)
    manifest.data["inputs"]["survey_digest"] = run.reader.digest
    manifest.data["inputs"]["weights_digest"] = run.weights_digest
    manifest.data["run_key"] = run.key
    manifest.data["device"] = run.device
    summary: dict[str, Any] = {"model": model, "aligned": bool(type(run.embedder).aligned),
                               "modalities": list(type(run.embedder).modalities), "device": run.device}
    try:
        with locks.hold(run.final, f"embeddings {run.final.name}"):
            if force:  # the final file stays until the recompute is merged over it
                discard(ws, model, output)
            if _up_to_date(run):
                run.reporter.log(f"{run.final.name} is up to date (same config, weights and survey): nothing to do")
                with EmbeddingReader(run.final) as r:
                    run.fit_info = dict(r.extra.get("fit", {}))
                for warning in run.fit_info.get("warnings", []):
                    manifest.warn(warning)
                manifest.count("objects", run.n)
                manifest.count("embedded", 0)
                summary |= {"up_to_date": True, "objects": run.n}
            else:
                res = embed_shard(ws, survey_path, model, resolved, start, stop, shard_size=shard_size, output=output,
                                  manifest=manifest, _run=run)
                manifest.count("range", res["range"])
                manifest.count("embedded", res["embedded"])
                manifest.count("resumed_from_shards", res["reused"])
                summary |= {"embedded": res["embedded"], "resumed": res["reused"], "range": res["range"]}
                cov = coverage(ws, model, run.n, output)
                if cov["missing"]:
                    summary |= {"complete": False, "missing": cov["missing"]}
                    manifest.count("rows_missing", int(run.n - cov["done"]))
                    run.reporter.log(f"{cov['done']} of {run.n} rows embedded; merge when the remaining ranges are done")
                else:
                    with manifest.phase("merge"):
                        _, merged = merge_shards(ws, model, output=output, keep_shards=keep_shards, reporter=run.reporter)
                    manifest.count("duplicates_dropped", merged["duplicates_dropped"])
                    summary |= {"complete": True}
            if run.fit_info:
                manifest.count("fit", run.fit_info)
            outputs: dict[str, Path] = {}
            if run.final.exists() and _up_to_date(run):
                ne = _not_embeddable_summary(run.final)
                manifest.count("objects", run.n)
                manifest.count("not_embeddable", ne)
                summary |= {"objects": run.n, "not_embeddable": ne["objects"], "not_embeddable_by_reason": ne["by_reason"],
                            "modalities": ne["modalities"]}
                manifest.output("embeddings", run.final)
                outputs["embeddings"] = run.final
            else:
                manifest.output("shards", run.shard_dir)
                outputs["shards"] = run.shard_dir
    except BaseException as exc:
        if not isinstance(exc, BusyError):  # a busy output is another run's: this one never started
            manifest.write(status="interrupted" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "failed")
        raise
    finally:
        run.reader.close()
    return StageResult(outputs, manifest.write(), summary)
