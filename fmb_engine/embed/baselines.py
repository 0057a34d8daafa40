"""Weight-free baseline embedders: ``pca`` (unaligned) and ``cca`` (aligned).

Why: they need no download and no GPU, fit in seconds on the train split, and
give every later stage (detection, mismatch, analysis) a reference point that a
foundation model has to beat.

Features (shared, fitted scales stored as plain arrays)
    Image, per band b (a missing band's features are set to the train mean: mean imputation):
      * ``pool``: the central square average-pooled to ``g x g`` cells of
        ``f = ceil(H / image_grid)`` pixels (``g = H // f``), scaled ``asinh(x / s_b)``,
        ``s_b = 1.4826 MAD`` of the band's pooled pixels over the train split (about the
        sky noise: most pixels are sky);
      * ``radial``: mean surface brightness in ``radial_bins`` annuli with geometric edges
        from 1 px to H/2 (rotation invariant: size, concentration, colour gradients),
        scaled ``asinh(p / s_{b,r})`` with the population ``1.4826 MAD`` per (band, annulus);
      * ``sharp``: sub-cell energy ``E_b = mean (x - cell mean)^2`` (cosmic rays, trails),
        as ``log(E_b / median_train(E_b) + 1e-3)``.
    Spectrum, with weights ``w = ivar`` (0 where masked, non-finite or negative):
      * ``fine``: bins of ``spectrum_rebin`` pixels, ``m = sum(f w) / sum(w)``; a bin without
        weight takes its coarse bin's value; scaled ``asinh(m / s_j)`` with ``s_j`` the median
        over train objects of the bin's noise ``1 / sqrt(sum w)`` (sky-line bins are compressed);
      * ``coarse``: ``spectrum_coarse`` bins over the whole spectrum (continuum shape), scaled alike;
      * ``chi``: per coarse bin, ``chi2 = sum w (f - m)^2 / dof`` of the pixels around their fine-bin
        mean (1 for noise, < 1 for a flat-lined stretch, > 1 for sky residuals or narrow
        lines), as ``log(chi2 + 0.1)``.
    Each block is centred on its train mean and divided by ``sqrt(mean ||x - mean||^2)``, so
    every block carries the same total variance; blocks are concatenated per modality.

``pca``
    image = top ``image_components`` principal-component scores of all image blocks,
    spectrum likewise; joint = concatenation ``[image, spectrum]``.
    Not aligned: the two spaces are unrelated.

``cca``
    Uses the blocks that describe the galaxy (image: pool, radial; spectrum: fine,
    coarse): artefact blocks have no counterpart in the other modality. Each modality
    is reduced to ``d = pca_components`` PCA scores and whitened,
    ``z = scores / sqrt(lambda + ridge * mean(lambda))``. With the cross-covariance
    ``C = Z_i^T Z_s / (n - 1) = U diag(rho) V^T`` (SVD), the canonical variates are
    ``a = Z_i U_k`` and ``b = Z_s V_k`` (``corr(a_j, b_j) = rho_j``). Embeddings:
    image ``= a * w``, spectrum ``= b * w`` with ``w_j = rho_j`` (``weighting``), so
    poorly correlated directions do not drown the cosine; joint
    ``= normalise(normalise(image) + normalise(spectrum))``. Aligned: matched
    pairs point the same way, so ``cos(image, spectrum)`` is low for an image and a
    spectrum of different galaxies.

All fitting is closed-form (eigh/SVD), so the same train rows give the same
state bit for bit; components have a fixed sign (largest loading positive).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from fmb_engine.embed.base import Embedder
from fmb_engine.embed.config import BaselineConfig, CCAConfig, PCAConfig
from fmb_engine.errors import ConfigError, DataError
from fmb_engine.survey.batch import SurveyBatch

_MAD = 1.4826
#: Objects whose noise arrays are kept during the fit (enough for a median).
_NOISE_SAMPLE = 2048


# --------------------------------------------------------------------------- features


def _robust_scale(x: np.ndarray, axis: Any = 0) -> np.ndarray:
    """1.4826 MAD along ``axis``; falls back to the std, then 1, where it is 0 or not finite."""
    med = np.median(x, axis=axis, keepdims=True)
    s = _MAD * np.median(np.abs(x - med), axis=axis)
    std = np.std(x, axis=axis)
    s = np.where(np.isfinite(s) & (s > 0), s, std)
    return np.where(np.isfinite(s) & (s > 0), s, 1.0).astype(np.float32)


def radial_matrix(size: int, bins: int) -> np.ndarray:
    """(size*size, k) averaging matrix of the annuli with geometric edges 1 .. size/2 (empty annuli dropped)."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - (size - 1) / 2, xx - (size - 1) / 2).ravel()
    edges = np.concatenate([[0.0], np.geomspace(1.0, max(size / 2, 1.0 + 1e-6), bins)])[:bins]
    idx = np.clip(np.searchsorted(edges, r, side="right") - 1, 0, bins - 1)
    m = np.zeros((size * size, bins), np.float32)
    m[np.arange(r.size), idx] = 1.0
    m = m[:, m.sum(0) > 0]
    return m / m.sum(0, keepdims=True)


