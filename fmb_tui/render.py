"""Terminal renderings of spectra (braille) and images (half blocks), as rich Text (no Textual import).

Pure functions of numpy arrays and a size in cells, so they are fast (a 7,781-pixel
spectrum renders in a few milliseconds), deterministic (snapshot tests) and usable in
worker threads. Colours are plain ANSI names and RGB triples; Textual downgrades them to
256 colours where the terminal has no truecolor, and to monochrome with ``NO_COLOR``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich.color import Color
from rich.style import Style
from rich.text import Text

from fmb_engine.survey.bands import EMISSION_LINES

BRAILLE = 0x2800
# bit of the dot at (row 0..3, column 0..1) inside one braille cell
_DOT = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], dtype=np.uint8)
SMOOTHING_STEPS = (1, 3, 5, 9, 15, 25)

DATA_STYLE = Style(color="bright_cyan")
LINE_STYLE = Style(color="yellow")
MASK_STYLE = Style(color="red")
AXIS_STYLE = Style(dim=True)

#: short names of the marked lines (the label row has little room)
SHORT = {"[OIII]4959": "", "[OIII]5007": "OIII", "[NII]6548": "", "[NII]6584": "", "[SII]6717": "SII",
         "[SII]6731": "", "[OII]": "OII", "[NeIII]": "NeIII", "CIII]": "CIII"}


def smooth(flux: np.ndarray, good: np.ndarray, width: int) -> np.ndarray:
    """Mask-aware boxcar: masked pixels get no weight; NaN where a window holds no good pixel."""
    flux = np.where(good, np.nan_to_num(flux.astype(np.float64)), 0.0)
    if width <= 1:
        return np.where(good, flux, np.nan)
    kernel = np.ones(width)
    num = np.convolve(flux, kernel, mode="same")
    den = np.convolve(good.astype(np.float64), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


@dataclass(frozen=True)
class SpectrumView:
    lo: float
    hi: float
    smoothing: int = 5

    def zoom(self, factor: float, full: tuple[float, float]) -> SpectrumView:
        centre = 0.5 * (self.lo + self.hi)
        half = max(20.0, 0.5 * (self.hi - self.lo) * factor)
        half = min(half, 0.5 * (full[1] - full[0]))
        return SpectrumView(centre - half, centre + half, self.smoothing).clamped(full)

    def pan(self, fraction: float, full: tuple[float, float]) -> SpectrumView:
        shift = fraction * (self.hi - self.lo)
        return SpectrumView(self.lo + shift, self.hi + shift, self.smoothing).clamped(full)

    def clamped(self, full: tuple[float, float]) -> SpectrumView:
        width = min(self.hi - self.lo, full[1] - full[0])
        lo = min(max(self.lo, full[0]), full[1] - width)
        return SpectrumView(lo, lo + width, self.smoothing)

    def next_smoothing(self) -> SpectrumView:
        steps = SMOOTHING_STEPS
        i = steps.index(self.smoothing) if self.smoothing in steps else 0
        return SpectrumView(self.lo, self.hi, steps[(i + 1) % len(steps)])


def _ticks(lo: float, hi: float, n: int) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / max(1, n)
    mag = 10 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = np.ceil(lo / step) * step
    return [float(v) for v in np.arange(first, hi + 1e-9, step)]


def axis_labels(values: list[float]) -> tuple[list[str], str]:
    """Tick labels of at most 6 characters for the flux axis, and the factor they leave out (``×1e-17``).

    Fluxes in physical units (1e-17 erg/s/cm²/Å) or counts (1e5) need 8+ characters each in
    ``g`` format and pushed the axis out of line. Values whose largest magnitude is 0.1..999
    are written as they are; others are scaled to 1..9.99 with the factor named once.
    """
    biggest = max((abs(v) for v in values if np.isfinite(v)), default=0.0)
    exponent = 0
    if biggest and not 0.1 <= biggest < 1000:
        exponent = int(np.floor(np.log10(biggest)))
        values = [v / 10.0**exponent for v in values]
        biggest /= 10.0**exponent
    decimals = max(0, 2 - int(np.floor(np.log10(biggest)))) if biggest else 0
    labels = [f"{v:.{decimals}f}" for v in values]
    return labels, (f"×1e{exponent}" if exponent else "")


def spectrum_text(wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray,
                  redshift: float | None, width: int, height: int, view: SpectrumView | None = None,
                  smoothed: np.ndarray | None = None) -> Text:
    """A braille line plot of a spectrum, ``width`` x ``height`` cells including axes and labels.

    Rows: one row of line names, the plot, one row marking masked (ivar = 0) pixels, one row of
    wavelength ticks. Lines of ``EMISSION_LINES`` are drawn at the object's redshift.
    """
    width, height = max(width, 20), max(height, 5)
    wave = np.asarray(wavelength, dtype=np.float64)
    good = (~np.asarray(mask, dtype=bool)) & (np.asarray(ivar) > 0) & np.isfinite(flux)
    view = view or SpectrumView(float(wave[0]), float(wave[-1]))
    ys = smoothed if smoothed is not None else smooth(np.asarray(flux), good, view.smoothing)
    margin = 7  # flux labels (at most 6 characters, see axis_labels) and the axis
    pw, ph = width - margin, max(1, height - 3)  # plot cells
    sel = (wave >= view.lo) & (wave <= view.hi)
    cols_px, rows_px = 2 * pw, 4 * ph
    span = view.hi - view.lo
    x_of = lambda lam: (np.asarray(lam) - view.lo) / span * cols_px  # noqa: E731

    # one mean per braille pixel column: a line, not a noise band
    cols = mean = np.zeros(0)
    idx = np.flatnonzero(sel)
    if idx.size:
        px = np.clip(x_of(wave[idx]).astype(np.int64), 0, cols_px - 1)
        yv = ys[idx]
        finite = np.isfinite(yv)
        px, yv = px[finite], yv[finite]
        if px.size:
            starts = np.flatnonzero(np.r_[True, px[1:] != px[:-1]])
            cols = px[starts]
            mean = np.add.reduceat(yv, starts) / np.diff(np.r_[starts, yv.size])
    if mean.size:
        ymin, ymax = float(mean.min()), float(mean.max())
    else:
        ymin, ymax = 0.0, 1.0
    pad = 0.06 * (ymax - ymin) if ymax > ymin else 1.0
    ymin, ymax = ymin - pad, ymax + pad
    at = {ph - 1: ymin, 0: ymax} | ({ph // 2: 0.5 * (ymin + ymax)} if ph >= 5 else {})  # 1 row: the top wins
    texts, factor = axis_labels(list(at.values()))
    y_labels = dict(zip(at, texts, strict=True))

    bits = np.zeros((ph, pw), dtype=np.uint8)
    if mean.size:
        # connect each column to the previous one (a vertical step) so the curve has no gaps
        prev = np.r_[mean[0], mean[:-1]]
        adjacent = np.r_[False, cols[1:] - cols[:-1] <= 2]
        lo_v = np.where(adjacent, np.minimum(mean, 0.5 * (mean + prev)), mean)
        hi_v = np.where(adjacent, np.maximum(mean, 0.5 * (mean + prev)), mean)
        to_row = lambda v: np.clip(((ymax - v) / (ymax - ymin) * (rows_px - 1)).round().astype(np.int64), 0, rows_px - 1)  # noqa: E731
        r_top, r_bot = to_row(hi_v), to_row(lo_v)
        for c, a, b in zip(cols.tolist(), r_top.tolist(), r_bot.tolist(), strict=True):
            rr = np.arange(a, b + 1)
            np.bitwise_or.at(bits, (rr // 4, np.full(rr.size, c // 2)), _DOT[rr % 4, c % 2])

    # emission lines at the object's redshift
    line_cols: dict[int, str] = {}
    if redshift is not None and np.isfinite(redshift):
        for name, rest in EMISSION_LINES.items():
            obs = rest * (1.0 + float(redshift))
            if view.lo <= obs <= view.hi:
                c = int(min(pw - 1, x_of(obs) // 2))
                if c not in line_cols or SHORT.get(name, name):
                    line_cols[c] = SHORT.get(name, name) or line_cols.get(c, "")
    # masked pixels per cell column
    masked_cols = np.zeros(pw, dtype=bool)
    bad = np.flatnonzero(sel & ~good)
    if bad.size:
        masked_cols[np.clip((x_of(wave[bad]) // 2).astype(np.int64), 0, pw - 1)] = True

    text = Text(no_wrap=True, overflow="crop", end="")
    # row 0: line names
    label_row = [" "] * pw
    for c, name in sorted(line_cols.items()):
        if name and all(label_row[c + k] == " " for k in range(len(name)) if c + k < pw) and c + len(name) <= pw:
            for k, ch in enumerate(name):
                label_row[c + k] = ch
    text.append(f"{factor[:margin - 1]:>{margin - 1}} ", AXIS_STYLE)  # the factor the flux labels leave out
    text.append("".join(label_row), LINE_STYLE)
    text.append("\n")
    # plot rows
    for r in range(ph):
        text.append(f"{y_labels.get(r, ''):>{margin - 1}}", AXIS_STYLE)
        text.append("┤" if r in y_labels else "│", AXIS_STYLE)
        row = bits[r]
        run: list[str] = []
        run_style: Style | None = None
        for c in range(pw):
            b = int(row[c])
            if b:
                ch, st = chr(BRAILLE + b), DATA_STYLE
            elif c in line_cols:
                ch, st = "┊", LINE_STYLE
            else:
                ch, st = " ", None
            if st is not run_style and run:
                text.append("".join(run), run_style)
                run = []
            run_style = st
            run.append(ch)
        if run:
            text.append("".join(run), run_style)
        text.append("\n")
    # masked pixels
    text.append(" " * (margin - 1) + "└", AXIS_STYLE)
    text.append("".join("×" if m else "─" for m in masked_cols), MASK_STYLE if masked_cols.any() else AXIS_STYLE)
    text.append("\n")
    # wavelength ticks
    tick_row = [" "] * (pw + margin)
    for t in _ticks(view.lo, view.hi, max(2, pw // 12)):
        label = f"{t:.0f}"
        c = margin + int(x_of(t) // 2) - len(label) // 2
        if c >= 0 and c + len(label) <= len(tick_row) and all(ch == " " for ch in tick_row[max(0, c - 1):c + len(label) + 1]):
            tick_row[c:c + len(label)] = list(label)
    unit = "Å"
    tail = "".join(tick_row).rstrip()
    if len(tail) + 2 <= width:
        tail = tail + " " * (width - len(tail) - 1) + unit if len(tail) < width - 1 else tail
    text.append(tail[:width], AXIS_STYLE)
    return text


# --- images --------------------------------------------------------------------------------


def _resample(img: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Area-ish resampling by averaging the source pixels that fall in each target pixel."""
    h, w = img.shape[:2]
    ys = np.minimum((np.arange(rows + 1) * h / rows).astype(int), h)
    xs = np.minimum((np.arange(cols + 1) * w / cols).astype(int), w)
    out = np.empty((rows, cols) + img.shape[2:], dtype=np.float32)
    f = img.astype(np.float32)
    for i in range(rows):
        y0, y1 = ys[i], max(ys[i + 1], ys[i] + 1)
        band = f[y0:min(y1, h)].mean(axis=0)
        for j in range(cols):
            x0, x1 = xs[j], max(xs[j + 1], xs[j] + 1)
            out[i, j] = band[x0:min(x1, w)].mean(axis=0)
    return out


