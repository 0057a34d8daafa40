"""Image and spectrum preprocessing shared by the foundation-model embedders.

Torch only (no torchvision: its wheels do not match the CPU torch pin). Every
function takes and returns batched tensors and never modifies its input in place.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from fmb_engine.errors import DataError
from fmb_engine.survey.batch import SurveyBatch

SpectrumNorm = Literal["none", "std", "zscore"]


def to_tensor(
    array: np.ndarray, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A float copy of ``array`` on ``device`` with NaN and +-inf replaced by 0."""
    t = torch.as_tensor(np.asarray(array), dtype=dtype, device=device).clone()
    return torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)


def resize(images: torch.Tensor, size: int, *, antialias: bool = False) -> torch.Tensor:
    """Bilinear resize of (B, C, H, W) to (B, C, size, size), ``align_corners=False``.

    ``antialias=True`` matches torchvision's tensor ``Resize`` default when shrinking;
    it has no effect when enlarging.
    """
    if images.ndim != 4:
        raise ValueError(f"expected (B, C, H, W), got {tuple(images.shape)}")
    if images.shape[-2:] == (size, size):
        return images.clone()
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Central (size x size) crop of (B, C, H, W); the image must be at least that large."""
    h, w = images.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot crop {h}x{w} to {size}x{size}")
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size].clone()


def rgb_to_float(rgb: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """(B, H, W, 3) uint8 (or [0, 1] float) to (B, 3, H, W) float32 in [0, 1]."""
    arr = np.asarray(rgb)
    t = to_tensor(arr, device)
    if arr.dtype == np.uint8 or (t.numel() > 0 and float(t.max()) > 1.01):
        t = t / 255.0
    return t.permute(0, 3, 1, 2).clamp(0.0, 1.0).contiguous()


def rgb_composite(bands: torch.Tensor) -> torch.Tensor:
    """An RGB composite in [0, 1] from the 4 Euclid bands (B, 4, H, W) -> (B, 3, H, W).

    The store's own composite (:func:`fmb_engine.survey.composite.asinh_rgb`: R, G, B =
    NISP_H, NISP_Y, VIS, asinh stretch), so an RGB built here equals the stored one up
    to 8-bit rounding. Used when the survey has no RGB cutout.
    """
    from fmb_engine.survey.composite import asinh_rgb

    if bands.ndim != 4 or bands.shape[1] != 4:
        raise ValueError(f"expected (B, 4, H, W) Euclid bands, got {tuple(bands.shape)}")
    rgb = asinh_rgb(bands.detach().float().cpu().numpy())  # (B, H, W, 3) uint8
    return rgb_to_float(rgb, bands.device)


def batch_rgb(
    batch: SurveyBatch,
    size: int,
    *,
    source: Literal["auto", "rgb", "bands"] = "auto",
    antialias: bool = True,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """The batch as (B, 3, size, size) float RGB in [0, 1].

    ``source``: ``rgb`` uses the stored 8-bit composite, ``bands`` builds one with
    :func:`rgb_composite`, ``auto`` prefers the stored composite.
    """
    if source in ("auto", "rgb") and batch.rgb is not None:
        img = rgb_to_float(batch.rgb, device)
    elif source in ("auto", "bands") and batch.images is not None:
        img = rgb_composite(to_tensor(batch.images, device))
    else:
        raise DataError(
            f"the batch has no {'RGB composite' if source == 'rgb' else 'images'} (image source {source!r})"
        )
    return resize(img, size, antialias=antialias).clamp(0.0, 1.0)


def pad_or_trim(flux: torch.Tensor, length: int, value: float = 0.0) -> torch.Tensor:
    """(B, L) -> (B, length): keep the first ``length`` bins or pad at the end with ``value``."""
    n = flux.shape[-1]
    if n >= length:
        return flux[..., :length].clone()
    return F.pad(flux, (0, length - n), value=value)


def normalise_spectra(flux: torch.Tensor, method: SpectrumNorm, eps: float = 1e-8) -> torch.Tensor:
    """Per-spectrum scaling of (B, L) flux.

    ``none``: unchanged. ``std``: divide by the standard deviation (no mean subtraction;
    spectra with zero spread are left unchanged), as FMB's AstroPT training did.
    ``zscore``: subtract the mean, divide by the standard deviation + ``eps``.
    """
    if method == "none":
        return flux.clone()
    std = flux.std(dim=-1, keepdim=True)
    if method == "std":
        return torch.where(std > 0, flux / (std + eps), flux)
    if method == "zscore":
        return (flux - flux.mean(dim=-1, keepdim=True)) / (std + eps)
    raise ValueError(f"unknown spectrum normalisation {method!r}")


def batch_spectra(batch: SurveyBatch, device: str | torch.device = "cpu") -> torch.Tensor:
    """The batch flux as a (B, L) float32 tensor with NaN -> 0; DataError when absent."""
    if batch.flux is None:
        raise DataError("the batch has no spectra")
    return to_tensor(batch.flux, device)


def l2_normalise(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Rows scaled to unit L2 norm (rows of zeros stay zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp(min=eps)


def joint_of(image: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
    """normalise(normalise(image) + normalise(spectrum)): the joint vector of two-tower models."""
    return l2_normalise(l2_normalise(image) + l2_normalise(spectrum))


def iter_chunks(batch: SurveyBatch, size: int):
    """Yield consecutive sub-batches of at most ``size`` objects (views, not copies)."""
    from dataclasses import replace

    n = len(batch)
    for start in range(0, n, size):
        sl = slice(start, min(start + size, n))

        def cut(a, sl=sl):
            return None if a is None else a[sl]

        yield replace(
            batch,
            indices=batch.indices[sl],
            object_ids=batch.object_ids[sl],
            redshift=batch.redshift[sl],
            images=cut(batch.images),
            rgb=cut(batch.rgb),
            flux=cut(batch.flux),
            ivar=cut(batch.ivar),
            mask=cut(batch.mask),
            has_bands=batch.has_bands[sl],
            has_spectrum=batch.has_spectrum[sl],
        )


def autocast(device: str, enabled: bool):
    """bfloat16 autocast on CUDA when ``enabled``; a no-op context elsewhere."""
    import contextlib

    if enabled and str(device).startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
