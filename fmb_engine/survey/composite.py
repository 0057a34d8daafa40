"""Colour composites of the Euclid bands (asinh stretch), shared by store, figures and TUI."""

from __future__ import annotations

import numpy as np

#: Bands mapped to (R, G, B): NISP_H, NISP_Y, VIS.
RGB_BANDS: tuple[int, int, int] = (3, 1, 0)


def asinh_rgb(images: np.ndarray, q: float = 8.0, bands: tuple[int, int, int] = RGB_BANDS) -> np.ndarray:
    """(B, 4, H, W) or (4, H, W) float band images -> uint8 RGB (…, H, W, 3).

    Lupton-style asinh stretch on the mean intensity, scaled per object by the
    99.5th percentile so faint and bright galaxies both show structure. NaN
    (missing band) renders as black.
    """
    single = images.ndim == 3
    x = np.nan_to_num(np.asarray(images, dtype=np.float32)[None] if single else np.asarray(images, dtype=np.float32))
    rgb = np.stack([x[:, b] for b in bands], axis=-1)  # (B, H, W, 3)
    intensity = rgb.mean(axis=-1)
    flat = intensity.reshape(len(x), -1)
    kth = int(0.995 * (flat.shape[1] - 1))
    scale = np.partition(flat, kth, axis=1)[:, kth].reshape(-1, 1, 1)  # 99.5th percentile, no full sort
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    i_norm = np.maximum(intensity / scale, np.float32(1e-12))
    # colour-preserving stretch: every channel scaled by asinh(q I) / (asinh(q) I)
    factor = np.arcsinh(np.float32(q) * i_norm) / (np.float32(np.arcsinh(q)) * i_norm)
    factor *= np.float32(255.0) / scale
    out = rgb * factor[..., None]
    np.clip(out, 0.0, 255.0, out=out)
    out = (out + np.float32(0.5)).astype(np.uint8)
    return out[0] if single else out
