"""The mock survey: physically consistent images and spectra with labelled anomalies.

Why a mock: real weights and the real Euclid x DESI data cannot be reached from
here, and a survey whose anomalies are known is what lets every later stage be
*evaluated* rather than eyeballed. One population drives both modalities, so a
galaxy's colours, size, 4000 A break and emission lines agree with each other.

Population (drawn once for the whole survey, then rendered chunk by chunk with
a per-chunk seed, so the file does not depend on the chunk that was resumed):

* redshift z in [0.02, 1.5], p(z) ~ z^2 exp(-(z/0.45)^1.5);
* log M* ~ N(10.2, 0.55) clipped to [8.8, 11.8]; quiescent with probability
  sigmoid((log M* - 10.6)/0.25)·(1 - 0.3 z);
* star-forming main sequence log SFR = 0.7 (log M* - 10) + 2 log10(1+z) +- 0.25,
  quiescent 1.3 dex below; D4000 = 1.15 + 0.7 sigmoid(-(log sSFR + 10.5)/0.4);
* Sersic n ~ 1 (star-forming) or ~ 4 (quiescent), mass-size relation for r_e
  (kpc) converted to pixels (0.1"/px) with a flat LCDM (H0 = 70, Om = 0.3).

Images: Sersic profiles convolved (FFT) with a Gaussian PSF per band, band
fluxes from the same SED as the spectrum (f_nu at lambda_band / (1+z)), sky noise
per band. Spectra on the DESI grid: continuum lambda^alpha with a 4000 A break,
stellar absorption, dust, emission lines with Halpha from Kennicutt (1998)
L(Ha) = SFR / 7.9e-42 erg/s and line ratios tied to mass (metallicity), Gaussian
noise from an ivar with sky-line structure, and masked bad pixels (ivar 0).

Anomaly classes are listed in :data:`fmb_engine.survey.bands.ANOMALY_GROUPS`;
``docs/science.md`` says how each is made.
"""

from __future__ import annotations

import itertools
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from fmb_engine.parallel import available_cores
from fmb_engine.survey.bands import (
    ABSORPTION_LINES,
    ANOMALY_CLASSES,
    BAND_WAVELENGTH,
    BANDS,
    EMISSION_LINES,
    NORMAL,
    wavelength_grid,
)
from fmb_engine.survey.composite import asinh_rgb

PIXEL_SCALE = 0.1  # arcsec per pixel (VIS native)
PSF_FWHM_PX = np.array([1.7, 3.0, 3.1, 3.3], dtype=np.float32)  # VIS, Y, J, H
SKY_SIGMA = np.array([0.004, 0.010, 0.010, 0.012], dtype=np.float32)  # uJy / pixel
FIBER_FRACTION = 0.5
SPEC_SIGMA = 0.12  # 1e-17 erg/s/cm2/A, per pixel, before sky structure
C_KMS = 299_792.458
#: Arm boundaries of a DESI-like spectrograph (calibration jumps happen here).
ARM_EDGES = (5800.0, 7600.0)
#: Bright sky lines (observed, Angstrom) that shape the noise and the sky residuals.
SKY_LINES = np.concatenate(
    [np.array([5577.3, 5889.9, 6300.3, 6363.8]), np.random.default_rng(7).uniform(6800.0, 9800.0, 60)]
)

# ----------------------------------------------------------------------------------- cosmology
_ZGRID = np.linspace(0.0, 2.0, 2001)
_HZ = np.sqrt(0.3 * (1 + _ZGRID) ** 3 + 0.7)
_DC = np.concatenate([[0.0], np.cumsum(0.5 * (1 / _HZ[1:] + 1 / _HZ[:-1]) * np.diff(_ZGRID))]) * C_KMS / 70.0  # Mpc


def luminosity_distance_mpc(z: np.ndarray) -> np.ndarray:
    return np.interp(z, _ZGRID, _DC) * (1 + z)


def kpc_per_arcsec(z: np.ndarray) -> np.ndarray:
    d_a = np.interp(z, _ZGRID, _DC) / (1 + z)
    return d_a * 1000.0 * np.pi / (180.0 * 3600.0)


