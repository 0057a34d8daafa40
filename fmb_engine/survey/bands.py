"""Constants of the survey data: bands, the spectral grid, lines, anomaly classes.

One module so every stage (mock, importer, models, figures, TUI) agrees.
"""

from __future__ import annotations

import numpy as np

#: Euclid bands, in the order of the image axis 1 of the store.
BANDS: tuple[str, ...] = ("VIS", "NISP_Y", "NISP_J", "NISP_H")
#: Effective wavelengths in Angstrom (Euclid VIS and NISP Y/J/H).
BAND_WAVELENGTH: dict[str, float] = {"VIS": 7150.0, "NISP_Y": 10810.0, "NISP_J": 13670.0, "NISP_H": 17710.0}
#: Column names of each band in the published Euclid x DESI dataset.
DATASET_BAND_COLUMNS: dict[str, str] = {
    "VIS": "VIS_image",
    "NISP_Y": "NISP_Y_image",
    "NISP_J": "NISP_J_image",
    "NISP_H": "NISP_H_image",
}

#: DESI-like coadd grid: 3600-9824 A in 0.8 A steps, 7781 bins.
WAVE_MIN = 3600.0
WAVE_STEP = 0.8
N_WAVE = 7781


def wavelength_grid() -> np.ndarray:
    """The store's shared observed-frame wavelength grid in Angstrom (float64)."""
    return WAVE_MIN + WAVE_STEP * np.arange(N_WAVE, dtype=np.float64)


#: Rest-frame vacuum-ish wavelengths (Angstrom) of lines marked in plots and used by the mock.
EMISSION_LINES: dict[str, float] = {
    "Lya": 1215.67,
    "CIV": 1549.06,
    "CIII]": 1908.73,
    "MgII": 2798.75,
    "[OII]": 3727.42,
    "[NeIII]": 3868.76,
    "Hd": 4101.74,
    "Hg": 4340.47,
    "Hb": 4861.33,
    "[OIII]4959": 4958.91,
    "[OIII]5007": 5006.84,
    "[NII]6548": 6548.05,
    "Ha": 6562.80,
    "[NII]6584": 6583.45,
    "[SII]6717": 6716.44,
    "[SII]6731": 6730.82,
}
ABSORPTION_LINES: dict[str, float] = {
    "CaK": 3933.66,
    "CaH": 3968.47,
    "Gband": 4304.4,
    "Mgb": 5175.3,
    "NaD": 5892.9,
}

#: Injected anomaly classes of the mock survey, grouped by what a detector must notice.
ANOMALY_GROUPS: dict[str, tuple[str, ...]] = {
    "image_artefact": ("satellite_trail", "cosmic_rays", "star_ghost"),
    "spectral_artefact": ("dead_segment", "sky_residual", "calibration_jump"),
    "physical": ("broad_line_agn", "extreme_emission_line", "lensed_arc", "merger"),
    "cross_match": ("cross_match",),
}
ANOMALY_CLASSES: tuple[str, ...] = tuple(c for group in ANOMALY_GROUPS.values() for c in group)
#: Label of an object without an injected anomaly.
NORMAL = ""


def anomaly_group(anomaly_class: str) -> str:
    """Group of an anomaly class ('' for normal objects)."""
    for group, classes in ANOMALY_GROUPS.items():
        if anomaly_class in classes:
            return group
    return ""
