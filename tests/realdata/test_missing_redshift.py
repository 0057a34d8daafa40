"""Objects imported without a redshift (most real rows: DESI extracts without a redrock table, archival spectra)."""

import warnings
from types import SimpleNamespace

import numpy as np

from fmb_engine.cli.data import _redshift_range
from fmb_engine.figures.panels import redshift_text
from fmb_engine.survey.store import _finite_range


def test_summary_range_of_no_redshift_is_nan_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "All-NaN slice" RuntimeWarning reached the user's terminal
        span = _finite_range(np.array([np.nan, np.nan]))
    assert np.isnan(span["min"]) and np.isnan(span["max"])
    assert _finite_range(np.array([np.nan, 0.5, 0.1])) == {"min": 0.1, "max": 0.5}
    assert _redshift_range(span) == "none known"
    assert _redshift_range({"min": 0.007, "max": 0.369}) == "0.007 - 0.369"


def test_figure_captions_say_unknown_instead_of_nan():
    assert redshift_text(SimpleNamespace(meta={"redshift": float("nan")})) == "z unknown"
    assert redshift_text(SimpleNamespace(meta={})) == "z unknown"
    assert redshift_text(SimpleNamespace(meta={"redshift": 0.36874})) == "z = 0.369"
