"""What identifies an embedding run: the weight files it reads, their digest, a fitted state's digest, the run key.

Why a module of its own: the embedding run keys its shards and output on these
digests, and `models check` reports the same weight files; both read them from
here, so neither has to import the other.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fmb_engine.embed.config import EmbedderConfig

#: Config keys that do not change the vectors (excluded from the run key).
NOT_IN_KEY = {"batch_size", "device"}


def weight_files(config: Any) -> list[Path]:
    """Every weight file an embedder with these settings will read (ConfigError naming what is missing).

    Duck-typed over the config models' own resolvers (:mod:`fmb_engine.embed.config`): AION
    (``snapshot_dir`` + ``adapter_path``), AstroPT/AstroCLIP (``checkpoint_path``); the
    fitted baselines have none. No model is imported.
    """
    if hasattr(config, "snapshot_dir"):
        from fmb_engine.embed.config import SNAPSHOT_FILES

        snap = config.snapshot_dir()
        return [snap / f for f in SNAPSHOT_FILES] + [config.adapter_path(snap)]
    if hasattr(config, "checkpoint_path"):
        return [config.checkpoint_path()]
    return []


def file_identity(path: Path) -> str:
    """Content id of one weight file: the blob name inside a Hugging Face cache, else its sha256.

    Hugging Face cache snapshots are symlinks into ``blobs/<sha256>`` (LFS files), so the
    id is free there; other files are hashed once per run.
    """
    real = Path(os.path.realpath(path))
    if real.parent.name == "blobs" and len(real.name) >= 40:
        return real.name
    h = hashlib.sha256()
    with open(real, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def weights_digest(files: list[Path]) -> str:
    """sha256 over ``name:content-id`` lines of the weight files ("" when there are none)."""
    if not files:
        return ""
    lines = sorted(f"{Path(f).name}:{file_identity(Path(f))}" for f in files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def state_digest(state: dict) -> str:
    """sha256 of a fitted state (keys, dtypes, shapes and bytes), for fitted baselines."""
    import numpy as np  # only when a state is hashed: `models list` imports this module without it

    h = hashlib.sha256()
    for key in sorted(state):
        arr = np.ascontiguousarray(np.asarray(state[key]))
        h.update(f"{key}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(memoryview(arr).cast("B") if arr.size else b"")
    return h.hexdigest()


def run_key(model: str, cfg: EmbedderConfig, weights: str, survey: str, n: int, fit: str = "") -> str:
    """The key of an embedding run: embedder, config (less :data:`NOT_IN_KEY`), weights, survey, size, reused fit.

    Shards and the final file carry it; only work of the same key is ever reused.
    """
    payload = {
        "model": model,
        "config": cfg.model_dump(mode="json", exclude=NOT_IN_KEY),
        "weights": weights,
        "survey": survey,
        "n": n,
        "fit_from": fit,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]
