"""Hostile files, fed to every reader of the stages: truncated, corrupt, renamed-column,
wrong-shape and wrong-dtype inputs must give an FMBError that names the file (and the
column), and must not damage what the workspace already holds.

Each case builds one bad input inside a workspace that already has a survey, an
embedding file, a ranking and a config; the test snapshots every file, runs the reader,
checks the error text, and checks that every pre-existing file is byte-identical and that
no ``.partial`` or temporary file is left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fmb_engine import rankings
from fmb_engine.config import load
from fmb_engine.config.loader import read_layer_file
from fmb_engine.embed.interop import import_reference_pt
from fmb_engine.embed.store import EmbeddingMeta, EmbeddingReader, write_embeddings
from fmb_engine.errors import ConfigError, DataError, FMBError
from fmb_engine.survey.importers.euclid_desi import import_dataset
from fmb_engine.survey.store import SurveyReader
from fmb_engine.workspace import Workspace

from .hf_fixture import SCHEMA, good_table, write_table

CFG = {"image_size": 16, "batch_size": 2}


@pytest.fixture(scope="module")
def good_survey(tmp_path_factory) -> bytes:
    """Bytes of a small imported survey, copied into every test's workspace."""
    ws = Workspace.init(tmp_path_factory.mktemp("good") / "ws")
    src = write_table(ws.root / "src" / "good.parquet", n=3)
    return import_dataset(ws, src, load("import", cli=CFG)).outputs["survey"].read_bytes()


@pytest.fixture
def ws(workspace: Workspace, good_survey: bytes) -> Workspace:
    """A workspace with outputs of every stage already there (what a bad input must not damage)."""
    workspace.survey_path("euclid_desi").write_bytes(good_survey)
    ids = ["a", "b", "c"]
    write_embeddings(workspace.folder("embeddings") / "astropt.h5", ids, {"image": np.ones((3, 4), np.float32)},
                     EmbeddingMeta("astropt", False, ("image",)))
    pq.write_table(pa.table({"object_id": ids, "rank:astropt/image/iforest": [1, 2, 3],
                             "score:astropt/image/iforest": [0.9, 0.5, 0.1]}), rankings.systems_path(workspace))
    return workspace