# ----------------------------------------------------------------------------------- population
@dataclass
class Population:
    """Per-object physical parameters of the whole survey (no pixels)."""

    z: np.ndarray
    logM: np.ndarray
    logSFR: np.ndarray
    quiescent: np.ndarray
    d4000: np.ndarray
    alpha: np.ndarray
    av: np.ndarray
    sersic_n: np.ndarray
    re_px: np.ndarray
    q: np.ndarray
    pa: np.ndarray
    f_vis: np.ndarray  # total VIS flux, uJy
    depth: np.ndarray  # spectral noise multiplier
    anomaly: np.ndarray  # class name or ""
    donor: np.ndarray  # cross-match: row whose spectrum is shown; else -1
    ra: np.ndarray
    dec: np.ndarray
    split: np.ndarray
    targetid: np.ndarray


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _derive(pop: Population, rows: np.ndarray) -> None:
    """(Re)compute quantities that follow from z, logM, logSFR, quiescent for ``rows``."""
    z, logm, q = pop.z[rows], pop.logM[rows], pop.quiescent[rows]
    ssfr = pop.logSFR[rows] - logm
    pop.d4000[rows] = 1.15 + 0.7 * _sigmoid(-(ssfr + 10.5) / 0.4)
    pop.alpha[rows] = -2.0 + 1.6 * (pop.d4000[rows] - 1.15)
    pop.av[rows] = np.where(q, 0.2, np.clip(0.4 + 0.5 * (logm - 10.0), 0.0, 2.0))
    abs_mag = -20.5 - 2.5 * (logm - 10.0) + np.where(q, 0.7, 0.0)
    dl_pc = luminosity_distance_mpc(z) * 1e6
    mag = abs_mag + 5 * np.log10(dl_pc / 10.0)
    pop.f_vis[rows] = 10 ** (-0.4 * (mag - 23.9))


def draw_population(n: int, seed: int, anomaly_fraction: float, train_fraction: float) -> Population:
    rng = np.random.default_rng([seed, 0])
    zgrid = np.linspace(0.02, 1.5, 4000)
    pdf = zgrid**2 * np.exp(-((zgrid / 0.45) ** 1.5))
    cdf = np.cumsum(pdf) / pdf.sum()
    z = np.interp(rng.uniform(size=n), cdf, zgrid)
    logm = np.clip(rng.normal(10.2, 0.55, n), 8.8, 11.8)
    quiescent = rng.uniform(size=n) < _sigmoid((logm - 10.6) / 0.25) * (1 - 0.3 * z)
    ms = 0.7 * (logm - 10.0) + 2.0 * np.log10(1 + z)
    logsfr = ms + rng.normal(0, 0.25, n) - np.where(quiescent, 1.3 + rng.normal(0, 0.3, n), 0.0)
    sersic = np.where(quiescent, np.clip(rng.lognormal(np.log(4.0), 0.2, n), 2.5, 6.0), np.clip(rng.lognormal(0.0, 0.25, n), 0.6, 2.0))
    log_re_kpc = np.where(
        quiescent, 0.75 * (logm - 10.5) + 0.55 - 0.6 * np.log10(1 + z), 0.22 * (logm - 10.5) + 0.7 - 0.3 * np.log10(1 + z)
    ) + rng.normal(0, 0.15, n)
    re_px = 10**log_re_kpc / kpc_per_arcsec(z) / PIXEL_SCALE
    axis_q = np.where(quiescent, rng.uniform(0.5, 1.0, n), rng.uniform(0.25, 1.0, n))
    pa = rng.uniform(0, np.pi, n)
    depth = rng.lognormal(0.0, 0.25, n)
    order = rng.permutation(n)
    split = np.where(np.isin(np.arange(n), order[: int(round(train_fraction * n))]), "train", "test")
    ra = 269.7 + rng.uniform(-3, 3, n) / np.cos(np.deg2rad(66.0))
    dec = 66.0 + rng.uniform(-3, 3, n)
    targetid = 39_627_000_000_000_000 + rng.choice(10**12, size=n, replace=False)
    pop = Population(
        z=z, logM=logm, logSFR=logsfr, quiescent=quiescent, d4000=np.empty(n), alpha=np.empty(n), av=np.empty(n),
        sersic_n=sersic, re_px=re_px, q=axis_q, pa=pa, f_vis=np.empty(n), depth=depth,
        anomaly=np.full(n, NORMAL, dtype=object), donor=np.full(n, -1, dtype=np.int64), ra=ra, dec=dec, split=split,
        targetid=targetid,
    )
    _derive(pop, np.arange(n))
    _assign_anomalies(pop, rng, anomaly_fraction)
    pop.re_px = np.clip(pop.re_px, 0.8, None)
    return pop


