"""`fmb-engine data import` on files written by the real Hugging Face `datasets` library.

Every layout a user may hold (see :mod:`.hf_datasets_builder`) goes through the command line;
the store must hold exactly the source's objects: ids as strings (negative ones kept),
pixels, RGB, spectra and ivar, and every bad row under its reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("datasets", reason="the importer's format tests need the `datasets` library (pip install -e .[dev])")
from typer.testing import CliRunner  # noqa: E402

from fmb_engine.cli.main import app  # noqa: E402
from fmb_engine.survey.composite import asinh_rgb  # noqa: E402
from fmb_engine.survey.store import SurveyReader  # noqa: E402

from .hf_datasets_builder import (  # noqa: E402
    BAND_COLUMNS, LAYOUTS, N_ROWS, STAMP, make_dataset_dict, write_layout, write_parquet_with_image_paths)

#: Which splits each layout yields (save_to_disk-Dataset holds the test split only).
SPLITS = {layout: ("train", "test") for layout in LAYOUTS} | {"save_to_disk-Dataset": ("test",)}
#: Every layout with nested-list bands; Array2D bands in one Arrow and one parquet layout (the
#: encoding is a matter of the file kind, the layout a matter of the folders).
CASES = [(layout, "sequence") for layout in LAYOUTS] + [("save_to_disk-DatasetDict", "array2d"), ("to_parquet-hub-names", "array2d")]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Every case written once for the module: {(bands, layout): SOURCE}."""
    out = {}
    for bands in ("sequence", "array2d"):
        dd, sources = make_dataset_dict(bands)
        for layout in (layout for layout, b in CASES if b == bands):
            out[bands, layout] = write_layout(layout, tmp_path_factory.mktemp(f"{bands}-{layout}"), dd)
    return out, sources  # the sources are the same for both encodings (same seeds)


def _import(ws, source):
    result = CliRunner().invoke(app, ["data", "import", str(source), "--workspace", str(ws.root), "--image-size", str(STAMP),
                                      "--name", "hf"])
    assert result.exit_code == 0, result.output
    manifest = max(ws.folder("runs").glob("*data.import*.json"), key=lambda p: p.stat().st_mtime_ns)  # this run's
    return json.loads(manifest.read_text()), result.output


def _expected_id(src, i):
    oid = src.object_id[i] if src.object_id[i] is not None else src.targetid[i]
    return str(oid)


def _reasons(entries):
    return {reason: sorted(e["examples"]) for reason, e in entries.items()}


@pytest.mark.parametrize("layout, bands", CASES)
def test_every_layout_imports_the_objects_pixels_and_spectra_of_the_source(workspace, written, layout, bands):
    sources_by_layout, sources = written
    manifest, output = _import(workspace, sources_by_layout[bands, layout])
    splits = SPLITS[layout]
    kept_rows = [i for i in range(N_ROWS) if i not in (6, 8)]  # 6: no id at all, 8: duplicate of row 0
    assert manifest["counts"]["rows_read"] == N_ROWS * len(splits)
    inputs = [entry for key, entry in manifest["inputs"].items() if key.startswith("source:")]
    files = {"save_to_disk-DatasetDict": 3, "save_to_disk-Dataset": 1}.get(layout, len(splits))  # train in 2 shards
    assert len(inputs) == len({e["path"] for e in inputs}) == files  # every file read is recorded, none hides another

    def ids(rows):
        return sorted(_expected_id(sources[s], i) for s in splits for i in rows)

    dropped = _reasons(manifest["rows"]["dropped"])
    no_id = dropped.pop("object_id: missing (and no targetid)")  # example: "row <r> of <folder>/<file>" (no id to show)
    assert dropped == {"object_id: duplicate of an earlier row": ids([8])}
    assert len(no_id) == len(splits) and all(re.fullmatch(r"row \d+ of [^/]+/[^/]+\.(arrow|parquet)", e) for e in no_id)
    assert _reasons(manifest["rows"]["kept"]) == {
        "NISP_J_image: missing": ids([1]), "spectrum: missing": ids([3]),
        "spectrum.wavelength: missing or empty": ids([4]), "spectrum.flux: missing or empty": ids([9])}
    assert _reasons(manifest["rows"]["repaired"]) == {
        "object_id: missing, taken from targetid": ids([5]),
        "spectrum.error: zero, negative or non-finite values, masked": ids([7])}
    assert manifest["counts"]["masked_input_pixels"] == 10 * len(splits)
    with SurveyReader(workspace.survey_path("hf")) as r:
        assert r.splits() == {s: len(kept_rows) for s in splits}
        assert sorted(r.object_ids) == ids(kept_rows)
        negative = {_expected_id(sources[s], 2) for s in splits}
        assert negative <= set(r.object_ids) and all(oid.startswith("-27") for oid in negative)
        for split in splits:
            src = sources[split]
            for i in kept_rows:
                obj = r.get(_expected_id(src, i))
                assert obj.meta["split"] == split and obj.meta["targetid"] == src.targetid[i]
                assert obj.meta["redshift"] == pytest.approx(src.redshift[i], rel=1e-6)
                for k, column in enumerate(BAND_COLUMNS):
                    if src.bands[column][i] is None:
                        assert not obj.has_bands[k] and np.isnan(obj.images[k]).all()
                    else:
                        assert obj.has_bands[k] and np.array_equal(obj.images[k], src.bands[column][i])
                expected_rgb = src.rgb[i] if src.rgb[i] is not None else asinh_rgb(obj.images)
                assert np.array_equal(obj.rgb, expected_rgb)
                spec = src.spectrum[i]
                if spec is None or any(spec[k] is None for k in ("flux", "wavelength", "error")):
                    assert not obj.meta["has_spectrum"] and obj.mask.all() and (obj.ivar == 0).all()
                    continue
                assert obj.meta["has_spectrum"]
                pixels = [0, 99, 100, 109, 110, 3890, 7780]  # the store's grid is the dataset's: no resampling
                bad = spec["error"][pixels] == 0
                assert np.array_equal(obj.mask[pixels], bad)
                assert np.array_equal(obj.flux[pixels], np.where(bad, 0, spec["flux"][pixels]))
                ivar = np.where(bad, 0, 1 / np.where(bad, 1, spec["error"][pixels].astype(np.float64)) ** 2)
                assert np.allclose(obj.ivar[pixels], ivar, rtol=1e-6)