def grey_rgb(band: np.ndarray) -> np.ndarray:
    """One band -> grey uint8 RGB with a 1-99.5 % asinh-ish stretch (NaN = black)."""
    b = np.asarray(band, dtype=np.float32)
    finite = b[np.isfinite(b)]
    if not finite.size:
        return np.zeros(b.shape + (3,), dtype=np.uint8)
    lo, hi = np.percentile(finite, [1.0, 99.5])
    x = np.clip((np.nan_to_num(b, nan=lo) - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    x = np.arcsinh(8 * x) / np.arcsinh(8)
    g = (x * 255 + 0.5).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=-1)


_STYLE_CACHE: dict[tuple[int, int, int, int, int, int], Style] = {}


def halfblock_text(rgb: np.ndarray, width: int, height: int) -> Text:
    """An (H, W, 3) uint8 image as ``height`` rows of ``width`` upper-half blocks (2 pixels per cell)."""
    width, height = max(width, 1), max(height, 1)
    # keep the aspect ratio: a cell is about twice as tall as wide, i.e. two square pixels
    h, w = rgb.shape[:2]
    px_rows = 2 * height
    cols = min(width, max(1, round(px_rows * w / h)))
    small = _resample(rgb, px_rows, cols).round().clip(0, 255).astype(np.uint8)
    pad = (width - cols) // 2
    text = Text(no_wrap=True, overflow="crop", end="")
    for r in range(height):
        text.append(" " * pad)
        top, bottom = small[2 * r], small[2 * r + 1]
        for c in range(cols):
            key = (*top[c].tolist(), *bottom[c].tolist())
            st = _STYLE_CACHE.get(key)
            if st is None:
                st = Style(color=Color.from_rgb(*key[:3]), bgcolor=Color.from_rgb(*key[3:]))
                if len(_STYLE_CACHE) < 65536:
                    _STYLE_CACHE[key] = st
            text.append("▀", st)
        text.append(" " * (width - cols - pad))
        if r < height - 1:
            text.append("\n")
    return text
