"""The embedding stage's orchestration: survey -> ``embeddings/<model>.h5``, resumable and shardable.

A run embeds survey rows block by block into shard files (:mod:`fmb_engine.embed.shards`),
resuming any earlier run of the same run key (:mod:`fmb_engine.embed.digests`: the
embedder name, every config value except ``batch_size`` and ``device`` -- they change
how fast, not what --, the weights digest and the survey digest; shards of another key
are discarded with a log line). When the shards cover the whole survey they are merged
into ``embeddings/<model>.h5`` (atomic) and removed (:mod:`fmb_engine.embed.merge`).
SLURM array tasks embed their row range ``[start, stop)`` with :func:`embed_shard`; the
task that completes the coverage merges.

Fitted embedders (pca, cca) are fitted once on the train split and every shard and later
re-embedding uses that fit (:mod:`fmb_engine.embed.fit`). Not embeddable objects still get
a row, flagged per modality with a reason (:mod:`fmb_engine.embed.validity`).

Vectors are bit-identical between runs with the same inputs, seed and shard
layout (an interrupted run recomputes the cut shard with the same batches).
Different row ranges cut batches differently; BLAS may then take other code
paths and vectors agree to float32 rounding only.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fmb_engine.config import Resolved
from fmb_engine.devices import resolve_device
from fmb_engine.embed import base
from fmb_engine.embed.base import Embedder
from fmb_engine.embed.config import EmbedderConfig
from fmb_engine.embed.digests import run_key, state_digest, weight_files, weights_digest
from fmb_engine.embed.fit import STATE_FILE, fit_rows, load_state, read_fit, save_state
from fmb_engine.embed.merge import merge_shards
from fmb_engine.embed.catalog import DEFAULT_SHARD_SIZE
from fmb_engine.embed.shards import (
    FORCED,
    coverage,
    discard,
    embeddings_path,
    prepare_shard_dir,
    shard_dir_of,
    shard_file,
    todo_pieces,
)
from fmb_engine.embed.store import EmbeddingMeta, EmbeddingReader, write_embeddings
from fmb_engine.embed.validity import add_reason, embeddability, not_embeddable_summary
from fmb_engine import locks
from fmb_engine.errors import ConfigError, DataError
from fmb_engine.manifest import RunManifest, versions
from fmb_engine.progress import Reporter, Silent
from fmb_engine.stage_run import StageResult, config_record, stage_run
from fmb_engine.survey.store import SurveyReader
from fmb_engine.workspace import Workspace


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
            fixed, fit_info = read_fit(Path(fit_from), model)
            fit_digest = state_digest(fixed)
        except BaseException:
            reader.close()
            raise
    key = run_key(model, cfg, wd, reader.digest, reader.n_objects, fit_digest)
    final = embeddings_path(ws, model, output)
    return _Run(ws, Path(survey_path), model, resolved, cfg, reader, embedder, key, wd, device, shard_dir_of(final),
                final, reporter or Silent(), fit_info=fit_info, fixed_state=fixed)


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


def _fields(embedder: Embedder) -> tuple[str, ...]:
    return tuple(getattr(embedder, "input_fields", ("images", "spectra", "rgb")))


def _prepare_embedder(run: _Run, manifest: RunManifest | None = None) -> None:
    """Fit (train split) or load the stored fit; no-op for pretrained models."""
    emb = run.embedder
    if not type(emb).needs_fit:
        return
    state_file = run.shard_dir / STATE_FILE
    state: dict[str, np.ndarray] | None = None
    if run.fixed_state is not None:
        state = run.fixed_state
    elif state_file.exists():
        if (stored := load_state(state_file, run.key)) is not None:
            state, run.fit_info = stored
    elif run.final.exists() and not (run.shard_dir / FORCED).exists():
        with EmbeddingReader(run.final) as r:
            if r.extra.get("run_key") == run.key and (stored := r.state()):  # files merged without state: refit
                state, run.fit_info = stored, r.extra.get("fit", {})
    if state is not None:
        emb.load_state_dict(state)
        run.reporter.log(f"{run.model}: reusing the stored fit ({run.fit_info.get('fit_objects', '?')} train objects)")
        if not state_file.exists():  # the merge copies state.h5 into the final file: keep it for every source
            save_state(state_file, state, run.key, run.fit_info)
    else:
        rows, warnings = fit_rows(run.reader.table()["split"].to_numpy(), run.model,
                                  getattr(run.cfg, "fit_max_objects", None), run.cfg.seed)
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
        warnings += list(getattr(emb, "fit_warnings", []))
        if warnings:
            run.fit_info["warnings"] = warnings
        save_state(state_file, state, run.key, run.fit_info)
    run.state_digest = state_digest(state)
    for warning in run.fit_info.get("warnings", []):  # a reused fit repeats its warnings: its weakness stays
        run.reporter.log(f"warning: {warning}")
        if manifest:
            manifest.warn(warning)


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
                add_reason(why, np.flatnonzero(bad), f"non_finite_{m}")
            parts[m].append(vec)
            valid_parts[m].append(valid[m])
        ids.append(batch.object_ids)
        rows.append(batch.indices)
        reasons.append(why)
        task.advance(len(batch))
    vectors = {m: np.concatenate(v) for m, v in parts.items()}
    shard = shard_file(run.shard_dir, lo, hi)
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
        prepare_shard_dir(run.shard_dir, {"run_key": run.key, "model": run.model, "survey": str(run.survey),
                                          "survey_digest": run.reader.digest, "n_objects": run.n}, run.reporter)
        ph = manifest.phase if manifest else _null_phase
        with ph("fit"):
            _prepare_embedder(run, manifest)
        pieces = todo_pieces(run.shard_dir, start, stop, shard_size)
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
    with stage_run(ws, f"embed.{model}", config_record(resolved), seed=resolved.values.seed) as manifest:
        run = _open_run(ws, survey_path, model, resolved, reporter, output, fit_from)
        with contextlib.closing(run.reader), locks.hold(run.final, f"embeddings {run.final.name}"):
            manifest.input("survey", survey_path, digest=run.reader.digest)
            manifest.input_digest("survey_digest", run.reader.digest)
            manifest.input_digest("weights_digest", run.weights_digest)
            manifest.record("run_key", run.key)
            manifest.record("device", run.device)
            summary: dict[str, Any] = {"model": model, "aligned": bool(type(run.embedder).aligned),
                                       "modalities": list(type(run.embedder).modalities), "device": run.device}
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
                ne = not_embeddable_summary(run.final)
                manifest.count("objects", run.n)
                manifest.count("not_embeddable", ne)
                summary |= {"objects": run.n, "not_embeddable": ne["objects"], "not_embeddable_by_reason": ne["by_reason"],
                            "modalities": ne["modalities"]}
                manifest.output("embeddings", run.final)
                outputs["embeddings"] = run.final
            else:
                manifest.output("shards", run.shard_dir)
                outputs["shards"] = run.shard_dir
    return StageResult(outputs, manifest.path, summary)
