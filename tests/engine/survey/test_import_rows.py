"""Row-level problems keep their detail: reason = column + cause, a count and example ids."""

import json

import numpy as np
import pyarrow as pa

from fmb_engine.config import load
from fmb_engine.survey.importers.euclid_desi import import_dataset
from fmb_engine.survey.importers.rows import EXAMPLES
from fmb_engine.survey.store import SurveyReader

from .hf_fixture import SCHEMA, make_rows, write_table

CFG = {"image_size": 16, "batch_size": 3}
#: NISP_H stored with a channel axis, (1, H, W), as an Array3D column would hold it.
CUBE_SCHEMA = SCHEMA.set(SCHEMA.get_field_index("NISP_H_image"), pa.field("NISP_H_image", pa.list_(SCHEMA.field("NISP_H_image").type)))


def hostile_rows() -> tuple[list[dict], list[str]]:
    rows = make_rows(8, "train", bad=False, size=16)
    rows[1]["VIS_image"] = np.ones((10, 14), np.float32).tolist()  # not square
    for i in (2, 3):  # a NaN stretch in the flux
        flux = np.asarray(rows[i]["spectrum"]["flux"])
        flux[200:260] = np.nan
        rows[i]["spectrum"]["flux"] = flux.tolist()
    rows[4]["NISP_Y_image"] = [[1.0] * 16, [1.0] * 15] + [[1.0] * 16] * 14  # ragged
    for row in rows:
        row["NISP_H_image"] = [row["NISP_H_image"]]
    rows[5]["NISP_H_image"] = np.ones((3, 16, 16), np.float32).tolist()  # a cube, not a stamp
    rows[6]["spectrum"]["flux"] = []
    ids = [str(r["object_id"]) for r in rows]
    return rows, ids


def run(ws, src, **kw):
    result = import_dataset(ws, src, load("import", cli=CFG | kw))
    return result, json.loads(result.manifest.read_text())


def test_row_reasons_name_the_column_and_cause_with_examples(workspace, tmp_path):
    rows, ids = hostile_rows()
    src = write_table(tmp_path / "rows.parquet", table=pa.Table.from_pylist(rows, schema=CUBE_SCHEMA))
    result, manifest = run(workspace, src)
    dropped = manifest["rows"]["dropped"]
    assert dropped == {
        "VIS_image: shape (10, 14), expected square": {"count": 1, "examples": [ids[1]]},
        "NISP_Y_image: ragged or non-numeric rows": {"count": 1, "examples": [ids[4]]},
        "NISP_H_image: shape (3, 16, 16), expected a 2-D stamp": {"count": 1, "examples": [ids[5]]},
    }
    assert manifest["dropped"] == {reason: 1 for reason in dropped}
    assert manifest["rows"]["kept"] == {"spectrum.flux: missing or empty": {"count": 1, "examples": [ids[6]]}}
    nan = manifest["rows"]["repaired"]["spectrum.flux: non-finite values, masked"]
    assert nan == {"count": 2, "examples": [ids[2], ids[3]]}
    counts = manifest["counts"]
    assert counts["objects_with_nonfinite_flux"] == 2 and counts["masked_input_pixels"] == 2 * 60
    assert counts["resampled_images"] == 0 and counts["objects"] == 5
    assert result.summary["dropped"]["VIS_image: shape (10, 14), expected square"] == 1
    with SurveyReader(result.outputs["survey"]) as r:
        obj = r.get(ids[2])
        assert obj.mask[200:260].all() and (obj.ivar[200:260] == 0).all() and obj.meta["has_spectrum"]


def test_resample_keeps_non_square_stamps_and_counts_them(workspace, tmp_path):
    rows, ids = hostile_rows()
    src = write_table(tmp_path / "rows.parquet", table=pa.Table.from_pylist(rows, schema=CUBE_SCHEMA))
    result, manifest = run(workspace, src, resample=True)
    assert "VIS_image: shape (10, 14), expected square" not in manifest["dropped"]
    assert manifest["rows"]["repaired"]["VIS_image: shape (10, 14) resampled to 16x16"] == {"count": 1, "examples": [ids[1]]}
    assert manifest["counts"]["resampled_images"] == 1 and manifest["counts"]["objects"] == 6
    with SurveyReader(result.outputs["survey"]) as r:
        stamp = r.get(ids[1]).images[0]
    assert stamp.shape == (16, 16) and np.allclose(stamp, 1.0)


def test_examples_are_the_first_twenty_and_the_count_is_complete(workspace, tmp_path):
    rows = make_rows(EXAMPLES + 5, "train", bad=False, size=16)
    for row in rows:
        row["spectrum"] = None
    src = write_table(tmp_path / "nospec.arrow", table=pa.Table.from_pylist(rows, schema=SCHEMA))
    _, manifest = run(workspace, src)
    entry = manifest["rows"]["kept"]["spectrum: missing"]
    assert entry["count"] == EXAMPLES + 5 and entry["examples"] == [str(r["object_id"]) for r in rows[:EXAMPLES]]
    assert manifest["counts"]["kept_with:spectrum: missing"] == EXAMPLES + 5
