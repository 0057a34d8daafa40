"""Packs real public spectra and images into the Euclid x DESI dataset's column layout.

Nothing here is simulated. The inputs are real observations shipped by PyPI packages:

* DESI EDR spectra: the four extracts in specutils' test data (installed, ``dev``
  extra) and two single-fibre coadds with their redrock redshifts from
  fastspecfit's test data (copied, trimmed, into ``data/``);
* an SDSS quasar, a Magellan/MagE and a Keck/ESI quasar spectrum from linetools'
  test files (copied into ``data/``);
* images: the Hubble eXtreme Deep Field (XDF) colour JPEG in scikit-image's ``skimage.data``
  (installed, ``dev`` extra).

The builder only selects and repacks: it splices each DESI spectrum's B/R/Z arms
(dropping the bluer arm's overlap pixels, never interpolating), turns ivar into
the dataset's ``error`` (inf where ivar is 0, i.e. unusable), computes the
wavelengths the FITS headers describe, and cuts square stamps around the
brightest XDF sources. The importer does all resampling. Sources, licences and
the band mapping: docs/realdata.md.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

#: (distribution, path inside it) of every file the fixture reads.
DESI_FILES = {
    "tile169_coadd": ("specutils", "specutils/io/default_loaders/tests/desi_test_data/coadd-5-169-thru20210419.fits"),
    "tile169_spectra": ("specutils", "specutils/io/default_loaders/tests/desi_test_data/spectra-5-169-thru20210419.fits"),
    "hpx26065_coadd": ("specutils", "specutils/io/default_loaders/tests/desi_test_data/coadd-sv3-dark-26065.fits"),
    "hpx26065_spectra": ("specutils", "specutils/io/default_loaders/tests/desi_test_data/spectra-sv3-dark-26065.fits"),
}
XDF_IMAGE = ("scikit-image", "skimage/data/hubble_deep_field.jpg")
#: Files copied from packages too heavy for the dev extra (see data/README.md).
DATA = Path(__file__).parent / "data"
DESI_EXTRACTS = {
    "tile80613_coadd": "fastspecfit_coadd-4-80613-thru20210324.fits.gz",
    "hpx27247_coadd": "fastspecfit_coadd-special-dark-27247.fits.gz",
}

STAMP = 64  #: stamp side in XDF pixels (the importer resamples to its image_size)
IMAGE_ONLY = 20  #: extra XDF stamps without a spectrum (the dataset's missing-spectrum case)
TEST_EVERY = 4  #: every 4th object goes to the test split

SPECTRUM = pa.struct([("flux", pa.list_(pa.float32())), ("wavelength", pa.list_(pa.float32())), ("error", pa.list_(pa.float32()))])
IMAGE = pa.list_(pa.list_(pa.float32()))
SCHEMA = pa.schema([
    ("object_id", pa.string()),
    ("targetid", pa.int64()),
    ("redshift", pa.float32()),
    ("RGB_image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
    ("VIS_image", IMAGE),
    ("NISP_Y_image", IMAGE),
    ("NISP_J_image", IMAGE),
    ("NISP_H_image", IMAGE),
    ("spectrum", SPECTRUM),
])


class MissingSource(RuntimeError):
    """A package that carries fixture data is not installed (it is in the ``dev`` extra)."""


def source_file(distribution: str, inner: str) -> Path:
    """Path of a data file inside an installed distribution, without importing the package."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise MissingSource(f"{distribution} is not installed; it ships {inner} (pip install -e '.[dev]')") from None
    path = Path(dist.locate_file(inner))
    if not path.is_file():
        raise MissingSource(f"{distribution} {dist.version} does not contain {inner}")
    return path


@dataclass(frozen=True)
class Spectrum:
    object_id: str
    targetid: int | None
    redshift: float | None
    wavelength: np.ndarray
    flux: np.ndarray
    error: np.ndarray


def _error_from_ivar(ivar: np.ndarray) -> np.ndarray:
    """1/sqrt(ivar); inf where ivar is 0 (the pixel is unusable)."""
    good = ivar > 0
    return np.where(good, 1.0 / np.sqrt(np.where(good, ivar, 1.0)), np.inf).astype(np.float32)


def _desi_fibres(key: str, path: Path) -> list[Spectrum]:
    """Every fibre of one DESI coadd/spectra file, arms spliced in wavelength order."""
    from astropy.io import fits

    with fits.open(path) as hdus:
        targetids = np.asarray(hdus["FIBERMAP"].data["TARGETID"], dtype=np.int64)
        z = dict(zip(hdus["REDSHIFTS"].data["TARGETID"], hdus["REDSHIFTS"].data["Z"], strict=True)) if "REDSHIFTS" in hdus else {}
        arms = [(hdus[f"{a}_WAVELENGTH"].data, hdus[f"{a}_FLUX"].data, hdus[f"{a}_IVAR"].data) for a in "BRZ"]
        # each arm up to where the next one starts: a selection, not a resampling
        keep = [w < arms[k + 1][0][0] if k + 1 < len(arms) else np.ones(w.size, bool) for k, (w, _, _) in enumerate(arms)]
        wave = np.concatenate([w[m] for (w, _, _), m in zip(arms, keep, strict=True)]).astype(np.float32)
        out = []
        for row, tid in enumerate(targetids):
            flux = np.concatenate([f[row][m] for (_, f, _), m in zip(arms, keep, strict=True)])
            ivar = np.concatenate([iv[row][m] for (_, _, iv), m in zip(arms, keep, strict=True)])
            redshift = float(z[tid]) if tid in z else None
            out.append(Spectrum(f"{key}_{row}", int(tid), redshift, wave, flux.astype(np.float32), _error_from_ivar(ivar)))
    return out


