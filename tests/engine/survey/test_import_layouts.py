"""Which split every file of an import goes to: named layouts, unnamed files, --split."""

import json

import pytest

from fmb_engine.config import load
from fmb_engine.survey.importers.euclid_desi import import_dataset
from fmb_engine.survey.importers.layout import LayoutError, plan
from fmb_engine.survey.store import SurveyReader

from .hf_fixture import write_save_to_disk, write_table

CFG = {"image_size": 16, "batch_size": 3}


def run(ws, src, **kw):
    result = import_dataset(ws, src, load("import", cli=CFG | kw))
    with SurveyReader(result.outputs["survey"]) as r:
        splits = r.splits()
    return result, splits, json.loads(result.manifest.read_text())


def test_a_single_unnamed_file_imports_as_one_split_named_in_the_summary(workspace, tmp_path):
    src = write_table(tmp_path / "euclid_q1_desi.parquet", n=5)
    result, splits, manifest = run(workspace, src)
    assert splits == {"train": 5}
    assert "one unnamed split" in result.summary["split_naming"] and "--split NAME" in result.summary["split_naming"]
    assert manifest["split_naming"] == result.summary["split_naming"]
    _, splits, _ = run(workspace, src, splits=["dr1"], name="named")
    assert splits == {"dr1": 5}


def test_a_folder_of_unnamed_files_is_one_split(workspace, tmp_path):
    write_table(tmp_path / "cut" / "part_a.arrow", n=3, seed=1)
    write_table(tmp_path / "cut" / "part_b.arrow", n=4, seed=2, split="test")  # other ids
    _, splits, manifest = run(workspace, tmp_path / "cut")
    assert splits == {"train": 7} and manifest["counts"]["rows_read"] == 7


def test_a_named_single_file_keeps_its_split(workspace, tmp_path):
    src = write_table(tmp_path / "test-00000-of-00001.parquet", n=3)
    result, splits, _ = run(workspace, src)
    assert splits == {"test": 3} and "from the file names" in result.summary["split_naming"]


def test_split_name_equals_path_assigns_files_without_a_source(workspace, tmp_path):
    a = write_table(tmp_path / "a.parquet", n=3, split="train")
    b = write_table(tmp_path / "b.parquet", n=2, split="test")
    result, splits, _ = run(workspace, None, splits=[f"train={a}", f"test={b}"])
    assert splits == {"train": 3, "test": 2} and "NAME=PATH" in result.summary["split_naming"]
    # PATH may be relative to SOURCE
    _, splits, _ = run(workspace, tmp_path, splits=["validation=a.parquet"], name="rel")
    assert splits == {"validation": 3}


def test_several_splits_import_the_selected_ones_and_report_the_others(workspace, tmp_path):
    src = write_save_to_disk(tmp_path / "hf", n=4, splits=("train", "validation"), bad=False)
    result, splits, manifest = run(workspace, src)
    assert splits == {"train": 4} and result.summary["ignored_splits"] == {"validation": 1}
    assert manifest["ignored_splits"] == {"validation": 1}
    _, splits, _ = run(workspace, src, splits=["validation"], name="val")
    assert splits == {"validation": 4}