def snapshot(root: Path) -> dict[str, str]:
    """Every file's hash, except run manifests and the (empty, left in place) write-lock files."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.parent.name != "runs" and not (p.name.startswith(".") and p.name.endswith(".lock"))}


# ------------------------------------------------------------------------------ bad inputs
def _cut(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _table_without(column: str, replacement: pa.Array | None = None, name: str | None = None) -> pa.Table:
    table = good_table(3)
    i = table.schema.get_field_index(column)
    table = table.remove_column(i)
    if replacement is not None:
        table = table.add_column(i, name or column, replacement)
    return table


def _spectrum_without_error() -> pa.Array:
    spec = good_table(3).column("spectrum").combine_chunks()
    return pa.StructArray.from_arrays([spec.field("flux"), spec.field("wavelength")], names=["flux", "wavelength"])


def _corrupt_page(path: Path, column: str, row_group: int) -> Path:
    """Overwrite the header of one data page in the middle of a parquet file."""
    meta = pq.ParquetFile(path).metadata.row_group(row_group)
    chunk = next(meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema.startswith(column))
    data = bytearray(path.read_bytes())
    data[chunk.data_page_offset: chunk.data_page_offset + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    return path


def _import(src: Path | None, **cfg) -> Callable[[Workspace], object]:
    return lambda ws: import_dataset(ws, src, load("import", cli=CFG | cfg))


def _survey_copy(ws: Workspace, name: str, edit: Callable[[h5py.File], None]) -> Path:
    path = ws.folder("survey") / name
    shutil.copy(ws.survey_path("euclid_desi"), path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _embedding_copy(ws: Workspace, edit: Callable[[h5py.File], None]) -> Path:
    path = ws.folder("embeddings") / "damaged.h5"
    shutil.copy(ws.folder("embeddings") / "astropt.h5", path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _read_survey(path: Path) -> Callable[[Workspace], object]:
    def read(ws):
        with SurveyReader(path) as r:
            return r.read_rows([0, 1])
    return read


def _read_embeddings(path: Path) -> Callable[[Workspace], object]:
    def read(ws):
        with EmbeddingReader(path) as r:
            return r.load_all()
    return read


def _pt(tmp: Path, records) -> Path:
    import torch

    path = tmp / "reference.pt"
    torch.save(records, path)
    return path


def _systems(ws: Workspace, table: pa.Table | None = None, cut: float | None = None) -> Callable[[Workspace], object]:
    path = rankings.systems_path(ws)
    if table is not None:
        pq.write_table(table, path)
    if cut is not None:
        _cut(path, cut)
    return lambda ws: rankings.load_rankings(ws)


def _swap_object_id_for_ints(f: h5py.File) -> None:
    del f["objects/object_id"]
    f["objects"].create_dataset("object_id", data=np.arange(3))


def _vectors_as_text(f: h5py.File) -> None:
    del f["vectors/image"]
    f["vectors"].create_dataset("image", data=np.full((3, 4), b"x"))


@dataclass(frozen=True)
class Case:
    """``make(ws, tmp)`` writes the bad input and returns the call that reads it."""

    id: str
    make: Callable[[Workspace, Path], Callable[[Workspace], object]]
    error: type[FMBError]
    match: str  # regex on the message: the file, and the column / row where known


CASES = [
    # --- the importer: data files
    Case("parquet-truncated", lambda ws, t: _import(_cut(write_table(t / "part.parquet"), 0.6)),
         DataError, r"part\.parquet: not a readable parquet file .*truncated or corrupt"),
    Case("parquet-not-parquet", lambda ws, t: _import(_write(t / "part.parquet", b"PAR1 this is not parquet")),
         DataError, r"part\.parquet: not a readable parquet file"),
    Case("arrow-truncated", lambda ws, t: _import(_cut(write_table(t / "hf" / "data-00000-of-00001.arrow"), 0.7)),
         DataError, r"data-00000-of-00001\.arrow: not a readable arrow file"),
    Case("parquet-corrupt-page", lambda ws, t: _import(_corrupt_page(write_table(t / "part.parquet", n=6), "VIS_image", 0)),
         DataError, r"part\.parquet: unreadable after row 0 "),
    Case("column-renamed", lambda ws, t: _import(write_table(t / "x.parquet", table=_table_without(
        "spectrum", good_table(3).column("spectrum"), "spec"))),
         DataError, r"x\.parquet: missing required column\(s\) 'spectrum' \(a renamed 'spec'\?\); columns found: object_id, .*spec"),
    Case("band-columns-renamed", lambda ws, t: _import(write_table(t / "x.parquet", table=good_table(3).rename_columns(
        [c.lower() if c.endswith("_image") else c for c in SCHEMA.names]))),
         DataError, r"x\.parquet: missing required column\(s\) 'VIS_image' \(a renamed 'vis_image'\?\), 'NISP_Y_image'"),
    Case("spectrum-without-error", lambda ws, t: _import(write_table(t / "x.arrow", table=_table_without(
        "spectrum", _spectrum_without_error()))),
         DataError, r"x\.arrow: column 'spectrum' has no sub-field 'error' \(sub-fields found: flux, wavelength\)"),
    Case("band-wrong-dtype", lambda ws, t: _import(write_table(t / "x.parquet", table=_table_without(
        "VIS_image", pa.array(["img"] * 3)))),
         DataError, r"x\.parquet: column 'VIS_image' has type string, expected a 2-D image"),
    Case("object-id-wrong-dtype", lambda ws, t: _import(write_table(t / "x.parquet", table=_table_without(
        "object_id", pa.array([1.5, 2.5, 3.5])))),
         DataError, r"x\.parquet: column 'object_id' has type double, expected integers or strings"),
    Case("targetid-missing-with-catalog", lambda ws, t: _import(
        write_table(t / "x.parquet", table=_table_without("targetid")), catalog=str(_fits(t))),
         DataError, r"x\.parquet: missing required column\(s\) 'targetid' \(needed to join --catalog\)"),
    Case("catalogue-not-fits", lambda ws, t: _import(write_table(t / "x.parquet"), catalog=str(_write(t / "cat.fits", b"x" * 100))),
         DataError, r"cat\.fits: cannot read FITS catalogue"),
    Case("every-stamp-not-square", lambda ws, t: _import(write_table(t / "x.parquet", table=_non_square(3))),
         DataError, r"no row could be imported .*VIS_image: shape \(10, 14\), expected square"),
    Case("two-files-one-bad", lambda ws, t: _import(_two_files(t)),
         DataError, r"1 of 2 input files cannot be imported; fix or remove them, or pass --skip-bad-files.*\n  .*b\.parquet: not a readable"),
    # --- the other readers of the stages
    Case("survey-not-hdf5", lambda ws, t: _read_survey(_write(ws.folder("survey") / "text.h5", b"not hdf5")),
         DataError, r"text\.h5: not a readable HDF5 file"),
    Case("survey-truncated", lambda ws, t: _read_survey(_cut(_copy(ws.survey_path("euclid_desi"), ws.folder("survey") / "cut.h5"), 0.5)),
         DataError, r"cut\.h5: not a readable HDF5 file \(.*truncated"),
    Case("survey-wrong-dtype", lambda ws, t: _read_survey(_survey_copy(ws, "ints.h5", _swap_object_id_for_ints)),
         DataError, r"ints\.h5: damaged survey file \(/objects/object_id is \(3,\) int64"),
    Case("embeddings-truncated", lambda ws, t: _read_embeddings(_cut(_copy(ws.folder("embeddings") / "astropt.h5", t / "e.h5"), 0.5)),
         DataError, r"e\.h5: not a readable HDF5 file"),
    Case("embeddings-wrong-dtype", lambda ws, t: _read_embeddings(_embedding_copy(ws, _vectors_as_text)),
         DataError, r"damaged\.h5: damaged embedding file \(/vectors/image is \(3, 4\) \|S1"),
    Case("reference-pt-truncated", lambda ws, t: _pt_import(_cut(_pt(t, [{"object_id": 1, "embedding_images": [1.0, 2.0]}]), 0.5), ws),
         DataError, r"reference\.pt: not a readable torch file"),
    Case("reference-pt-wrong-dtype", lambda ws, t: _pt_import(_pt(t, [{"object_id": 1, "embedding_images": "1,2"}]), ws),
         DataError, r"reference\.pt: record 0: embedding_images is a str, expected a tensor"),
    Case("reference-pt-renamed-keys", lambda ws, t: _pt_import(_pt(t, [{"object_id": 1, "images": [1.0, 2.0]}]), ws),
         DataError, r"reference\.pt: .*record keys found: images, object_id"),
    Case("systems-truncated", lambda ws, t: _systems(ws, cut=0.5),
         rankings.RankingsError, r"systems\.parquet: not a readable parquet file"),
    Case("systems-column-renamed", lambda ws, t: _systems(ws, pa.table({"objid": ["a"], "rank:m/image/iforest": [1],
                                                                          "score:m/image/iforest": [0.5]})),
         rankings.RankingsError, r"systems\.parquet: no object_id column \(columns: objid"),
    Case("systems-wrong-dtype", lambda ws, t: _systems(ws, pa.table({"object_id": ["a"], "rank:m/image/iforest": ["1"],
                                                                       "score:m/image/iforest": [0.5]})),
         rankings.RankingsError, r"systems\.parquet: column 'rank:m/image/iforest' has type string, expected integers"),
    Case("config-not-a-mapping", lambda ws, t: (lambda w: read_layer_file(_write(t / "task.yaml", b"- import\n- mock\n"))),
         ConfigError, r"task\.yaml: expected a mapping of sections"),
    Case("config-section-not-a-mapping", lambda ws, t: (lambda w: load("import", w, _write(t / "task.yaml", b"import: [a, b]\n"))),
         ConfigError, r"task\.yaml: section 'import' must be a mapping"),
    Case("config-binary", lambda ws, t: (lambda w: read_layer_file(_write(t / "task.yaml", b"\xff\xfe\x00\x01"))),
         ConfigError, r"task\.yaml: not a UTF-8 text file"),
]


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _copy(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    return dst


def _fits(tmp: Path) -> Path:
    from astropy.table import Table

    path = tmp / "cat.fits"
    Table({"TARGETID": np.arange(3), "Z": np.full(3, 0.5)}).write(path)
    return path


def _non_square(n: int) -> pa.Table:
    table = good_table(n)
    for band in ("VIS_image", "NISP_Y_image", "NISP_J_image", "NISP_H_image"):
        stamps = pa.array([np.ones((10, 14), np.float32).tolist()] * n, type=SCHEMA.field(band).type)
        table = table.set_column(table.schema.get_field_index(band), band, stamps)
    return table


def _two_files(tmp: Path) -> Path:
    write_table(tmp / "src" / "a.parquet", n=3)
    _cut(write_table(tmp / "src" / "b.parquet", n=3, seed=5, split="test"), 0.5)
    return tmp / "src"


def _pt_import(path: Path, ws: Workspace) -> Callable[[Workspace], object]:
    return lambda w: import_reference_pt(path, w.folder("embeddings") / "astropt.h5.new", model="astropt")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_file_gives_a_clear_error_and_loses_nothing(ws, tmp_path, case):
    (tmp_path / "in").mkdir()
    call = case.make(ws, tmp_path / "in")
    before = snapshot(ws.root)
    with pytest.raises(case.error, match=case.match) as info:
        call(ws)
    assert "Traceback" not in str(info.value)
    after = snapshot(ws.root)
    assert after == before, f"files changed or appeared: {sorted(set(after.items()) ^ set(before.items()))}"
    with SurveyReader(ws.survey_path("euclid_desi")) as r:  # the existing survey still reads
        assert r.n_objects == 3


def test_skip_bad_files_imports_the_good_ones_and_records_the_bad(ws, tmp_path):
    src = _two_files(tmp_path)
    _corrupt_page(write_table(src / "c.parquet", n=6, seed=7, split="validation"), "VIS_image", 1)
    result = import_dataset(ws, src, load("import", cli=CFG | {"skip_bad_files": True, "name": "partly"}))
    manifest = json.loads(result.manifest.read_text())
    bad = {Path(b["path"]).name: b for b in manifest["bad_files"]}
    assert set(bad) == {"b.parquet", "c.parquet"} and manifest["counts"]["bad_files"] == 2
    assert "not a readable parquet file" in bad["b.parquet"]["reason"] and bad["b.parquet"]["rows_imported"] == 0
    assert bad["c.parquet"]["reason"].startswith("unreadable after row 2") and bad["c.parquet"]["rows_imported"] == 2
    assert result.summary["bad_files"] == manifest["bad_files"]
    with SurveyReader(result.outputs["survey"]) as r:
        assert r.n_objects == 3 + 2  # all of a.parquet, the rows of c.parquet before its corrupt page


def test_a_failed_import_leaves_no_partial_and_a_fixed_file_resumes(ws, tmp_path):
    """A file corrupt after some rows: the rows already written stay in the .partial (a re-downloaded
    file resumes there); a failure before any row is written leaves no .partial at all."""
    src = tmp_path / "one.parquet"
    write_table(src, n=6)
    good = src.read_bytes()
    _corrupt_page(src, "VIS_image", 1)
    partial = ws.folder("survey") / "resumed.h5.partial"
    with pytest.raises(DataError, match=r"one\.parquet: unreadable after row 2"):
        import_dataset(ws, src, load("import", cli=CFG | {"name": "resumed"}))
    assert partial.is_file()
    failed = [json.loads(p.read_text()) for p in ws.folder("runs").glob("*-data.import-*.json")]
    assert [(m["status"], m["bad_files"][0]["rows_imported"]) for m in failed] == [("failed", 2)]
    src.write_bytes(good)
    result = import_dataset(ws, src, load("import", cli=CFG | {"name": "resumed"}))
    assert not partial.exists()
    with SurveyReader(result.outputs["survey"]) as r:
        assert r.n_objects == 6 and len(set(r.object_ids)) == 6
    _corrupt_page(src, "VIS_image", 0)
    with pytest.raises(DataError, match=r"one\.parquet: unreadable after row 0"):
        import_dataset(ws, src, load("import", cli=CFG | {"name": "never"}))
    assert not list(ws.folder("survey").glob("never*"))


def fmb(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FMB_WORKSPACE"} | {"COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "fmb_engine.cli.main", *args], cwd=cwd, capture_output=True, text=True, env=env)


@pytest.mark.parametrize("make, args, expected", [
    (lambda t: _cut(write_table(t / "part.parquet"), 0.6), [], "part.parquet: not a readable parquet file"),
    (lambda t: write_table(t / "x.parquet", table=_table_without("spectrum")), [], "missing required column(s) 'spectrum'"),
    (lambda t: _two_files(t), [], "pass --skip-bad-files"),
    (lambda t: write_table(t / "x.parquet"), ["--config", "task.yaml"], "task.yaml: expected a mapping of sections"),
])
def test_the_cli_reports_bad_files_without_traceback(ws, tmp_path, make, args, expected):
    source = make(tmp_path)
    (ws.root / "task.yaml").write_text("- not\n- a mapping\n")
    before = snapshot(ws.root)
    proc = fmb("data", "import", str(source), *args, cwd=ws.root)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in output
    assert expected in " ".join(output.split()), output
    assert snapshot(ws.root) == before
