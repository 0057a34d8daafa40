"""One matplotlib style for every FMB figure, and deterministic PNG + PDF saving.

``fmb.mplstyle`` (beside this module) is applied in a context, never at import, so
importing a figure module changes no global state. Text is plain or mathtext; LaTeX is
never required (reference bug L8). Saving strips timestamps so equal inputs give
byte-identical files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

STYLE_FILE = Path(__file__).with_name("fmb.mplstyle")
#: Stable colours per model (others cycle through the style's palette).
MODEL_COLOURS = {"aion": "#1f77b4", "astropt": "#ff7f0e", "astroclip": "#2ca02c", "cca": "#d62728", "pca": "#9467bd"}
FORMATS: tuple[str, ...] = ("png", "pdf")


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def fmb_style() -> Iterator[None]:
    plt = pyplot()
    with plt.style.context(str(STYLE_FILE)):
        yield


def save(fig, path: str | Path, formats: Sequence[str] = FORMATS, dpi: int | None = None) -> list[Path]:
    """Write ``path`` with each suffix in ``formats`` (atomically, no timestamps); closes the figure."""
    from fmb_engine.workspace import atomic_path, make_dirs

    plt = pyplot()
    base = Path(path)
    base = base.with_suffix("") if base.suffix.lower() in {".png", ".pdf"} else base
    make_dirs(base.parent)
    written = []
    meta = {"png": {"Software": None}, "pdf": {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None}}
    try:
        for fmt in formats:
            out = base.with_name(base.name + "." + fmt)
            with atomic_path(out) as tmp:
                fig.savefig(tmp, format=fmt, dpi=dpi, metadata=meta.get(fmt))
            written.append(out)
    finally:
        plt.close(fig)
    return written


def model_colour(model: str, i: int = 0) -> str:
    from matplotlib import rcParams

    cycle = rcParams["axes.prop_cycle"].by_key()["color"]
    return MODEL_COLOURS.get(model.lower(), cycle[i % len(cycle)])


__all__ = ["FORMATS", "MODEL_COLOURS", "STYLE_FILE", "fmb_style", "model_colour", "pyplot", "save"]