def _log_linear_wavelength(header) -> np.ndarray:
    """Wavelengths of a 1-D image with a log10-linear axis (CRVAL1/CDELT1 or CD1_1, CRPIX1)."""
    step = header.get("CDELT1", header.get("CD1_1"))
    pixel = np.arange(header["NAXIS1"]) + 1 - header.get("CRPIX1", 1)
    return (10.0 ** (header["CRVAL1"] + step * pixel)).astype(np.float32)


def _flux_error_pair(object_id: str, flux_file: str, error_file: str) -> Spectrum:
    """A flux image and its error image (linetools' MagE/ESI files)."""
    from astropy.io import fits

    with fits.open(DATA / flux_file) as f, fits.open(DATA / error_file) as e:
        error = e[0].data.astype(np.float32)
        error = np.where(error > 0, error, np.inf).astype(np.float32)  # 0 marks an unusable pixel
        return Spectrum(object_id, None, None, _log_linear_wavelength(f[0].header), f[0].data.astype(np.float32), error)


def _sdss_quasar() -> Spectrum:
    """linetools' SDSS file: flux, ivar and log10 wavelength in HDUs 0, 1, 2."""
    from astropy.io import fits

    with fits.open(DATA / "linetools_SDSSJ220248.31+123656.3.fits.gz") as h:
        return Spectrum("sdss_J220248.31+123656.3", None, None, (10.0 ** h[2].data).astype(np.float32),
                        h[0].data.astype(np.float32), _error_from_ivar(h[1].data))


def real_spectra() -> list[Spectrum]:
    """Every real spectrum of the fixture, in a fixed order."""
    out = [s for key, (dist, inner) in DESI_FILES.items() for s in _desi_fibres(key, source_file(dist, inner))]
    for key, name in DESI_EXTRACTS.items():
        out += _desi_fibres(key, DATA / name)
    out.append(_sdss_quasar())
    out.append(_flux_error_pair("mage_UM184", "linetools_UM184_nF.fits.gz", "linetools_UM184_nE.fits.gz"))
    out.append(_flux_error_pair("esi_PH957", "linetools_PH957_f.fits.gz", "linetools_PH957_e.fits.gz"))
    return out


def xdf_stamps(n: int, size: int = STAMP) -> list[np.ndarray]:
    """``n`` RGB stamps centred on the brightest separated sources of the Hubble eXtreme Deep Field."""
    from scipy import ndimage

    rgb = np.asarray(Image.open(source_file(*XDF_IMAGE)).convert("RGB"))
    light = ndimage.gaussian_filter(rgb.astype(np.float32).mean(axis=2), 2.0)
    half = size // 2
    peaks = (light == ndimage.maximum_filter(light, size=half)) & (light > np.percentile(light, 90))
    peaks[:half, :] = peaks[-half:, :] = peaks[:, :half] = peaks[:, -half:] = False
    ys, xs = np.nonzero(peaks)
    stamps: list[np.ndarray] = []
    taken: list[tuple[int, int]] = []
    for k in np.argsort(-light[ys, xs], kind="stable"):
        y, x = int(ys[k]), int(xs[k])
        if any(abs(y - ty) < half and abs(x - tx) < half for ty, tx in taken):
            continue
        taken.append((y, x))
        stamps.append(rgb[y - half:y + half, x - half:x + half])
        if len(stamps) == n:
            return stamps
    raise ValueError(f"the XDF image has only {len(stamps)} separated sources; {n} needed")


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _row(object_id: str, targetid: int | None, stamp: np.ndarray, spectrum: Spectrum | None) -> dict:
    channels = stamp.astype(np.float32)
    return {
        "object_id": object_id,
        "targetid": targetid,
        "redshift": None if spectrum is None else spectrum.redshift,
        "RGB_image": {"bytes": _png(stamp), "path": None},
        # VIS (broad optical) <- the stamp's mean light; NISP Y/J/H <- its B/G/R channels, bluest to reddest
        "VIS_image": channels.mean(axis=2).tolist(),
        "NISP_Y_image": channels[..., 2].tolist(),
        "NISP_J_image": channels[..., 1].tolist(),
        "NISP_H_image": channels[..., 0].tolist(),
        "spectrum": None if spectrum is None else {
            "flux": spectrum.flux.tolist(), "wavelength": spectrum.wavelength.tolist(), "error": spectrum.error.tolist()},
    }


def build_rows() -> list[dict]:
    """All fixture rows: one per real spectrum, then image-only objects, each with its own XDF stamp."""
    spectra = real_spectra()
    stamps = xdf_stamps(len(spectra) + IMAGE_ONLY)
    rows = [_row(s.object_id, s.targetid, stamps[k], s) for k, s in enumerate(spectra)]
    rows += [_row(f"xdf_{k}", None, stamps[len(spectra) + k], None) for k in range(IMAGE_ONLY)]
    return rows


def write_dataset(folder: Path) -> dict[str, list[str]]:
    """Write ``train.parquet`` and ``test.parquet`` into ``folder``; returns the object ids per split."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = build_rows()
    splits = {"train": [r for k, r in enumerate(rows) if k % TEST_EVERY], "test": rows[::TEST_EVERY]}
    for split, part in splits.items():
        pq.write_table(pa.Table.from_pylist(part, schema=SCHEMA), folder / f"{split}.parquet", row_group_size=8)
    return {split: [r["object_id"] for r in part] for split, part in splits.items()}


def usable_spectra() -> set[str]:
    """Ids of the spectra with at least one usable pixel (DESI's sky and unassigned fibres have none)."""
    return {s.object_id for s in real_spectra() if np.isfinite(s.error).any()}
