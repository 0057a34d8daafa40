"""Writes a small copy of the published Euclid x DESI dataset in its exact schema.

Used by importer tests: a ``save_to_disk``-style folder (Arrow IPC stream +
state.json + dataset_info.json) per split, or parquet files, with chosen bad rows.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from fmb_engine.survey.bands import wavelength_grid

SPECTRUM = pa.struct([("flux", pa.list_(pa.float32())), ("wavelength", pa.list_(pa.float32())), ("error", pa.list_(pa.float32()))])
SCHEMA = pa.schema(
    [
        ("object_id", pa.int64()),
        ("targetid", pa.int64()),
        ("redshift", pa.float32()),
        ("RGB_image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("VIS_image", pa.list_(pa.list_(pa.float32()))),
        ("NISP_Y_image", pa.list_(pa.list_(pa.float32()))),
        ("NISP_J_image", pa.list_(pa.list_(pa.float32()))),
        ("NISP_H_image", pa.list_(pa.list_(pa.float32()))),
        ("spectrum", SPECTRUM),
        ("sed_data", pa.struct([("flux_g", pa.float32()), ("flux_r", pa.float32())])),
    ]
)

#: Row index -> what is wrong with it (applied in every split).
BAD_ROWS = {
    1: "missing_band:NISP_J",
    2: "missing_spectrum",
    3: "zero_errors",  # some error pixels are 0 -> masked, not inf
    4: "missing_object_id",
    5: "duplicate_object_id",
    6: "bad_spectrum_shape",
}


def _png(rng: np.random.Generator, size: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_rows(n: int, split: str, seed: int = 0, size: int = 40, bad: bool = True) -> list[dict]:
    rng = np.random.default_rng(seed)
    wave = wavelength_grid().astype(np.float32)
    rows = []
    for i in range(n):
        oid = 2_700_000_000_000_000_000 + (0 if split == "train" else 10_000) + i
        flux = (1.0 + 0.1 * rng.standard_normal(wave.size)).astype(np.float32)
        error = np.full(wave.size, 0.1, dtype=np.float32)
        row = {
            "object_id": oid,
            "targetid": 39_627_000_000_000_000 + (0 if split == "train" else 10_000) + i,
            "redshift": float(rng.uniform(0.1, 1.0)),
            "RGB_image": {"bytes": _png(rng, size), "path": None},
            "spectrum": {"flux": flux.tolist(), "wavelength": wave.tolist(), "error": error.tolist()},
            "sed_data": {"flux_g": 1.0, "flux_r": 2.0},
        }
        for band in ("VIS_image", "NISP_Y_image", "NISP_J_image", "NISP_H_image"):
            row[band] = rng.standard_normal((size, size)).astype(np.float32).tolist()
        problem = BAD_ROWS.get(i) if bad else None
        if problem == "missing_band:NISP_J":
            row["NISP_J_image"] = None
        elif problem == "missing_spectrum":
            row["spectrum"] = None
        elif problem == "zero_errors":
            error[100:110] = 0.0
            row["spectrum"]["error"] = error.tolist()
        elif problem == "missing_object_id":
            row["object_id"] = None
            row["targetid"] = None
        elif problem == "duplicate_object_id":
            row["object_id"] = rows[0]["object_id"]
        elif problem == "bad_spectrum_shape":
            row["spectrum"]["error"] = error[:-5].tolist()
        rows.append(row)
    return rows


def write_save_to_disk(root: Path, n: int = 12, splits=("train", "test"), **kw) -> Path:
    """A DatasetDict saved with ``save_to_disk``: dataset_dict.json + one folder per split."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_dict.json").write_text(json.dumps({"splits": list(splits)}))
    for k, split in enumerate(splits):
        folder = root / split
        folder.mkdir()
        table = pa.Table.from_pylist(make_rows(n, split, seed=k, **kw), schema=SCHEMA)
        with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, SCHEMA) as writer:
            for batch in table.to_batches(max_chunksize=5):
                writer.write_batch(batch)
        (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_split": split}))
        (folder / "dataset_info.json").write_text(json.dumps({"splits": {split: {"name": split, "num_examples": n}}}))
    return root


def write_parquet(root: Path, n: int = 12, splits=("train", "test"), **kw) -> Path:
    """Hub-style parquet layout: data/<split>-00000-of-00001.parquet."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for k, split in enumerate(splits):
        table = pa.Table.from_pylist(make_rows(n, split, seed=k, **kw), schema=SCHEMA)
        pq.write_table(table, root / "data" / f"{split}-00000-of-00001.parquet", row_group_size=5)
    return root


def write_table(path: Path, n: int = 4, split: str = "train", seed: int = 0, table: pa.Table | None = None, **kw) -> Path:
    """One file in the dataset's columns: ``.parquet``, or ``.arrow`` (an IPC stream, as save_to_disk writes)."""
    table = table if table is not None else pa.Table.from_pylist(make_rows(n, split, seed=seed, bad=False, **kw), schema=SCHEMA)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(table, path, row_group_size=2)
    else:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=2):
                writer.write_batch(batch)
    return path


def good_table(n: int = 4, split: str = "train", seed: int = 0, **kw) -> pa.Table:
    return pa.Table.from_pylist(make_rows(n, split, seed=seed, bad=False, **kw), schema=SCHEMA)