def test_the_cli_reads_array2d_columns_without_importing_datasets(written, workspace):
    """The real command in a fresh process (no `datasets` there to register its Arrow extension
    types): Array2D columns are read as their storage, and the importer never imports `datasets`."""
    sources_by_layout, _ = written
    source = sources_by_layout["array2d", "save_to_disk-DatasetDict"]
    with pa.memory_map(str(source / "test" / "data-00000-of-00001.arrow")) as f:
        assert isinstance(pa.ipc.open_stream(f).schema.field("VIS_image").type, pa.ExtensionType)  # what is tested here
    env = {k: v for k, v in os.environ.items() if k != "FMB_WORKSPACE"} | {"COLUMNS": "200"}
    cli = ("import runpy, sys\ntry:\n    runpy.run_module('fmb_engine.cli.main', run_name='__main__')\nfinally:\n"
           "    print('modules:', 'pyarrow' in sys.modules, any(m.split('.')[0] == 'datasets' for m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", cli, "data", "import", str(source), "--workspace", str(workspace.root),
                           "--image-size", str(STAMP), "--name", "hf"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "modules: True False" in proc.stdout  # pyarrow read the files; datasets was never imported
    with SurveyReader(workspace.survey_path("hf")) as r:
        assert r.splits() == {"train": N_ROWS - 2, "test": N_ROWS - 2}


def test_a_file_of_the_hub_cache_is_read_through_its_link(written, workspace):
    """In the hub cache a data file is a link to ``blobs/<hash>``: the link's name gives the file type and split."""
    sources_by_layout, _ = written
    link = sources_by_layout["sequence", "hub-cache"] / "snapshots" / "c0ffee" / "data" / "test-00000-of-00001.parquet"
    manifest, output = _import(workspace, link)
    assert "'test', from the file names" in output
    with SurveyReader(workspace.survey_path("hf")) as r:
        assert r.splits() == {"test": N_ROWS - 2}
    assert [k for k in manifest["inputs"] if k.startswith("source:")] == [f"source:{link}"]


def test_rgb_images_kept_as_file_paths_are_read_and_a_lost_file_costs_only_the_thumbnail(workspace, tmp_path):
    parquet, src, pngs = write_parquet_with_image_paths(tmp_path)
    assert pq.read_table(parquet).column("RGB_image")[0]["bytes"].as_py() is None  # only the path was written
    _import(workspace, parquet)
    with SurveyReader(workspace.survey_path("hf")) as r:
        assert np.array_equal(r.get(_expected_id(src, 0)).rgb, src.rgb[0])
    pngs[0].unlink()
    manifest, _ = _import(workspace, parquet)
    assert manifest["rows"]["repaired"]["RGB_image: unreadable (FileNotFoundError), composite made from the bands"] == {
        "count": 1, "examples": [_expected_id(src, 0)]}
    with SurveyReader(workspace.survey_path("hf")) as r:
        assert r.splits() == {"train": N_ROWS - 2}
        obj = r.get(_expected_id(src, 0))
        assert np.array_equal(obj.rgb, asinh_rgb(obj.images))
