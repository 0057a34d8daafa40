"""Door of ``fmb-engine embed synthetic``: a synthetic embedding file of any size, written chunk by chunk.

Why: benchmarks and tests of the later stages need standard embedding files of 10^5-10^7
objects with truth and no survey. :mod:`fmb_engine.embed.synthetic` makes the rows; this
module streams them into ``embeddings/<name>.h5`` (the format every reader reads) with
the truth as per-object columns, so memory stays at a few chunk-sized arrays whatever N is.

What marks the file as survey-free (:func:`fmb_engine.lineage.is_survey_free`): its
``extra`` holds ``survey_free: true`` and the generator's settings, and its
``survey_digest`` is the digest of the synthetic population (seed, size, outlier fraction),
so files of one population can be scored together and files of two cannot.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fmb_engine import locks
from fmb_engine.embed.store import REASON_LENGTH, EmbeddingMeta, EmbeddingWriter
from fmb_engine.embed.synthetic import CLASS_LENGTH, KINDS, SyntheticModel, SyntheticSpec
from fmb_engine.errors import ConfigError
from fmb_engine.progress import Reporter, Silent
from fmb_engine.survey.store import ID_LENGTH, require_free_space
from fmb_engine.workspace import Workspace

#: Rows per write when none are asked for: about 100 MB of vectors at {768, 768, 1536}.
DEFAULT_CHUNK = 8192
#: The per-object columns holding the truth.
TRUTH_COLUMNS = {"anomaly_class": f"S{CLASS_LENGTH}", "is_anomaly": bool}
#: HDF5 metadata and the final flush, on top of the rows' bytes.
_MARGIN = 4 << 20


def file_bytes(spec: SyntheticSpec) -> int:
    """Bytes the file takes on disk: vectors, ids, survey rows, reasons, validity flags and truth."""
    per_row = 4 * sum(spec.dims.values()) + ID_LENGTH + 8 + REASON_LENGTH + len(spec.dims) + CLASS_LENGTH + 1
    return spec.objects * per_row + _MARGIN


def write_synthetic(ws: Workspace, spec: SyntheticSpec, name: str = "synthetic", chunk: int = DEFAULT_CHUNK,
                    reporter: Reporter | None = None, force: bool = False) -> Any:
    """Write ``embeddings/<name>.h5`` from ``spec``, ``chunk`` rows at a time (atomic; a stage manifest).

    The same spec gives the same vectors and truth whatever ``chunk`` is. An existing file is
    replaced only with ``force``.
    """
    from threadpoolctl import threadpool_limits

    from fmb_engine.embed.shards import embeddings_path
    from fmb_engine.stage_run import StageResult, stage_run

    if chunk < 1:
        raise ConfigError(f"--chunk must be >= 1, got {chunk}")
    reporter = reporter or Silent()
    path = embeddings_path(ws, name)
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; pass --force to replace it or --name to write another file")
    config = spec.record() | {"name": name, "chunk": chunk}
    with locks.hold(path, f"embeddings {path.name}"), \
            stage_run(ws, "embed.synthetic", config, seed=spec.seed) as manifest:
        require_free_space(path, file_bytes(spec))
        meta = EmbeddingMeta(embedder="synthetic", aligned=False, modalities=tuple(spec.dims),
                             config=spec.record(), survey_digest=spec.population_digest(),
                             extra={"survey_free": True, "synthetic": spec.record()})
        model = SyntheticModel(spec)
        counts = dict.fromkeys(KINDS, 0)
        writer = EmbeddingWriter(path, spec.objects, spec.dims, meta, columns=TRUTH_COLUMNS)
        try:
            # one BLAS thread: the maps are thin (16 or 32 inputs), and threads only contend for the cores
            with threadpool_limits(1, "blas"), manifest.phase("generate+write"), \
                    reporter.task(f"synthetic {spec.objects:,} objects", spec.objects) as task:
                for start in range(0, spec.objects, chunk):
                    stop = min(start + chunk, spec.objects)
                    rows = model.rows(start, stop)
                    writer.write(slice(start, stop), rows.object_ids, rows.vectors,
                                 columns={"anomaly_class": rows.anomaly_class, "is_anomaly": rows.is_anomaly})
                    for kind in KINDS:
                        counts[kind] += int((rows.anomaly_class == kind.encode()).sum())
                    task.advance(stop - start)
        except BaseException:
            writer.abort()
            raise
        writer.close(check_unique=False)  # ids are unique by construction; checking would hold them all
        manifest.record("survey_free", True)
        manifest.input_digest("synthetic_population", spec.population_digest())
        manifest.count("objects", spec.objects)
        manifest.count("outliers", counts)
        manifest.count("bytes", os.path.getsize(path))
        manifest.output("embeddings", path)
    return StageResult({"embeddings": Path(path)}, manifest.path,
                       {"objects": spec.objects, "dims": dict(spec.dims), "outliers": counts,
                        "population": spec.population_digest()})