def anomaly_count(n: int, fraction: float) -> int:
    """Objects that get an anomaly: round(f N), raised so every class appears once when f > 0."""
    if fraction <= 0:
        return 0
    return min(n // 2, max(int(round(fraction * n)), len(ANOMALY_CLASSES)))


def _assign_anomalies(pop: Population, rng: np.random.Generator, fraction: float) -> None:
    n = pop.z.size
    k = anomaly_count(n, fraction)
    if k == 0:
        return
    chosen = rng.choice(n, size=k, replace=False)
    classes = np.array(ANOMALY_CLASSES, dtype=object)[np.arange(k) % len(ANOMALY_CLASSES)]
    rng.shuffle(classes)
    pop.anomaly[chosen] = classes
    normal = np.flatnonzero(pop.anomaly == NORMAL)
    for row, cls in zip(chosen, classes, strict=True):
        if cls == "lensed_arc":  # a massive quiescent deflector
            pop.logM[row] = rng.uniform(11.0, 11.6)
            pop.quiescent[row] = True
            pop.logSFR[row] = 0.7 * (pop.logM[row] - 10) - 1.5
            pop.sersic_n[row] = 4.0
            pop.re_px[row] = rng.uniform(3.0, 6.0)
            pop.z[row] = min(pop.z[row], 0.7)
        elif cls == "extreme_emission_line":  # compact, low-mass starburst
            pop.logM[row] = rng.uniform(8.8, 9.6)
            pop.quiescent[row] = False
            pop.logSFR[row] = 0.7 * (pop.logM[row] - 10) + 2 * np.log10(1 + pop.z[row]) + rng.uniform(1.2, 1.8)
            pop.re_px[row] = rng.uniform(0.8, 1.5)
            pop.sersic_n[row] = 1.0
        elif cls == "cross_match":  # spectrum of a very different galaxy
            far = normal[np.abs(pop.z[normal] - pop.z[row]) > 0.4]
            pop.donor[row] = rng.choice(far if far.size else normal)
        _derive(pop, np.array([row]))


# ----------------------------------------------------------------------------------- rendering
def _sersic_b(n: np.ndarray) -> np.ndarray:
    return 2 * n - 1 / 3 + 4 / (405 * n) + 46 / (25515 * n**2)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return x - c, y - c


def sersic_stamps(size: int, n: np.ndarray, re: np.ndarray, q: np.ndarray, pa: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Unit-sum Sersic profiles, (B, size, size) float32."""
    x, y = _grid(size)
    n, re, q, pa, dx, dy = (np.asarray(a, dtype=np.float32) for a in (n, re, q, pa, dx, dy))
    xs = x[None] - dx[:, None, None]
    ys = y[None] - dy[:, None, None]
    c, s = np.cos(pa)[:, None, None], np.sin(pa)[:, None, None]
    xr = xs * c + ys * s
    yr = (-xs * s + ys * c) / q[:, None, None]
    r = np.sqrt(xr**2 + yr**2 + 0.25).astype(np.float32)
    nn = n[:, None, None]
    prof = np.exp(-_sersic_b(nn) * ((r / re[:, None, None]) ** (1.0 / nn) - 1.0)).astype(np.float32)
    prof /= prof.sum(axis=(1, 2), keepdims=True)
    return prof


def psf_convolve(stamps: np.ndarray) -> np.ndarray:
    """(B, H, W) -> (B, 4, H, W): convolve with each band's Gaussian PSF in Fourier space."""
    size = stamps.shape[-1]
    ky = np.fft.fftfreq(size)[:, None]
    kx = np.fft.rfftfreq(size)[None, :]
    sigma = PSF_FWHM_PX / 2.3548
    transfer = np.exp(-2 * np.pi**2 * sigma[:, None, None] ** 2 * (kx**2 + ky**2)[None]).astype(np.complex64)
    ft = np.fft.rfft2(stamps)[:, None]
    return np.fft.irfft2(ft * transfer[None], s=(size, size)).astype(np.float32)


def continuum_shape(lam_rest: np.ndarray, d4000: np.ndarray, alpha: np.ndarray, av: np.ndarray) -> np.ndarray:
    """Unnormalised rest-frame f_lambda continuum (broadcasts over objects; keeps the input dtype)."""
    x = lam_rest / 5500.0
    log_x = np.log(x)
    brk = 1.0 / d4000 + (1.0 - 1.0 / d4000) * _sigmoid((lam_rest - 4000.0) / 30.0)
    # x**alpha * 10**(-0.4 A_V x**-1.3), as one exp: fewer passes over (B, L)
    return np.exp(alpha * log_x - 0.4 * np.log(10.0) * av * np.exp(-1.3 * log_x)) * brk


def band_fluxes(pop: Population, rows: np.ndarray) -> np.ndarray:
    """Total flux (uJy) per band, (B, 4), from the SED at lambda_band/(1+z); VIS matches f_vis."""
    z = pop.z[rows][:, None]
    lam_obs = np.array([BAND_WAVELENGTH[b] for b in BANDS])[None, :]
    lam_rest = lam_obs / (1 + z)
    f_lam = continuum_shape(lam_rest, pop.d4000[rows][:, None], pop.alpha[rows][:, None], pop.av[rows][:, None])
    f_nu = f_lam * lam_obs**2
    return (f_nu / f_nu[:, :1] * pop.f_vis[rows][:, None]).astype(np.float32)


def _ujy_to_flam17(f_ujy: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """uJy -> 1e-17 erg/s/cm2/A at observed wavelength ``lam``."""
    return f_ujy * 1e-29 * 2.998e18 / lam**2 / 1e-17


def _add_gaussians(flux: np.ndarray, centers: np.ndarray, sigmas: np.ndarray, amps: np.ndarray, wave: np.ndarray) -> None:
    """Add Gaussian lines (integrated flux ``amps``) into ``flux`` in place, only near each centre."""
    step = wave[1] - wave[0]
    half = int(np.ceil(6 * float(np.max(sigmas)) / step)) + 1
    offsets = np.arange(-half, half + 1)
    centre_idx = np.round((centers - wave[0]) / step).astype(np.int64)
    idx = centre_idx[:, None] + offsets[None, :]
    valid = (idx >= 0) & (idx < wave.size)
    idx_c = np.clip(idx, 0, wave.size - 1)
    lam = wave[idx_c]
    vals = amps[:, None] / (np.sqrt(2 * np.pi) * sigmas[:, None]) * np.exp(-0.5 * ((lam - centers[:, None]) / sigmas[:, None]) ** 2)
    vals = np.where(valid, vals, 0.0)
    rows = np.broadcast_to(np.arange(flux.shape[0])[:, None], idx.shape)
    np.add.at(flux, (rows[valid], idx_c[valid]), vals[valid].astype(flux.dtype))


def line_fluxes(z: np.ndarray, logm: np.ndarray, logsfr: np.ndarray, av: np.ndarray) -> dict[str, np.ndarray]:
    """Observed integrated line fluxes (1e-17 erg/s/cm2) through the fibre."""
    dl_cm = luminosity_distance_mpc(z) * 3.0857e24
    ha_int = 10**logsfr / 7.9e-42 / (4 * np.pi * dl_cm**2) / 1e-17 * FIBER_FRACTION

    def att(lam: float) -> np.ndarray:
        return 10 ** (-0.4 * av * 1.3 * (lam / 5500.0) ** -1.3)

    ha = ha_int * att(6563.0)
    hb = ha_int / 2.86 * att(4861.0)
    o3 = hb * np.clip(10 ** (0.6 - 0.45 * (logm - 9.5)), 0.1, 8.0)
    n2 = ha * np.clip(10 ** (-0.8 + 0.35 * (logm - 9.5)), 0.05, 0.6)
    return {
        "Ha": ha,
        "Hb": hb,
        "Hg": hb * 0.47,
        "[OII]": ha_int * 0.6 * att(3727.0),
        "[OIII]5007": o3,
        "[OIII]4959": o3 / 2.98,
        "[NII]6584": n2,
        "[NII]6548": n2 / 3.0,
        "[SII]6717": ha * 0.14,
        "[SII]6731": ha * 0.10,
    }


def _sky_profile(wave: np.ndarray) -> np.ndarray:
    """Relative noise per pixel: throughput edges plus sky lines."""
    prof = 1.0 + 0.8 * np.exp(-(wave - 3600.0) / 250.0) + 0.6 * np.exp((wave - 9824.0) / 400.0)
    for i, line in enumerate(SKY_LINES):
        strength = 6.0 if i < 4 else 1.5 + 2.5 * ((i * 7919) % 10) / 10.0
        prof += strength * np.exp(-0.5 * ((wave - line) / 1.2) ** 2)
    return prof


class MockRenderer:
    """Renders rows of a :class:`Population` into images and spectra."""

    def __init__(self, pop: Population, image_size: int, seed: int):
        self.pop = pop
        self.size = image_size
        self.seed = seed
        self.wave = wavelength_grid()
        self.sky = _sky_profile(self.wave).astype(np.float32)

    # -- spectra ---------------------------------------------------------------------------
    def _spectrum_model(self, rows: np.ndarray) -> np.ndarray:
        """Noise-free spectra of ``rows`` (their own physics), (B, L) float32."""
        p, wave = self.pop, self.wave
        z = p.z[rows]
        lam_rest = (wave[None, :] / (1 + z[:, None])).astype(np.float32)
        f32 = lambda a: a[rows][:, None].astype(np.float32)  # noqa: E731
        cont = continuum_shape(lam_rest, f32(p.d4000), f32(p.alpha), f32(p.av))
        # stellar absorption: multiplicative dips of depth 0.25 (D4000 - 1.1), sigma 6 A rest frame
        depth = np.clip(0.25 * (p.d4000[rows] - 1.1), 0.0, 0.3)
        dips = np.zeros_like(cont)
        for lam0 in ABSORPTION_LINES.values():
            centre = lam0 * (1 + z)
            sigma = 6.0 * (1 + z)
            _add_gaussians(dips, centre, sigma, depth * np.sqrt(2 * np.pi) * sigma, wave)
        cont *= 1.0 - dips
        # normalise so that f_nu at the VIS effective wavelength equals the fibre flux
        lam_vis = BAND_WAVELENGTH["VIS"]
        ref = continuum_shape(lam_vis / (1 + z), p.d4000[rows], p.alpha[rows], p.av[rows])
        target = _ujy_to_flam17(p.f_vis[rows] * FIBER_FRACTION, lam_vis)
        flux = cont * (target / ref).astype(np.float32)[:, None]
        lines = line_fluxes(z, p.logM[rows], p.logSFR[rows], p.av[rows])
        vel = np.where(p.quiescent[rows], 200.0, 80.0)
        for name, amp in lines.items():
            centre = EMISSION_LINES[name] * (1 + z)
            sigma = np.sqrt((centre * vel / C_KMS) ** 2 + 0.9**2)
            _add_gaussians(flux, centre, sigma, amp, wave)
        return flux

    def spectra(self, rows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = self.pop
        source = np.where(p.donor[rows] >= 0, p.donor[rows], rows)  # cross-match: another galaxy's spectrum
        model = self._spectrum_model(source)
        sigma = (SPEC_SIGMA * p.depth[source][:, None] * self.sky[None, :]).astype(np.float32)
        flux = model + rng.standard_normal(model.shape, dtype=np.float32) * sigma
        ivar = 1.0 / sigma**2
        mask = rng.random(model.shape, dtype=np.float32) < 0.002
        blocks = np.flatnonzero(rng.uniform(size=len(rows)) < 0.1)
        for b in blocks:  # a short masked stretch (e.g. a cosmic ray on the CCD)
            start = rng.integers(0, self.wave.size - 20)
            mask[b, start : start + rng.integers(5, 20)] = True
        flux[mask] = 0.0
        ivar[mask] = 0.0
        return flux.astype(np.float32), ivar.astype(np.float32), mask

    # -- images ----------------------------------------------------------------------------
    def images(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p, size = self.pop, self.size
        b = len(rows)
        dx, dy = rng.uniform(-0.5, 0.5, b), rng.uniform(-0.5, 0.5, b)
        stamps = sersic_stamps(size, p.sersic_n[rows], p.re_px[rows], p.q[rows], p.pa[rows], dx, dy)
        conv = psf_convolve(stamps)
        imgs = conv * band_fluxes(p, rows)[:, :, None, None]
        return imgs

    def noise(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32) * SKY_SIGMA[None, :, None, None]

    # -- chunk -----------------------------------------------------------------------------
    def render(self, rows: np.ndarray, chunk_index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, 1, chunk_index])
        images = self.images(rows, rng)
        flux, ivar, mask = self.spectra(rows, rng)
        classes = self.pop.anomaly[rows]
        for i in np.flatnonzero(classes != NORMAL):
            INJECTORS[classes[i]](self, int(rows[i]), i, images, flux, ivar, mask, rng)
        images += self.noise(images.shape, rng)
        return {"images": images, "flux": flux, "ivar": ivar, "mask": mask}


# ----------------------------------------------------------------------------------- anomalies
Injector = Callable[[MockRenderer, int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.random.Generator], None]


def _line_image(size: int, angle: float, offset: float, width: float) -> np.ndarray:
    x, y = _grid(size)
    dist = np.abs(x * np.sin(angle) - y * np.cos(angle) - offset)
    return np.exp(-0.5 * (dist / width) ** 2).astype(np.float32)


def _satellite_trail(r, row, i, images, flux, ivar, mask, rng):
    band = rng.integers(0, 4)
    trail = _line_image(r.size, rng.uniform(0, np.pi), rng.uniform(-r.size / 4, r.size / 4), PSF_FWHM_PX[band] / 2.35)
    images[i, band] += trail * SKY_SIGMA[band] * rng.uniform(8, 25)


def _cosmic_rays(r, row, i, images, flux, ivar, mask, rng):
    for _ in range(rng.integers(4, 10)):
        y, x = rng.integers(1, r.size - 4, 2)
        length = rng.integers(1, 4)
        vertical = rng.uniform() < 0.5
        ys = slice(y, y + (length if vertical else 1))
        xs = slice(x, x + (1 if vertical else length))
        images[i, 0, ys, xs] += SKY_SIGMA[0] * rng.uniform(40, 150)


def _star_ghost(r, row, i, images, flux, ivar, mask, rng):
    x, y = _grid(r.size)
    cx, cy = rng.uniform(-r.size / 4, r.size / 4, 2)
    rad = np.hypot(x - cx, y - cy)
    ring = np.exp(-0.5 * ((rad - rng.uniform(0.2, 0.35) * r.size) / 2.0) ** 2)
    halo = np.exp(-rad / (0.3 * r.size))
    ghost = (ring + 0.3 * halo).astype(np.float32)
    images[i] += ghost[None] * (SKY_SIGMA * rng.uniform(4, 8))[:, None, None]


def _dead_segment(r, row, i, images, flux, ivar, mask, rng):
    length = rng.integers(300, 1000)
    start = rng.integers(0, flux.shape[1] - length)
    flux[i, start : start + length] = 0.0  # dead amplifier: no signal, not flagged in ivar


def _sky_residual(r, row, i, images, flux, ivar, mask, rng):
    sigma = 1.0 / np.sqrt(np.maximum(ivar[i], 1e-12))
    for line in SKY_LINES:
        k = int(round((line - r.wave[0]) / (r.wave[1] - r.wave[0])))
        if 3 <= k < flux.shape[1] - 3:
            amp = rng.uniform(4, 12) * rng.choice([-1, 1])
            shape = np.array([0.3, 0.8, 1.0, 0.2, -0.6, -0.4, -0.1])  # P-Cygni-like over/under-subtraction
            flux[i, k - 3 : k + 4] += amp * shape * sigma[k - 3 : k + 4]


def _calibration_jump(r, row, i, images, flux, ivar, mask, rng):
    edge = ARM_EDGES[rng.integers(0, len(ARM_EDGES))]
    factor = rng.choice([rng.uniform(0.3, 0.6), rng.uniform(1.7, 2.5)])
    red = r.wave >= edge
    flux[i, red] *= factor
    level = np.median(np.abs(flux[i, ~red])) + 0.3
    flux[i, red] += (factor - 1.0) * level  # a step even where the continuum is faint


def _point_source(r, size: int, rng) -> np.ndarray:
    delta = np.zeros((1, size, size), dtype=np.float32)
    delta[0, size // 2, size // 2] = 1.0
    return psf_convolve(delta)[0]  # (4, H, W)


def _broad_line_agn(r, row, i, images, flux, ivar, mask, rng):
    p = r.pop
    z = p.z[row]
    agn_bands = p.f_vis[row] * rng.uniform(0.7, 2.0) * (np.array([BAND_WAVELENGTH[b] for b in BANDS]) / BAND_WAVELENGTH["VIS"]) ** 0.5
    images[i] += _point_source(r, r.size, rng) * agn_bands[:, None, None].astype(np.float32)
    level = _ujy_to_flam17(agn_bands[0] * FIBER_FRACTION, BAND_WAVELENGTH["VIS"])
    flux[i] += (level * (r.wave / BAND_WAVELENGTH["VIS"]) ** -1.5).astype(np.float32) * ~mask[i]
    fwhm = rng.uniform(3000, 8000)
    for name, rel in (("Ha", 1.0), ("Hb", 0.3), ("Hg", 0.12), ("MgII", 0.5)):
        centre = EMISSION_LINES[name] * (1 + z)
        sigma = centre * fwhm / C_KMS / 2.3548
        amp = level * rel * rng.uniform(150, 300)
        _add_gaussians(flux[i : i + 1], np.array([centre]), np.array([sigma]), np.array([amp]), r.wave)
    flux[i, mask[i]] = 0.0


def _extreme_emission_line(r, row, i, images, flux, ivar, mask, rng):
    p = r.pop
    z = p.z[row]
    cont = max(float(np.median(flux[i, ~mask[i]])), 0.05)
    ew = rng.uniform(500, 1500)  # rest-frame equivalent width of [OIII]5007, Angstrom
    o3 = cont * ew * (1 + z)
    for name, rel in (("[OIII]5007", 1.0), ("[OIII]4959", 1 / 2.98), ("Hb", 0.25), ("Ha", 0.75), ("[OII]", 0.2)):
        centre = EMISSION_LINES[name] * (1 + z)
        sigma = np.sqrt((centre * 60 / C_KMS) ** 2 + 0.9**2)
        _add_gaussians(flux[i : i + 1], np.array([centre]), np.array([sigma]), np.array([o3 * rel]), r.wave)
    flux[i, mask[i]] = 0.0


def _lensed_arc(r, row, i, images, flux, ivar, mask, rng):
    p = r.pop
    x, y = _grid(r.size)
    radius = rng.uniform(0.15, 0.28) * r.size
    theta0, extent = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(60, 160))
    rad = np.hypot(x, y)
    ang = np.angle(np.exp(1j * (np.arctan2(y, x) - theta0)))
    arc = np.exp(-0.5 * ((rad - radius) / 1.2) ** 2) * np.exp(-0.5 * (ang / (extent / 2.5)) ** 2)
    arc = psf_convolve(arc[None].astype(np.float32))[0]
    blue = np.array([1.0, 0.6, 0.5, 0.4], dtype=np.float32)
    total = p.f_vis[row] * rng.uniform(0.15, 0.35)
    images[i] += arc / max(arc[0].sum(), 1e-6) * total * blue[:, None, None]
    z_src = p.z[row] + rng.uniform(0.6, 1.5)
    for name in ("[OII]", "Hb", "[OIII]5007"):
        centre = EMISSION_LINES[name] * (1 + z_src)
        if r.wave[0] < centre < r.wave[-1]:
            _add_gaussians(flux[i : i + 1], np.array([centre]), np.array([2.0]), np.array([rng.uniform(8, 20)]), r.wave)
    flux[i, mask[i]] = 0.0


def _merger(r, row, i, images, flux, ivar, mask, rng):
    p = r.pop
    sep = rng.uniform(0.12, 0.3) * r.size
    ang = rng.uniform(0, 2 * np.pi)
    comp = sersic_stamps(
        r.size, np.array([rng.uniform(0.8, 2.5)]), np.array([p.re_px[row] * rng.uniform(0.6, 1.1)]),
        np.array([rng.uniform(0.4, 1.0)]), np.array([rng.uniform(0, np.pi)]),
        np.array([sep * np.cos(ang)]), np.array([sep * np.sin(ang)]),
    )
    images[i] += psf_convolve(comp)[0] * (band_fluxes(p, np.array([row]))[0] * rng.uniform(0.5, 1.0))[:, None, None]
    dv = rng.uniform(250, 500)  # the companion's lines, offset in velocity
    z2 = (1 + p.z[row]) * (1 + dv / C_KMS) - 1
    lines = line_fluxes(np.array([z2]), p.logM[row : row + 1], p.logSFR[row : row + 1] + 0.5, p.av[row : row + 1])
    for name, amp in lines.items():
        centre = EMISSION_LINES[name] * (1 + z2)
        _add_gaussians(flux[i : i + 1], np.array([centre]), np.array([1.5]), amp, r.wave)
    flux[i, mask[i]] = 0.0


def _cross_match(r, row, i, images, flux, ivar, mask, rng):
    """Nothing to draw: :meth:`MockRenderer.spectra` already used the donor's spectrum."""


INJECTORS: dict[str, Injector] = {
    "satellite_trail": _satellite_trail,
    "cosmic_rays": _cosmic_rays,
    "star_ghost": _star_ghost,
    "dead_segment": _dead_segment,
    "sky_residual": _sky_residual,
    "calibration_jump": _calibration_jump,
    "broad_line_agn": _broad_line_agn,
    "extreme_emission_line": _extreme_emission_line,
    "lensed_arc": _lensed_arc,
    "merger": _merger,
    "cross_match": _cross_match,
}
assert set(INJECTORS) == set(ANOMALY_CLASSES)


def catalogue_columns(pop: Population, rows: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Object-table columns of ``rows``; a cross-match error carries its spectrum's redshift."""
    spec_rows = np.where(pop.donor[rows] >= 0, pop.donor[rows], rows)
    return {
        "object_id": np.array([f"mock{seed}-{r:07d}" for r in rows]),
        "targetid": pop.targetid[rows],
        "ra": pop.ra[rows],
        "dec": pop.dec[rows],
        "redshift": pop.z[spec_rows].astype(np.float32),
        "split": pop.split[rows],
        "logM": pop.logM[rows].astype(np.float32),
        "logSFR": pop.logSFR[rows].astype(np.float32),
        "anomaly_class": pop.anomaly[rows].astype(str),
        "has_spectrum": np.ones(len(rows), dtype=bool),
    }


# ----------------------------------------------------------------------------------- pipeline
_WORKER: MockRenderer | None = None


def _init_worker(pop: Population, size: int, seed: int) -> None:
    global _WORKER
    _WORKER = MockRenderer(pop, size, seed)


def _init_pool_worker(pop: Population, size: int, seed: int) -> None:
    """A render process: ends with its parent, leaves Ctrl-C and SIGTERM to it.

    The parent shuts the pool down when it is interrupted; a worker that handled the
    signal itself would die mid-task with a traceback. A parent killed outright
    (SIGKILL) cannot shut anything down, so the worker watches the parent's sentinel
    and exits when it closes instead of waiting forever on the task queue.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with_parent, args=(parent.sentinel,), daemon=True, name="parent-watch").start()
    _init_worker(pop, size, seed)


def _exit_with_parent(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def _render_chunk(rows: np.ndarray, chunk: int, rgb: bool) -> dict[str, np.ndarray]:
    assert _WORKER is not None
    data = _WORKER.render(rows, chunk)
    if rgb:
        data["rgb"] = asinh_rgb(data["images"])
    return data


def render_chunks(
    pop: Population, size: int, seed: int, chunks: list[tuple[int, np.ndarray]], rgb: bool, workers: int
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Yield ``(rows, data)`` per chunk in order; rendering runs ahead in worker processes.

    Rendering (numpy) and writing (HDF5 compression + digest) each take about
    half the time, so one render process beside the writing parent nearly halves
    the wall time on two cores. Output is identical: each chunk has its own seed.
    """
    if workers == 0:
        workers = 1 if available_cores() > 1 and len(chunks) > 2 else -1
    if workers < 0 or len(chunks) <= 1:
        _init_worker(pop, size, seed)
        for chunk, rows in chunks:
            yield rows, _render_chunk(rows, chunk, rgb)
        return
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_pool_worker, initargs=(pop, size, seed))
    pending: deque = deque()
    todo = iter(chunks)
    try:
        # Workers start with SIGINT ignored (inherited through exec), so a Ctrl-C while they
        # import cannot kill them with a traceback before their initializer has run.
        main = threading.current_thread() is threading.main_thread()  # only there may handlers change
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            for chunk, rows in itertools.islice(todo, workers + 1):
                pending.append((rows, pool.submit(_render_chunk, rows, chunk, rgb)))
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
        while pending:
            rows, future = pending.popleft()
            data = future.result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append((nxt[1], pool.submit(_render_chunk, nxt[1], nxt[0], rgb)))
            yield rows, data
    finally:
        # Interrupted or done: drop queued chunks and wait for the workers to exit, so none
        # outlives the command (a worker still starting would fail on vanished semaphores).
        pool.shutdown(wait=True, cancel_futures=True)
