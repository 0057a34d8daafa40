"""Synthetic embeddings: a seeded generative model with injected outliers and their truth.

Why: the detection and analysis stages have to be measured and tested at sizes no real
survey in the workspace has (10^6-10^7 objects), with truth to score them against. This
module makes such vectors on plain arrays, any row range at a time, so a file of any size
is written in bounded memory (:mod:`fmb_engine.embed.synthetic_file` writes it).

The model (docs/science.md, "Synthetic embeddings"): every object has a latent ``z`` in
:data:`LATENT_DIM` dimensions drawn from a Gaussian mixture; each modality is a fixed,
seeded random linear map of it plus Gaussian noise. Image and spectrum share ``z``; the
joint vector maps the pair ``(z_image, z_spectrum)``, so it is on its manifold only when
the two agree. Outliers (:data:`KINDS`) are injected into exactly ``floor(N * F)`` rows.

Determinism: rows are made in fixed blocks of :data:`BLOCK` rows, each from random
streams derived from ``(seed, block)``; the latent and the truth come from a stream that
does not depend on the dimensions, and each modality's noise from its own stream. So a
row is the same whatever range it is asked in (any chunk size), and files of one seed,
size and outlier fraction describe the same objects whatever their dimensions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from fmb_engine.embed.catalog import MODALITIES
from fmb_engine.errors import ConfigError

#: Outlier kinds, in the order they are dealt to outlier rows (round robin).
KINDS: tuple[str, ...] = ("off_manifold_image", "off_manifold_spectrum", "mismatch", "rare_cluster")
#: Rows made together from one pair of random streams (the unit of determinism).
BLOCK = 1024
LATENT_DIM = 16
#: Components of the normal objects' latent mixture.
COMPONENTS = 8
#: Spread of the mixture's means, and the within-component spread (latent units).
MEAN_SCALE, COMPONENT_SCALE = 2.0, 1.0
#: Rare cluster: its mean's distance from the origin and its spread.
RARE_DISTANCE, RARE_SCALE = 12.0, 0.5
#: Per-dimension noise of every modality, and the extra off-manifold noise of an outlier.
NOISE, OFF_MANIFOLD = 0.5, 1.0
#: Byte width of the stored ``anomaly_class`` column (the survey's width).
CLASS_LENGTH = 32
GENERATOR = "fmb.synthetic"
GENERATOR_VERSION = 1
#: ``--dims`` when none are given: the sizes of the foundation models' vectors.
DEFAULT_DIMS: dict[str, int] = {"image": 768, "spectrum": 768, "joint": 1536}
MAX_OUTLIER_FRACTION = 0.5


def parse_dims(text: str) -> dict[str, int]:
    """``image=768,spectrum=768,joint=1536`` -> {modality: dims}; ConfigError naming the bad part."""
    dims: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--dims: {part!r} is not MODALITY=DIMS (e.g. image=768,spectrum=768,joint=1536)")
        if name not in MODALITIES:
            raise ConfigError(f"--dims: unknown modality {name!r}; modalities: {', '.join(MODALITIES)}")
        if name in dims:
            raise ConfigError(f"--dims: modality {name!r} given twice")
        try:
            dims[name] = int(value)
        except ValueError:
            raise ConfigError(f"--dims: {name}={value.strip()!r}: the dimension must be a whole number") from None
        if dims[name] < 1:
            raise ConfigError(f"--dims: {name}={dims[name]}: the dimension must be >= 1")
    return {m: dims[m] for m in MODALITIES if m in dims}


@dataclass(frozen=True)
class SyntheticSpec:
    """What a synthetic file holds: its size, modalities and dimensions, seed and outlier share."""

    objects: int
    dims: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_DIMS))
    seed: int = 0
    outlier_fraction: float = 0.01

    def __post_init__(self) -> None:
        if self.objects < 1:
            raise ConfigError(f"--objects must be >= 1, got {self.objects}")
        if not self.dims:
            raise ConfigError("--dims: give at least one modality (e.g. image=768)")
        for name, d in self.dims.items():
            if name not in MODALITIES or d < 1:
                raise ConfigError(f"--dims: {name}={d}: modalities are {', '.join(MODALITIES)}, dimensions >= 1")
        if self.seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {self.seed}")
        if not 0.0 <= self.outlier_fraction <= MAX_OUTLIER_FRACTION:
            raise ConfigError(f"--outlier-fraction must be in [0, {MAX_OUTLIER_FRACTION}], got {self.outlier_fraction}")

    @property
    def n_outliers(self) -> int:
        return outliers_before(self.objects, self.outlier_fraction)

    def population_digest(self) -> str:
        """Identity of the objects and their truth (not of the dimensions): the file's "survey" digest."""
        fields = {"generator": GENERATOR, "version": GENERATOR_VERSION, "objects": self.objects, "seed": self.seed,
                  "outlier_fraction": self.outlier_fraction}
        return "synthetic:" + hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]

    def record(self) -> dict:
        """The settings as stored in the file and the manifest."""
        return {"generator": GENERATOR, "version": GENERATOR_VERSION, "objects": self.objects, "dims": dict(self.dims),
                "seed": self.seed, "outlier_fraction": self.outlier_fraction, "kinds": list(KINDS),
                "latent_dim": LATENT_DIM, "components": COMPONENTS, "block": BLOCK}


