"""The spectrum plot's flux axis stays straight whatever the flux units (long tick labels were the bug)."""

import numpy as np
import pytest

from fmb_tui.render import axis_labels, spectrum_text


@pytest.mark.parametrize("scale", [1e-17, 1e-3, 0.05, -0.5, 1.0, 42.0, 5e5, -3e8])
def test_axis_column_is_the_same_on_every_plot_row(scale):
    wave = np.linspace(3600, 9800, 400)
    flux = scale * (1.0 + 0.3 * np.sin(wave / 300.0))
    text = spectrum_text(wave, flux, np.ones_like(wave), np.zeros(wave.size, bool), 0.1, 60, 12).plain
    rows = text.split("\n")
    assert len(rows) == 12 and all(len(r) <= 60 for r in rows)
    plot = rows[1:-2]
    assert all(r[6] in "┤│" for r in plot), "\n".join(rows)  # the axis, in one column
    assert rows[-2][6] == "└"
    labelled = [r[:6].strip() for r in plot if r[6] == "┤"]
    assert len(labelled) == 3 and all(0 < len(t) <= 6 for t in labelled)
    magnitude = int(np.floor(np.log10(abs(scale) * 1.3)))
    scaled = not -1 <= magnitude < 3
    assert rows[0][:6].strip() == (f"×1e{magnitude}" if scaled else "")  # the factor the labels leave out
    top = float(labelled[0]) * (10.0 ** magnitude if scaled else 1.0)
    assert top == pytest.approx(flux.max() + 0.06 * np.ptp(flux), rel=0.05, abs=0.01 * abs(scale))


def test_axis_labels_scale_and_decimals():
    assert axis_labels([2.5e-17, -1e-18]) == (["2.50", "-0.10"], "×1e-17")
    assert axis_labels([123456.0, 0.0]) == (["1.23", "0.00"], "×1e5")
    assert axis_labels([999.0, -12.5]) == (["999", "-12"], "")  # 0 decimals at 100..999
    assert axis_labels([0.884, -0.5]) == (["0.884", "-0.500"], "")  # 0.1..1: as they are, 3 decimals
    assert axis_labels([0.0, 0.0]) == (["0", "0"], "")
