"""Sharded detection: the one-node ``detect`` cut into phases that separate jobs can run.

Why: past one node's time, fitting and scoring are spread over a scheduler's jobs
(:mod:`fmb_engine.jobs.chain` chains them). The phases call the functions of
:mod:`fmb_engine.detect.run` that the one-node run uses, so the results are the same bits:

1. **fit** (:func:`fit_modality`, one job per model x modality; :func:`fit_cross`, one per
   model for the mismatch): usable rows, the seeded fit sample and its vectors, the fitted
   flow (+ baselines) or the learned mismatch map, and the sample rows' scores;
2. **shard** (:func:`score_shard`, one array task per row range): scores of the usable rows
   outside the fit samples in its range of every file, with the fitted models. The ranges
   are whole ``detect.chunk_rows`` chunks (:func:`shard_ranges`), so every row is scored in
   the batch the one-node pass scores it in;
3. **merge** (:func:`merge`): the one-node ``detect`` with a score source that reads the
   files above (:class:`FromWork`): the same tables, flows, systems.parquet, manifest and
   published set, then fusion. The work folder is removed once the set is published.

Intermediate files live in the run's work folder ``scores/.shards/<run_id>/<model>/`` as
``.npz`` written atomically and read with ``allow_pickle=False``. Every phase is resumable:
a task whose file is already there returns at once. IsolationForest is not saved (scikit-learn
cannot without pickle): each shard refits it from the saved fit sample with the run's seed,
which grows the same trees (:func:`fmb_engine.detect.run.modality_scorers`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmb_engine.config import Resolved
from fmb_engine.detect.config import DetectConfig
from fmb_engine.detect.run import (
    RowPlan, Scored, fit_mismatch, fit_modalities, live_modalities, mismatch_rows, mismatch_scorer,
    modality_scorers, plan_rows, save_state, score_rows,
)
from fmb_engine.embed.store import EmbeddingReader
from fmb_engine.errors import DataError
from fmb_engine.workspace import Workspace, make_dirs

#: Work folders of sharded runs, inside ``scores/``.
WORK = ".shards"


def work_folder(ws: Workspace, run_id: str) -> Path:
    """``scores/.shards/<run_id>/``: the intermediate files of one sharded run."""
    return ws.folder("scores") / WORK / run_id


def shard_ranges(n: int, shards: int, chunk_rows: int) -> list[tuple[int, int]]:
    """``shards`` contiguous ``(start, stop)`` row ranges covering ``0..n``, each made of whole chunks.

    With more shards than chunks some ranges are empty."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    chunks = -(-n // chunk_rows)
    bounds = [min(n, (chunks * i // shards) * chunk_rows) for i in range(shards + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def peak_rss_gb() -> float:
    """This process's peak resident memory so far (GB): each phase reports it with its outputs, since
    the scheduler's accounting samples memory (every 30 s by default) and misses short jobs."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3)  # KiB on Linux


def _load(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path} is missing: the phase that writes it has not completed (see `fmb-engine jobs show`)")
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _rows_file(folder: Path, modality: str) -> Path:
    return folder / f"rows_{modality}.npz"


def _shard_file(folder: Path, index: int) -> Path:
    return folder / f"shard_{index:05d}.npz"


@dataclass
class Work:
    """One model's files in a sharded run's work folder."""

    folder: Path

    def plan(self, modalities: list[str] | tuple[str, ...]) -> RowPlan:
        rows = {m: _load(_rows_file(self.folder, m)) for m in modalities}
        return RowPlan({m: r["keep"] for m, r in rows.items()}, {m: r["sample"] for m, r in rows.items()},
                       {m: r["fit_x"] for m, r in rows.items()})

    def fitted(self, modality: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(the flow's state, the sample rows' scores by method) of a fitted modality."""
        data = _load(self.folder / f"fit_{modality}.npz")
        return ({k[6:]: v for k, v in data.items() if k.startswith("state.")},
                {k[6:]: v for k, v in data.items() if k.startswith("score.")})

    def cross(self) -> dict[str, np.ndarray]:
        return _load(self.folder / "mismatch.npz")

    def rest(self, shards: int, prefix: str) -> dict[str, np.ndarray]:
        """The shards' scores of ``prefix`` (``<modality>/`` or ``cross/``) by method, in row order."""
        parts = [_load(_shard_file(self.folder, i)) for i in range(shards)]
        names = sorted({k[len(prefix):] for p in parts for k in p if k.startswith(prefix)})
        return {n: np.concatenate([p[prefix + n] for p in parts]) for n in names}


def resolved_detect(values: dict[str, Any], sources: dict[str, str]) -> Resolved:
    """The detect section a job was given as plain values (validated again in the job)."""
    return Resolved("detect", DetectConfig.model_validate(values), dict(sources))


def _reader_and_cfg(root: str, model: str, values: dict[str, Any], sources: dict[str, str]
                    ) -> tuple[Workspace, Path, DetectConfig]:
    ws = Workspace(Path(root))
    cfg: DetectConfig = resolved_detect(values, sources).values  # type: ignore[assignment]
    return ws, ws.folder("embeddings") / f"{model}.h5", cfg


def fit_modality(root: str, run_id: str, model: str, modality: str, values: dict[str, Any],
                 sources: dict[str, str], flows: bool) -> dict[str, Any]:
    """Fit phase of one model x modality: its usable rows and fit sample, then (``flows``) its flow and baselines."""
    ws, path, cfg = _reader_and_cfg(root, model, values, sources)
    folder = work_folder(ws, run_id) / model
    make_dirs(folder)
    done = folder / f"fit_{modality}.npz"
    if _rows_file(folder, modality).is_file() and (done.is_file() or not flows):
        return {"model": model, "modality": modality, "reused": True}
    with EmbeddingReader(path) as reader:
        plan = plan_rows(reader, [modality], cfg)
        side_by_side = len(reader.meta.modalities)
    keep, sample, x = plan.keeps[modality], plan.samples[modality], plan.fit_x[modality]
    save_state({"keep": keep, "sample": sample, "fit_x": x}, _rows_file(folder, modality))
    fitted = bool(flows and live_modalities({modality: keep}))
    device = None
    if fitted:
        from fmb_engine.devices import resolve_device

        device = resolve_device(cfg.device)
        scores, _, states, searches = fit_modalities({modality: x}, cfg, side_by_side=side_by_side,
                                                     n_scored={modality: int(keep.sum())})
        save_state({f"state.{k}": v for k, v in states[modality].items()}
                   | {f"score.{k}": v for k, v in scores[modality].items()}, done)
    return {"model": model, "modality": modality, "usable": int(keep.sum()), "fit_rows": int(sample.shape[0]),
            "fitted": fitted, "device": device, "peak_rss_gb": peak_rss_gb()} | ({"knn_baseline": searches[modality]}
                                                               if fitted and modality in searches else {})


def fit_cross(root: str, run_id: str, model: str, values: dict[str, Any], sources: dict[str, str]) -> dict[str, Any]:
    """Fit phase of one model's mismatch: its rows and sample, and the learned map (cosine needs no fit)."""
    ws, path, cfg = _reader_and_cfg(root, model, values, sources)
    folder = work_folder(ws, run_id) / model
    make_dirs(folder)
    done = folder / "mismatch.npz"
    if done.is_file():
        return {"model": model, "modality": "cross", "reused": True}
    with EmbeddingReader(path) as reader:
        plan = plan_rows(reader, ("image", "spectrum"), cfg)
        keep, sample = mismatch_rows(plan.keeps, cfg)
        method, fit, state = "", np.zeros(0), {}
        if live_modalities({"cross": keep}):
            method, fit_scores, _, state = fit_mismatch(reader, sample, cfg, plan)
            fit = fit_scores["native"]
            if method == "cosine":
                sample = sample[:0]
    save_state({"keep": keep, "sample": sample, "method": np.asarray(method), "fit": fit}
               | {f"state.{k}": v for k, v in state.items()}, done)
    return {"model": model, "modality": "cross", "method": method or "skipped", "usable": int(keep.sum()),
            "peak_rss_gb": peak_rss_gb()}


def score_shard(root: str, run_id: str, models: list[str], values: dict[str, Any], sources: dict[str, str],
                flows: bool, mismatch: bool, index: int, shards: int) -> dict[str, Any]:
    """Shard phase: scores of the rows of shard ``index`` of ``shards`` outside the fit samples, every model."""
    rows = 0
    for model in models:
        ws, path, cfg = _reader_and_cfg(root, model, values, sources)
        work = Work(work_folder(ws, run_id) / model)
        out = _shard_file(work.folder, index)
        if out.is_file():
            continue
        with EmbeddingReader(path) as reader:
            start, stop = shard_ranges(reader.n_objects, shards, cfg.chunk_rows)[index]
            scores: dict[str, np.ndarray] = {}
            if flows:
                plan = work.plan(reader.meta.modalities)
                for modality in live_modalities(plan.keeps):
                    state, _ = work.fitted(modality)
                    scorers = modality_scorers(state, plan.fit_x[modality], cfg, int(plan.keeps[modality].sum()))
                    got = score_rows(reader, (modality,), plan.keeps[modality], plan.samples[modality], scorers,
                                     cfg.chunk_rows, start, stop)
                    scores |= {f"{modality}/{name}": v for name, v in got.items()}
            if mismatch and {"image", "spectrum"} <= set(reader.meta.modalities):
                cross = work.cross()
                method = str(cross["method"])
                if method:
                    scorers = mismatch_scorer(method, {k[6:]: v for k, v in cross.items() if k.startswith("state.")})
                    got = score_rows(reader, ("image", "spectrum"), cross["keep"], cross["sample"], scorers,
                                     cfg.chunk_rows, start, stop)
                    scores |= {f"cross/{name}": v for name, v in got.items()}
        save_state(scores, out)
        rows += stop - start
    return {"shard": index, "of": shards, "rows": rows, "peak_rss_gb": peak_rss_gb()}


class FromWork:
    """The score source of a sharded run's merge: what its fit and shard jobs wrote
    (:func:`fmb_engine.detect.run.score_run` turns it into the same tables as the one-node run)."""

    def __init__(self, ws: Workspace, run_id: str, shards: int):
        self.root, self.shards = work_folder(ws, run_id), shards

    def plan(self, reader: EmbeddingReader, model: str) -> RowPlan:
        return Work(self.root / model).plan(reader.meta.modalities)

    def flows(self, reader: EmbeddingReader, model: str, plan: RowPlan, live: list[str]
              ) -> tuple[dict[str, Scored], dict[str, dict[str, np.ndarray]]]:
        work = Work(self.root / model)
        scored, states = {}, {}
        for modality in live:
            states[modality], fit = work.fitted(modality)
            scored[modality] = Scored(fit, work.rest(self.shards, f"{modality}/"))
        return scored, states

    def mismatch(self, reader: EmbeddingReader, model: str, plan: RowPlan, keep: np.ndarray, sample: np.ndarray
                 ) -> tuple[str, Scored, np.ndarray]:
        work = Work(self.root / model)
        cross = work.cross()
        if not np.array_equal(cross["keep"], keep):
            raise DataError(f"{work.folder / 'mismatch.npz'}: its usable rows differ from the fit jobs' "
                            "(the embedding file changed during the run?); submit the run again")
        return str(cross["method"]), Scored({"native": cross["fit"]}, work.rest(self.shards, "cross/")), cross["sample"]


def merge(root: str, run_id: str, values: dict[str, Any], sources: dict[str, str], parts: tuple[str, ...],
          shards: int, survey: str | None) -> dict[str, Any]:
    """Merge phase: the one-node ``detect`` fed by the work folder; removes it once the outputs are published."""
    from fmb_engine.detect.run import detect

    ws = Workspace(Path(root))
    work = work_folder(ws, run_id)
    if not work.is_dir():
        raise DataError(f"{work} is missing: the run's fit and shard phases left no files (already merged, "
                        "or removed); submit the run again")
    result = detect(ws, resolved_detect(values, sources), parts=parts,
                    survey=Path(survey) if survey else None, source=lambda cfg, manifest: FromWork(ws, run_id, shards))
    shutil.rmtree(work, ignore_errors=True)
    return {"systems": len(result.summary["systems"]), "skipped": [s["system"] for s in result.summary["skipped"]],
            "manifest": str(result.manifest), "peak_rss_gb": peak_rss_gb()}


def model_names(ws: Workspace, resolved: Resolved) -> list[str]:
    from fmb_engine.detect.run import embedding_runs

    return [p.stem for p in embedding_runs(ws, resolved.values.models)]  # type: ignore[attr-defined]


def idle_shards_note(ws: Workspace, resolved: Resolved, shards: int) -> str | None:
    """Why some of ``shards`` tasks will have no rows to score (shards are whole chunks), or None."""
    chunk_rows = resolved.values.chunk_rows
    largest = 0
    for model in model_names(ws, resolved):
        with EmbeddingReader(ws.folder("embeddings") / f"{model}.h5") as reader:
            largest = max(largest, reader.n_objects)
    chunks = -(-largest // chunk_rows)
    if chunks >= shards:
        return None
    return (f"{largest:,} objects make {chunks} chunk(s) of detect.chunk_rows={chunk_rows:,} rows and a shard is whole "
            f"chunks: {shards - chunks} of the {shards} shard tasks have nothing to score (lower --shards or "
            "detect.chunk_rows)")


def modalities_of(ws: Workspace, model: str) -> list[str]:
    with EmbeddingReader(ws.folder("embeddings") / f"{model}.h5") as reader:
        return list(reader.meta.modalities)


def run_in_order(root: str, run_id: str, values: dict[str, Any], sources: dict[str, str], parts: tuple[str, ...],
                 shards: int, survey: str | None) -> dict[str, Any]:
    """Every phase one after the other in this process: fits, the ``shards`` shards, the merge.

    What a kind without scheduler dependencies runs as one job (and ``--shards`` without an executor)."""
    ws = Workspace(Path(root))
    for call, args in phase_calls(ws, resolved_detect(values, sources), run_id, parts, shards, survey):
        for arg in args:
            call(*arg)
    return merge(root, run_id, values, sources, parts, shards, survey)


def phase_calls(ws: Workspace, resolved: Resolved, run_id: str, parts: tuple[str, ...], shards: int,
                survey: str | None) -> list[tuple[Any, list[tuple]]]:
    """The fit and shard phases as (function, argument tuples) in order; the merge is :func:`merge`."""
    from fmb_engine.stage_run import config_record

    record = config_record(resolved)
    values, sources = record["values"], record["sources"]
    root = str(ws.root)
    flows, mismatch = "flows" in parts, "mismatch" in parts
    models = model_names(ws, resolved)
    fits: list[tuple] = []
    crosses: list[tuple] = []
    for model in models:
        modalities = modalities_of(ws, model)
        fits += [(root, run_id, model, m, values, sources, flows) for m in modalities]
        if mismatch and {"image", "spectrum"} <= set(modalities):
            crosses.append((root, run_id, model, values, sources))
    shard_args = [(root, run_id, models, values, sources, flows, mismatch, i, shards) for i in range(shards)]
    return [(fit_modality, fits), (fit_cross, crosses), (score_shard, shard_args)]
