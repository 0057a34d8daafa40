"""The fitted state of pca/cca: which rows it is fitted on, where it is kept, how it is read back.

Why: a fitted embedder is fitted once, on the train split (a seeded subset of at
most ``fit_max_objects``), and every shard, the merge and every later
re-embedding must use that same fit. The state is kept in ``state.h5`` in the
shard folder while the run is under way, then in the final embedding file;
``fit_from`` applies the fit stored in another embedding file to a new survey
(new objects in the same space).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from fmb_engine.embed.store import EmbeddingReader
from fmb_engine.errors import ConfigError
from fmb_engine.workspace import atomic_path

#: The fitted state of a run under way, in its shard folder.
STATE_FILE = "state.h5"


def fit_rows(split: np.ndarray, model: str, limit: int | None, seed: int) -> tuple[np.ndarray, list[str]]:
    """The rows to fit on (train split, at most ``limit``, seeded) and the warnings when the fit is weaker."""
    warnings = []
    rows = np.flatnonzero(split == "train")
    if rows.size == 0:
        rows = np.arange(split.size)
        warnings.append(f"{model}: the survey has no 'train' split: fitted on all {split.size} objects, "
                        "so every object is scored by a fit that saw it")
    if limit is not None and rows.size > limit:
        rng = np.random.default_rng([seed, 17])
        rows = np.sort(rng.choice(rows, size=limit, replace=False))
    return rows, warnings


def save_state(path: Path, state: dict[str, np.ndarray], run_key: str, fit_info: dict[str, Any]) -> None:
    """Write a fitted state with the run key it belongs to and how it was fitted (atomic)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["run_key"] = run_key
        f.attrs["fit_info"] = json.dumps(fit_info)
        g = f.create_group("state")
        for k, v in state.items():
            g.create_dataset(k, data=np.asarray(v))


def load_state(path: Path, run_key: str | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The state and fit info :func:`save_state` wrote; None when ``run_key`` is given and the file is another run's."""
    with h5py.File(path, "r") as f:
        if run_key is not None and f.attrs.get("run_key") != run_key:
            return None
        return {k: v[()] for k, v in f["state"].items()}, json.loads(f.attrs.get("fit_info", "{}"))


def read_fit(path: Path, model: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The fitted state stored in an embedding file of ``model`` (for ``fit_from``)."""
    with EmbeddingReader(path) as r:
        if r.embedder != model:
            raise ConfigError(f"fit_from {path} holds {r.embedder!r} embeddings, not {model!r}")
        state = r.state()
        if not state:
            raise ConfigError(f"fit_from {path} has no fitted state (only fitted embedders such as pca/cca store one)")
        return state, dict(r.extra.get("fit", {})) | {"fit_from": str(path)}