IMAGE_BLOCKS: tuple[str, ...] = ("pool", "radial", "sharp")
SPECTRUM_BLOCKS: tuple[str, ...] = ("fine", "coarse", "chi")


def pool_geometry(size: int, grid: int) -> tuple[int, int, int]:
    """(g, f, offset): cells of ``f = ceil(size / grid)`` pixels, ``g = size // f`` of them, centred."""
    f = -(-size // max(1, min(grid, size)))
    g = size // f
    return g, f, (size - g * f) // 2


def pool_matrix(size: int, grid: int) -> np.ndarray:
    """(g, size) matrix averaging the central ``g*f`` pixels in cells of ``f`` (see :func:`pool_geometry`)."""
    g, f, off = pool_geometry(size, grid)
    m = np.zeros((g, size), np.float32)
    for i in range(g):
        m[i, off + i * f : off + (i + 1) * f] = 1.0 / f
    return m


class Featurizer:
    """Image and spectrum feature maps with fitted scales and block normalisation (module docstring)."""

    def __init__(self, cfg: BaselineConfig):
        self.cfg = cfg
        self.image_size: int | None = None
        self.n_wave: int | None = None
        self._radial: np.ndarray | None = None
        self._pool: np.ndarray | None = None
        self.s: dict[str, np.ndarray] = {}  # fitted arrays

    # -- raw (unscaled) features ------------------------------------------------------------
    def _setup(self, size: int, n_wave: int) -> None:
        if self.image_size is None:
            self.image_size, self.n_wave = int(size), int(n_wave)
        elif (self.image_size, self.n_wave) != (size, n_wave):
            raise DataError(
                f"the baseline was fitted on {self.image_size}-px images and {self.n_wave}-bin spectra; "
                f"this batch has {size}-px images and {n_wave}-bin spectra. Refit on this survey."
            )
        if self._radial is None:
            self._radial = radial_matrix(self.image_size, self.cfg.radial_bins)
            self._pool = pool_matrix(self.image_size, self.cfg.image_grid)

    def raw(self, batch: SurveyBatch) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """(raw feature arrays by name, missing band (B, 4) bool, missing spectrum (B,) bool)."""
        if batch.images is None or batch.flux is None:
            raise DataError("the baseline embedders need band images and spectra; the batch lacks one")
        self._setup(batch.images.shape[-1], batch.flux.shape[1])
        raw, missing_bands = self._raw_image(batch)
        spec, missing_spec = self._raw_spectrum(batch)
        return raw | spec, missing_bands, missing_spec

    def _raw_image(self, batch: SurveyBatch) -> tuple[dict[str, np.ndarray], np.ndarray]:
        x = np.asarray(batch.images, dtype=np.float32)
        b, c, h, w = x.shape
        if h != w:
            raise DataError(f"square band images expected, got {h}x{w}")
        finite = np.isfinite(x)
        missing = ~np.asarray(batch.has_bands, dtype=bool) | ~finite.any(axis=(2, 3))
        if not finite.all():
            x = np.where(finite, x, np.float32(0.0))
        flat = x.reshape(b * c, h, w)
        pool = self._pool  # (g, h) averaging over the central g*f pixels
        pooled = np.matmul(np.matmul(pool, flat), pool.T)  # (B*C, g, g), BLAS instead of strided means
        # sub-cell residual energy per band, mean over the pooled area of (x - cell mean)^2:
        # sum x^2 - f^2 sum m^2 (no residual array needed); high for cosmic rays, trails, sharp cores
        g, f, off = pool_geometry(h, self.cfg.image_grid)
        inner = flat[:, off : off + g * f, off : off + g * f]
        energy = np.einsum("nij,nij->n", inner, inner, dtype=np.float64) - f * f * np.einsum(
            "nij,nij->n", pooled, pooled, dtype=np.float64)
        sharp = np.maximum(energy, 0.0) / float((g * f) ** 2)
        radial = flat.reshape(b * c, h * w) @ self._radial
        return {
            "pool": pooled.reshape(b, c, g, g),
            "radial": radial.reshape(b, c, -1),
            "sharp": sharp.reshape(b, c, 1).astype(np.float32),
        }, missing

    def _raw_spectrum(self, batch: SurveyBatch) -> tuple[dict[str, np.ndarray], np.ndarray]:
        flux = np.asarray(batch.flux, dtype=np.float32)
        b, n = flux.shape
        ivar = np.ones_like(flux) if batch.ivar is None else np.asarray(batch.ivar, dtype=np.float32)
        bad = ~(np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0))
        if batch.mask is not None:
            bad |= np.asarray(batch.mask, dtype=bool)
        w = np.where(bad, np.float32(0.0), ivar)
        fw_px = np.where(bad, np.float32(0.0), flux) * w
        f2w_px = fw_px * np.where(bad, np.float32(0.0), flux)
        edges = np.arange(0, n, self.cfg.spectrum_rebin)  # fine bins (the last one may be shorter)
        nf = edges.size
        ws = np.add.reduceat(w, edges, axis=1, dtype=np.float64)
        fw = np.add.reduceat(fw_px, edges, axis=1, dtype=np.float64)
        f2w = np.add.reduceat(f2w_px, edges, axis=1, dtype=np.float64)
        ngood = np.add.reduceat((w > 0).astype(np.int32), edges, axis=1)
        nc = min(self.cfg.spectrum_coarse, nf)
        starts = (np.arange(nc) * nf) // nc
        cws, cfw = np.add.reduceat(ws, starts, axis=1), np.add.reduceat(fw, starts, axis=1)
        coarse = np.where(cws > 0, cfw / np.where(cws > 0, cws, 1.0), 0.0)
        group = np.repeat(np.arange(nc), np.diff(np.append(starts, nf)))
        has = ws > 0
        mean = fw / np.where(has, ws, 1.0)
        fine = np.where(has, mean, coarse[:, group])
        # chi^2 per dof of the pixels around their fine-bin mean, per coarse bin:
        # sum w (f - m)^2 = sum w f^2 - m sum w f. ~1 for pure noise, < 1 where the flux is
        # flat-lined (a dead amplifier), > 1 for sharp structure (sky residuals, narrow lines)
        chi_bin = np.maximum(f2w - mean * fw, 0.0)
        dof = np.add.reduceat(ngood - has, starts, axis=1)
        chi = np.where(dof > 0, np.add.reduceat(chi_bin, starts, axis=1) / np.maximum(dof, 1), 1.0)
        missing = ~np.asarray(batch.has_spectrum, dtype=bool) | (cws.sum(1) <= 0)
        return {
            "fine": fine.astype(np.float32), "fine_w": ws.astype(np.float32),
            "coarse": coarse.astype(np.float32), "coarse_w": cws.astype(np.float32), "chi": chi.astype(np.float32),
        }, missing

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, raw: dict[str, np.ndarray]) -> None:
        """Scales and block statistics from raw features of complete train objects."""
        s = self.s
        pooled = raw["pool"]
        c = pooled.shape[1]
        s["pool_scale"] = _robust_scale(np.moveaxis(pooled, 1, 0).reshape(c, -1), axis=1)
        s["radial_scale"] = _robust_scale(raw["radial"], axis=0)
        s["sharp_ref"] = np.maximum(np.median(raw["sharp"], axis=0), 1e-30).astype(np.float32)
        s["fine_scale"] = self._noise_scale(raw["fine_w"][:_NOISE_SAMPLE])
        s["coarse_scale"] = self._noise_scale(raw["coarse_w"][:_NOISE_SAMPLE])
        for name, block in self._blocks(raw).items():
            mean = block.mean(0)
            norm = float(np.sqrt(((block - mean) ** 2).sum(1).mean()))
            s[f"{name}_mean"] = mean.astype(np.float32)
            s[f"{name}_norm"] = np.float32(norm if norm > 0 else 1.0)

    @staticmethod
    def _noise_scale(weights: np.ndarray) -> np.ndarray:
        """Median noise 1/sqrt(w) per bin over objects with data there (global median for empty bins)."""
        import warnings

        noise = np.where(weights > 0, 1.0 / np.sqrt(np.where(weights > 0, weights, 1.0)), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins
            per_bin = np.nanmedian(noise, axis=0)
            overall = np.nanmedian(noise) if np.isfinite(noise).any() else 1.0
        overall = overall if np.isfinite(overall) and overall > 0 else 1.0
        return np.where(np.isfinite(per_bin) & (per_bin > 0), per_bin, overall).astype(np.float32)

    def _blocks(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Scaled feature blocks (B, D_block), before centring."""
        s = self.s
        b = raw["pool"].shape[0]
        return {
            "pool": np.arcsinh(raw["pool"] / s["pool_scale"][None, :, None, None]).reshape(b, -1),
            "radial": np.arcsinh(raw["radial"] / s["radial_scale"][None]).reshape(b, -1),
            "sharp": np.log(raw["sharp"] / s["sharp_ref"][None] + 1e-3).reshape(b, -1),
            "fine": np.arcsinh(raw["fine"] / s["fine_scale"][None]),
            "coarse": np.arcsinh(raw["coarse"] / s["coarse_scale"][None]),
            "chi": np.log(raw["chi"] + 0.1),
        }

    # -- transforming -----------------------------------------------------------------------
    def transform(
        self, raw: dict[str, np.ndarray], img_missing: np.ndarray, spec_missing: np.ndarray,
        image_blocks: tuple[str, ...] = IMAGE_BLOCKS, spectrum_blocks: tuple[str, ...] = SPECTRUM_BLOCKS,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(image features (B, Di), spectrum features (B, Ds)), centred and block-normalised.

        A missing band's features and a missing spectrum's features are set to the train mean.
        """
        if "pool_mean" not in self.s:
            raise ConfigError("the baseline embedder is not fitted: run fit() on the train split or load its state")
        s = self.s
        b, c = raw["pool"].shape[:2]
        out = {}
        for name, block in self._blocks(raw).items():
            if name not in image_blocks and name not in spectrum_blocks:
                continue
            centred = ((block - s[f"{name}_mean"]) / s[f"{name}_norm"]).astype(np.float32)
            if name in IMAGE_BLOCKS and img_missing.any():
                per_band = centred.reshape(b, c, -1)
                per_band[img_missing] = 0.0
                centred = per_band.reshape(b, -1)
            elif name in SPECTRUM_BLOCKS and spec_missing.any():
                centred[spec_missing] = 0.0
            out[name] = centred
        return (np.concatenate([out[k] for k in image_blocks], 1), np.concatenate([out[k] for k in spectrum_blocks], 1))

    def features(self, batch: SurveyBatch, image_blocks: tuple[str, ...] = IMAGE_BLOCKS,
                 spectrum_blocks: tuple[str, ...] = SPECTRUM_BLOCKS) -> tuple[np.ndarray, np.ndarray]:
        raw, img_missing, spec_missing = self.raw(batch)
        return self.transform(raw, img_missing, spec_missing, image_blocks, spectrum_blocks)

    # -- state ------------------------------------------------------------------------------
    def _params(self) -> np.ndarray:
        c = self.cfg
        return np.array(
            [c.image_grid, c.radial_bins, c.spectrum_rebin, c.spectrum_coarse, self.image_size or 0, self.n_wave or 0],
            dtype=np.int64,
        )

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"features.params": self._params()} | {f"features.{k}": np.asarray(v) for k, v in self.s.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        params = np.asarray(state["features.params"], dtype=np.int64)
        c = self.cfg
        wanted = np.array([c.image_grid, c.radial_bins, c.spectrum_rebin, c.spectrum_coarse], dtype=np.int64)
        if not np.array_equal(params[:4], wanted):
            raise ConfigError(
                "the stored baseline state was fitted with image_grid, radial_bins, spectrum_rebin, "
                f"spectrum_coarse = {params[:4].tolist()}, the config says {wanted.tolist()}; refit or change the config"
            )
        self.image_size, self.n_wave = int(params[4]), int(params[5])
        self._radial = None
        self.s = {k[len("features.") :]: np.asarray(v) for k, v in state.items()
                  if k.startswith("features.") and k != "features.params"}


def collect_raw(featurizer: Featurizer, batches: Iterable[SurveyBatch]) -> tuple[dict[str, np.ndarray], int, int]:
    """Raw features of the complete objects of ``batches`` (objects missing a band or the spectrum are skipped)."""
    parts: dict[str, list[np.ndarray]] = {}
    kept = skipped = 0
    for batch in batches:
        if len(batch) == 0:
            continue
        raw, img_missing, spec_missing = featurizer.raw(batch)
        ok = ~img_missing.any(1) & ~spec_missing
        skipped += int((~ok).sum())
        kept += int(ok.sum())
        for name, arr in raw.items():
            if name.endswith("_w") and kept - int(ok.sum()) >= _NOISE_SAMPLE:
                continue  # noise weights: the first objects suffice for a median
            parts.setdefault(name, []).append(arr[ok])
    if kept < 3:
        raise DataError(f"fitting a baseline embedder needs at least 3 complete train objects, got {kept}")
    return {k: np.concatenate(v, 0) for k, v in parts.items()}, kept, skipped


# --------------------------------------------------------------------------- linear algebra


def pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean (D,), components (D, k), variances (k,)) of the top-k principal axes, signs fixed.

    Covariance ``S = X_c^T X_c / (n - 1)`` (float64), top eigenpairs by ``scipy.linalg.eigh``.
    """
    from scipy.linalg import eigh
    from threadpoolctl import threadpool_limits

    n, d = x.shape
    k = max(1, min(k, d, n - 1))
    mean = x.mean(0, dtype=np.float64)
    xc = x.astype(np.float64) - mean
    cov = xc.T @ xc / max(n - 1, 1)
    with threadpool_limits(1):  # small dense problem: threads only contend (10x slower on a busy core)
        evals, evecs = eigh(cov, subset_by_index=[d - k, d - 1])
    evals, evecs = evals[::-1], evecs[:, ::-1]
    evecs = _fix_signs(evecs)
    return mean.astype(np.float32), evecs.astype(np.float32), np.maximum(evals, 0.0).astype(np.float32)


def _fix_signs(vectors: np.ndarray, partner: np.ndarray | None = None):
    """Flip columns so each one's largest-magnitude entry is positive (and the partner's columns alike)."""
    idx = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[idx, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    if partner is None:
        return vectors * signs
    return vectors * signs, partner * signs


def l2_normalise(x: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


# --------------------------------------------------------------------------- embedders


class _Baseline(Embedder):
    """Shared fit/state plumbing of the two baselines."""

    #: Survey fields the embedder reads (the run skips the RGB composite).
    input_fields: ClassVar[tuple[str, ...]] = ("images", "spectra")
    #: Feature blocks used per modality.
    image_blocks: ClassVar[tuple[str, ...]] = IMAGE_BLOCKS
    spectrum_blocks: ClassVar[tuple[str, ...]] = SPECTRUM_BLOCKS

    def __init__(self, config=None):
        super().__init__(config)
        self.features = Featurizer(self.config)
        self.fit_counts: dict[str, int] = {}
        #: Why the last fit is weaker than configured (too few objects for the dimensions asked).
        self.fit_warnings: list[str] = []
        self._state: dict[str, np.ndarray] = {}

    @property
    def fitted(self) -> bool:
        return bool(self._state)

    def fit(self, batches: Iterable[SurveyBatch]) -> _Baseline:
        self.features = Featurizer(self.config)
        self.fit_warnings = []
        raw, kept, skipped = collect_raw(self.features, batches)
        self.features.fit(raw)
        xi, xs = self.features.transform(raw, np.zeros((kept, raw["pool"].shape[1]), bool), np.zeros(kept, bool),
                                         self.image_blocks, self.spectrum_blocks)
        self._state = self._fit_linear(xi, xs)
        self.fit_counts = {"fit_objects": kept, "fit_skipped_incomplete": skipped}
        return self

    def _fit_linear(self, xi: np.ndarray, xs: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _pca(self, x: np.ndarray, k: int, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`pca` of ``x``, noting in :attr:`fit_warnings` when there are too few objects for ``k`` axes."""
        n, d = x.shape
        got = max(1, min(k, d, n - 1))
        if got < k:
            limit = "n - 1" if n - 1 <= d else f"{d} features"
            self.fit_warnings.append(f"{self.name} {what}: {n} fit objects allow at most {got} components ({limit}), "
                                     f"{k} asked: dimension reduced to {got}")
        elif n < 2 * k:
            self.fit_warnings.append(f"{self.name} {what}: {n} fit objects < 2 x {k} components: "
                                     "the trailing components are fitted to noise")
        return pca(x, k)

    def _project(self, xi: np.ndarray, xs: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def embed(self, batch: SurveyBatch) -> dict[str, np.ndarray]:
        if not self.fitted:
            raise ConfigError(f"the {self.name} embedder is not fitted: fit it on the train split or load its state")
        xi, xs = self.features.features(batch, self.image_blocks, self.spectrum_blocks)
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in self._project(xi, xs).items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        if not self.fitted:
            return {}
        counts = np.array([self.fit_counts.get("fit_objects", 0), self.fit_counts.get("fit_skipped_incomplete", 0)])
        return self.features.state_dict() | {f"{self.name}.{k}": v for k, v in self._state.items()} | {
            f"{self.name}.fit_counts": counts
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        prefix = f"{self.name}."
        own = {k[len(prefix) :]: np.asarray(v) for k, v in state.items() if k.startswith(prefix)}
        if not own or "features.params" not in state:
            raise ConfigError(f"the state does not belong to the {self.name} embedder (keys: {sorted(state)[:5]} ...)")
        self.features = Featurizer(self.config)
        self.features.load_state_dict(state)
        counts = own.pop("fit_counts", np.zeros(2, np.int64))
        self.fit_counts = {"fit_objects": int(counts[0]), "fit_skipped_incomplete": int(counts[1])}
        self._check_state(own)
        self._state = own

    def _check_state(self, state: dict[str, np.ndarray]) -> None:
        """Raise ConfigError when the stored state contradicts the config."""


class PCAEmbedder(_Baseline):
    """Per-modality PCA of the baseline features; joint = concatenation (see the module docstring)."""

    name: ClassVar[str] = "pca"

    def _fit_linear(self, xi, xs):
        cfg: PCAConfig = self.config
        mi, vi, li = self._pca(xi, cfg.image_components, "image")
        ms, vs, ls = self._pca(xs, cfg.spectrum_components, "spectrum")
        return {"image_mean": mi, "image_components": vi, "image_variance": li,
                "spectrum_mean": ms, "spectrum_components": vs, "spectrum_variance": ls}

    def _project(self, xi, xs):
        s = self._state
        img = (xi - s["image_mean"]) @ s["image_components"]
        spec = (xs - s["spectrum_mean"]) @ s["spectrum_components"]
        return {"image": img, "spectrum": spec, "joint": np.concatenate([img, spec], axis=1)}

    def _check_state(self, state):
        cfg: PCAConfig = self.config
        for mod, k in (("image", cfg.image_components), ("spectrum", cfg.spectrum_components)):
            have = state[f"{mod}_components"].shape[1]
            if have > k:
                raise ConfigError(f"stored pca state has {have} {mod} components, the config asks for {k}; refit")


class CCAEmbedder(_Baseline):
    """Canonical correlation of the PCA-whitened image and spectrum features (see the module docstring)."""

    name: ClassVar[str] = "cca"
    #: Only blocks that describe the galaxy itself: artefact blocks (sharp, chi) have no
    #: cross-modal counterpart and would only add noise to the canonical directions.
    image_blocks: ClassVar[tuple[str, ...]] = ("pool", "radial")
    spectrum_blocks: ClassVar[tuple[str, ...]] = ("fine", "coarse")

    def _fit_linear(self, xi, xs):
        from threadpoolctl import threadpool_limits

        cfg: CCAConfig = self.config
        n = xi.shape[0]
        mi, vi, li = self._pca(xi, cfg.pca_components, "image PCA")
        ms, vs, ls = self._pca(xs, cfg.pca_components, "spectrum PCA")
        wi = vi / np.sqrt(li + cfg.ridge * li.mean() + 1e-12)  # whitening projections
        ws = vs / np.sqrt(ls + cfg.ridge * ls.mean() + 1e-12)
        zi = (xi - mi).astype(np.float64) @ wi
        zs = (xs - ms).astype(np.float64) @ ws
        cross = zi.T @ zs / max(n - 1, 1)
        with threadpool_limits(1):
            u, rho, vt = np.linalg.svd(cross, full_matrices=False)
        k = max(1, min(cfg.n_components, rho.size))
        if k < cfg.n_components:
            self.fit_warnings.append(f"cca: {n} fit objects give {rho.size} canonical pairs, {cfg.n_components} "
                                     f"asked: dimension reduced to {k}")
        if n < 2 * 2 * li.size:
            self.fit_warnings.append(f"cca: {n} fit objects < 2 x {2 * li.size} whitened variables: the canonical "
                                     "correlations are overfitted (close to 1 by chance), the pairs are weak")
        u, v = _fix_signs(u[:, :k], vt[:k].T)
        rho = np.clip(rho[:k], 0.0, 1.0)
        return {
            "image_mean": mi, "image_projection": (wi @ u).astype(np.float32),
            "spectrum_mean": ms, "spectrum_projection": (ws @ v).astype(np.float32),
            "correlations": rho.astype(np.float32),
        }

    def _weights(self) -> np.ndarray:
        rho = self._state["correlations"]
        return {"rho": rho, "sqrt": np.sqrt(rho), "none": np.ones_like(rho)}[self.config.weighting]

    def _project(self, xi, xs):
        s = self._state
        w = self._weights()
        img = ((xi - s["image_mean"]) @ s["image_projection"]) * w
        spec = ((xs - s["spectrum_mean"]) @ s["spectrum_projection"]) * w
        joint = l2_normalise(l2_normalise(img) + l2_normalise(spec))
        return {"image": img, "spectrum": spec, "joint": joint}

    @property
    def correlations(self) -> np.ndarray:
        """Canonical correlations rho_j of the fitted pairs (train split)."""
        return self._state.get("correlations", np.zeros(0, np.float32))

    def _check_state(self, state):
        cfg: CCAConfig = self.config
        have = state["image_projection"].shape[1]
        if have > cfg.n_components:
            raise ConfigError(f"stored cca state has {have} canonical pairs, the config asks for {cfg.n_components}; refit")