@pytest.mark.parametrize(
    "make, splits, expected",
    [
        # named and unnamed files together: which split are the unnamed ones?
        (lambda d: [write_table(d / "train-00000-of-00001.parquet"), write_table(d / "extra.parquet", split="test")],
         None, r"1 file\(s\) without a split name \(extra\.parquet\).*--split NAME=PATH"),
        # no data file at all: say what is there
        (lambda d: (d / "catalogue.csv").write_text("a,b\n"), None, r"no dataset found.*catalogue\.csv.*--split NAME=PATH"),
        # splits of the dataset, none of them selected
        (lambda d: write_save_to_disk(d, n=2, splits=("dev", "eval"), bad=False), None,
         r"none of the splits train, test found.*dev \(1 file\(s\)\), eval.*--split NAME"),
        # two names for one unnamed split
        (lambda d: write_table(d / "x.parquet"), ["a", "b"], r"one unnamed split; --split gives 2 names \(a, b\)"),
        (lambda d: write_table(d / "x.parquet"), ["train=x.parquet", "test"], r"either split names .* or NAME=PATH"),
        (lambda d: write_table(d / "x.parquet"), ["train="], r"expected NAME=PATH"),
    ],
)
def test_unrecognised_layouts_name_what_was_found_and_the_flag_that_fixes_it(tmp_path, make, splits, expected):
    folder = tmp_path / "src"
    folder.mkdir()
    make(folder)
    with pytest.raises(LayoutError, match=expected):
        plan(folder, splits or ["train", "test"], splits is not None)


def test_an_unsupported_file_type_is_named(tmp_path):
    (tmp_path / "data.h5").write_bytes(b"x")
    with pytest.raises(LayoutError, match=r"data\.h5: a \.h5 file; expected a \.parquet or \.arrow file"):
        plan(tmp_path / "data.h5", ["train", "test"], False)


def test_save_to_disk_folders_without_split_names_are_one_split(tmp_path):
    for name in ("part1", "part2"):
        write_table(tmp_path / "copy" / name / "data-00000-of-00001.arrow", n=2)
    layout = plan(tmp_path / "copy", ["train", "test"], False)
    assert {f.split for f in layout.files} == {"train"} and len(layout.files) == 2
    (tmp_path / "copy" / "part2" / "state.json").write_text(json.dumps({"_split": "test", "_data_files": []}))
    with pytest.raises(LayoutError, match=r"1 file\(s\) without a split name \(part1/data-00000-of-00001\.arrow\)"):
        plan(tmp_path / "copy", ["train", "test"], False)
    (tmp_path / "copy" / "part1" / "state.json").write_text(json.dumps({"_split": "train", "_data_files": []}))
    layout = plan(tmp_path / "copy", ["train", "test"], False)
    assert sorted(f.split for f in layout.files) == ["test", "train"]  # state.json names the splits


def test_an_arrow_ipc_file_imports_like_a_stream(workspace, tmp_path):
    import pyarrow as pa

    from .hf_fixture import good_table

    path = tmp_path / "table.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, good_table(3).schema) as writer:
        writer.write_table(good_table(3), max_chunksize=2)
    _, splits, manifest = run(workspace, path)
    assert splits == {"train": 3} and manifest["counts"]["rows_read"] == 3


def test_a_hub_cache_folder_reads_the_snapshot_of_refs_main_only(tmp_path):
    repo = tmp_path / "datasets--owner--name"
    for rev in ("aaa", "bbb"):
        write_table(repo / "snapshots" / rev / "data" / "train-00000-of-00001.parquet", n=2)
    with pytest.raises(LayoutError, match=r"hub cache folder with 2 snapshots \(aaa, bbb\).*snapshots/<revision>"):
        plan(repo, ["train", "test"], False)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("bbb\n")
    layout = plan(repo, ["train", "test"], False)
    assert [f.path.relative_to(repo).parts[:2] for f in layout.files] == [("snapshots", "bbb")]


def test_arrow_files_without_state_json_are_named_by_their_own_names(tmp_path):
    """The `datasets` cache of load_dataset: one folder, a file per split (and per shard)."""
    for name in ("parquet-train.arrow", "euclid-test-00000-of-00002.arrow", "euclid-test-00001-of-00002.arrow"):
        write_table(tmp_path / "0.0.0" / "abc" / name, n=2)
    layout = plan(tmp_path / "0.0.0" / "abc", ["train", "test"], False)
    assert sorted((f.path.name, f.split) for f in layout.files) == [
        ("euclid-test-00000-of-00002.arrow", "test"), ("euclid-test-00001-of-00002.arrow", "test"),
        ("parquet-train.arrow", "train")]