def outliers_before(row: int, fraction: float) -> int:
    """Outliers among rows ``0 .. row-1``: their count grows evenly, ``floor(row * F)``."""
    return int(np.floor(row * fraction + 1e-9))


def object_ids(start: int, stop: int, n_objects: int) -> np.ndarray:
    """``syn-000000001`` ... (1-based, zero-padded to at least 9 digits) for rows ``start .. stop-1``."""
    width = max(9, len(str(n_objects)))
    if stop <= start:
        return np.zeros(0, f"U{width + 4}")
    numbers = np.arange(start + 1, stop + 1).astype(str)
    return np.char.add("syn-", np.char.zfill(numbers, width))


@dataclass
class Rows:
    """A range of synthetic objects: ids, one (n, D) float32 array per modality, and the truth."""

    object_ids: np.ndarray
    vectors: dict[str, np.ndarray]
    anomaly_class: np.ndarray  # S32 bytes, b"" = normal

    @property
    def is_anomaly(self) -> np.ndarray:
        return self.anomaly_class != b""


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


class SyntheticModel:
    """The fixed parts of the model (mixture, maps) for one spec, and the rows of any range."""

    def __init__(self, spec: SyntheticSpec):
        self.spec = spec
        rng = _rng(spec.seed, 0)
        self.means = rng.standard_normal((COMPONENTS, LATENT_DIM)) * MEAN_SCALE
        while True:  # the rare cluster's mean: far from every normal one
            direction = rng.standard_normal(LATENT_DIM)
            self.rare_mean = RARE_DISTANCE * direction / np.linalg.norm(direction)
            if np.linalg.norm(self.means - self.rare_mean, axis=1).min() > RARE_DISTANCE / 2:
                break
        # image and spectrum map z; joint maps (z_image, z_spectrum). Entries N(0, 1/inputs): unit-scale outputs.
        self.maps = {}
        for m, d in spec.dims.items():
            inputs = 2 * LATENT_DIM if m == "joint" else LATENT_DIM
            self.maps[m] = (_rng(spec.seed, 3, MODALITIES.index(m)).standard_normal((inputs, d))
                            / np.sqrt(inputs)).astype(np.float32)
        self._cached: tuple[int, tuple[dict[str, np.ndarray], np.ndarray]] | None = None

    def rows(self, start: int, stop: int) -> Rows:
        """Objects ``start .. stop-1`` (made block by block; the same rows whatever the range)."""
        if not 0 <= start <= stop <= self.spec.objects:
            raise ValueError(f"rows {start}..{stop} outside 0..{self.spec.objects}")
        n = stop - start
        vectors = {m: np.empty((n, d), np.float32) for m, d in self.spec.dims.items()}
        classes = np.empty(n, f"S{CLASS_LENGTH}")
        for b in range(start // BLOCK, -(-stop // BLOCK)):  # each block's overlap with the range
            lo, hi = max(start, b * BLOCK), min(stop, (b + 1) * BLOCK)
            src, dst = slice(lo - b * BLOCK, hi - b * BLOCK), slice(lo - start, hi - start)
            if lo == b * BLOCK and hi == min((b + 1) * BLOCK, self.spec.objects):  # a whole block: made in place
                classes[dst] = self._make_block(b, {m: v[dst] for m, v in vectors.items()})[1]
                continue
            block_vectors, block_classes = self._block(b)
            for m in vectors:
                vectors[m][dst] = block_vectors[m][src]
            classes[dst] = block_classes[src]
        return Rows(object_ids(start, stop, self.spec.objects), vectors, classes)

    def _block(self, b: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Block ``b``, kept for the next call (a chunk that ends inside a block is continued from it)."""
        if self._cached is None or self._cached[0] != b:
            self._cached = (b, self._make_block(b))
        return self._cached[1]

    def _make_block(self, b: int, out: dict[str, np.ndarray] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Vectors (written into ``out`` when given, else new arrays) and classes of block ``b``."""
        spec = self.spec
        start, stop = b * BLOCK, min((b + 1) * BLOCK, spec.objects)
        n = stop - start
        # latent and truth: independent of the dimensions
        rng = _rng(spec.seed, 1, b)
        first_outlier = outliers_before(start, spec.outlier_fraction)
        n_out = outliers_before(stop, spec.outlier_fraction) - first_outlier
        where = rng.permutation(n)[:n_out]
        kind = np.full(n, -1)
        kind[where] = (first_outlier + np.arange(n_out)) % len(KINDS)
        z = self.means[rng.integers(0, COMPONENTS, n)] + COMPONENT_SCALE * rng.standard_normal((n, LATENT_DIM))
        rare = kind == KINDS.index("rare_cluster")
        z[rare] = self.rare_mean + RARE_SCALE * rng.standard_normal((int(rare.sum()), LATENT_DIM))
        z_spec = z.copy()
        mismatch = kind == KINDS.index("mismatch")
        k = int(mismatch.sum())  # the spectrum of another, independent object
        z_spec[mismatch] = self.means[rng.integers(0, COMPONENTS, k)] + COMPONENT_SCALE * rng.standard_normal((k, LATENT_DIM))
        inputs = {"image": z, "spectrum": z_spec, "joint": np.concatenate([z, z_spec], axis=1)}
        off = {"image": kind == KINDS.index("off_manifold_image"),
               "spectrum": kind == KINDS.index("off_manifold_spectrum")}
        off["joint"] = off["image"] | off["spectrum"]  # the joint vector sees either modality's oddity
        vectors = out if out is not None else {m: np.empty((n, d), np.float32) for m, d in spec.dims.items()}
        for m in spec.dims:
            noise_rng = _rng(spec.seed, 2, b, MODALITIES.index(m))
            x = vectors[m]
            noise_rng.standard_normal(dtype=np.float32, out=x)
            x *= NOISE
            x += inputs[m].astype(np.float32) @ self.maps[m]
            rows = np.flatnonzero(off[m])
            x[rows] += OFF_MANIFOLD * noise_rng.standard_normal((rows.size, x.shape[1]), dtype=np.float32)
        names = np.array([k.encode() for k in KINDS] + [b""], dtype=f"S{CLASS_LENGTH}")
        return vectors, names[kind]  # kind -1 -> b"" (normal)
