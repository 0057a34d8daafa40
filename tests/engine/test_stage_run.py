"""Every stage writes its manifest's end state the same way (fmb_engine/stage_run.py, docs/formats.md).

One case per stage: the stage run as it is (``completed``), with a real user error (``failed``,
the error's type and message), and with Ctrl-C landing in one of its inner functions
(``interrupted``). Each run leaves exactly one new manifest, with the same fields.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fmb_engine.config import load
from fmb_engine.errors import BusyError, DataError, EnvironmentFault, FMBError
from fmb_engine.manifest import COMMON_FIELDS, RunManifest, read_manifests
from fmb_engine.stage_run import stage_run
from fmb_engine.workspace import Workspace

ENGINE = Path(__file__).resolve().parents[2] / "fmb_engine"
TINY_MOCK = {"objects": 40, "image_size": 24, "batch_size": 20, "workers": -1}


def _mock(ws: Workspace, tmp: Path, **cfg: Any) -> Any:
    from fmb_engine.survey.stages import make_mock

    return make_mock(ws, load("mock", cli=TINY_MOCK | cfg))


def _import(ws: Workspace, tmp: Path, source: Path | None = None) -> Any:
    from fmb_engine.survey.importers.euclid_desi import import_dataset

    from .survey.hf_fixture import write_parquet

    src = source or write_parquet(tmp / "hf", n=6)
    return import_dataset(ws, src, load("import", cli={"image_size": 24, "batch_size": 4}))


def _synthetic(ws: Workspace, tmp: Path, objects: int = 300) -> Any:
    from fmb_engine.embed.synthetic import SyntheticSpec
    from fmb_engine.embed.synthetic_file import write_synthetic

    return write_synthetic(ws, SyntheticSpec(objects, {"image": 4, "joint": 6}))


def _embed(ws: Workspace, tmp: Path, survey: Path | None = None) -> Any:
    from fmb_engine.embed.run import embed_survey

    return embed_survey(ws, survey or ws.survey_path("mock"), "pca", load("embed.pca", ws))


def _retrain(ws: Workspace, tmp: Path, **cfg: Any) -> Any:
    from fmb_engine.retrain.config import TrainConfig
    from fmb_engine.retrain.loop import train

    from .retrain.test_loop import ProbeTask

    config = TrainConfig(**({"steps": 3, "batch_size": 16, "eval_every": 3, "eval_batches": 1, "device": "cpu"} | cfg))
    return train(ProbeTask(config), ws, ws.survey_path("mock"), ws.folder("checkpoints") / "probe",
                 config_record={"values": config.model_dump(mode="json"), "sources": {}})


def _detect(ws: Workspace, tmp: Path, **cfg: Any) -> Any:
    from fmb_engine.detect.run import detect

    return detect(ws, load("detect", ws, cli=cfg), parts=("fuse",))


def _evaluate(ws: Workspace, tmp: Path) -> Any:
    from fmb_engine.detect.evaluation import evaluate_workspace

    return evaluate_workspace(ws, ws.survey_path("mock"))


def _rankings(ws: Workspace, tmp: Path, **cfg: Any) -> Any:
    from fmb_engine.analyze.run import analyze_rankings

    return analyze_rankings(ws, load("analyze", ws, cli=cfg))


def _heatmaps(ws: Workspace, tmp: Path) -> Any:
    from fmb_engine.figures.run import heatmap_figures

    return heatmap_figures(ws)


def _no_systems_table(ws: Workspace, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    (ws.folder("scores") / "systems.parquet").unlink()
    return _evaluate(ws, tmp)


def _mock_fails(ws: Workspace, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Once its config has validated, the mock reads nothing a user could get wrong: a DataError
    from inside it stands for one."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise DataError("the population cannot be drawn")

    monkeypatch.setattr("fmb_engine.survey.mock.draw_population", refuse)
    return _mock(ws, tmp)


@dataclass
class Case:
    stage: str  # the manifest's stage
    workspace: str  # "empty", "survey" (the small mock) or "analysed" (embedded and scored)
    run: Callable[[Workspace, Path], Any]
    bad: Callable[[Workspace, Path, pytest.MonkeyPatch], Any]  # the same stage with a user error
    inner: str  # "module:attribute" the run calls, replaced by one that raises KeyboardInterrupt
    prepare: Callable[[Workspace, Path], Any] | None = None
    error: type[FMBError] = DataError


CASES = [
    Case("data.mock", "empty", _mock, _mock_fails, "fmb_engine.survey.mock:catalogue_columns"),
    Case("data.import", "empty", _import, lambda ws, tmp, mp: _import(ws, tmp, tmp / "no such folder"),
         "fmb_engine.survey.importers.euclid_desi:convert_batch"),
    Case("embed.pca", "survey", _embed, lambda ws, tmp, mp: _embed(ws, tmp, tmp / "missing.h5"),
         "fmb_engine.embed.baselines:PCAEmbedder.embed"),
    Case("embed.synthetic", "empty", _synthetic, lambda ws, tmp, mp: _synthetic(ws, tmp, objects=10**13),  # no disk
         "fmb_engine.embed.synthetic:SyntheticModel.rows", error=EnvironmentFault),
    Case("retrain-probe", "survey", _retrain, lambda ws, tmp, mp: _retrain(ws, tmp, train_split="nosuch"),
         "fmb_engine.retrain.loop:_Run.run_step"),
    Case("detect.fuse", "analysed", _detect, lambda ws, tmp, mp: _detect(ws, tmp, models=["nosuch"]),
         "fmb_engine.detect.run:fuse_run"),
    Case("evaluate", "analysed", _evaluate, _no_systems_table, "fmb_engine.detect.evaluation:evaluate_scores"),
    Case("analyze.rankings", "analysed", _rankings,
         lambda ws, tmp, mp: _rankings(ws, tmp, systems=["no/such/system"]), "fmb_engine.analyze.rankings:compare"),
    Case("figures.heatmaps", "analysed", _heatmaps, lambda ws, tmp, mp: _heatmaps(ws, tmp),
         "fmb_engine.figures.heatmaps:spearman_heatmap", prepare=_rankings),
]


def _raise_interrupt(*args: Any, **kwargs: Any) -> Any:
    raise KeyboardInterrupt


def _patch(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    import importlib

    module, _, attr = target.partition(":")
    owner: Any = importlib.import_module(module)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    monkeypatch.setattr(owner, name, _raise_interrupt)


@pytest.fixture
def make_workspace(tmp_path: Path, small_survey: Path, request: pytest.FixtureRequest) -> Callable[[str], Workspace]:
    def make(kind: str) -> Workspace:
        if kind == "analysed":
            src, _ = request.getfixturevalue("analysed")
            # without analysis/: other tests add analyses to the shared workspace, and a case must
            # see the same inputs whatever ran before it (the heatmaps' user error is "no rankings")
            shutil.copytree(src.root, tmp_path / "ws", ignore=shutil.ignore_patterns("runs", "jobs", "analysis"))
            ws = Workspace(tmp_path / "ws")
            ws.folder("runs")
            return ws
        ws = Workspace.init(tmp_path / "ws")
        if kind == "survey":
            shutil.copy(small_survey, ws.survey_path("mock"))
        return ws

    return make


@pytest.mark.parametrize("outcome", ["completed", "failed", "interrupted"])
@pytest.mark.parametrize("case", CASES, ids=[c.stage for c in CASES])
def test_every_stage_writes_its_end_state_the_same_way(case, outcome, make_workspace, tmp_path, monkeypatch):
    monkeypatch.delenv("FMB_WORKSPACE", raising=False)
    ws = make_workspace(case.workspace)
    if case.prepare is not None and outcome != "failed":  # the heatmaps' user error: no rankings to draw
        case.prepare(ws, tmp_path)
    before = {m["path"] for m in read_manifests(ws)}
    error: BaseException | None = None
    result = None
    if outcome == "completed":
        result = case.run(ws, tmp_path)
    elif outcome == "failed":
        with pytest.raises(case.error) as caught:
            case.bad(ws, tmp_path, monkeypatch)
        error = caught.value
    else:
        _patch(monkeypatch, case.inner)
        with pytest.raises(KeyboardInterrupt) as caught:
            case.run(ws, tmp_path)
        error = caught.value

    new = [m for m in read_manifests(ws) if m["path"] not in before]
    assert len(new) == 1, [m["path"] for m in new]
    manifest = new[0]
    assert COMMON_FIELDS - {"skipped_systems"} <= set(manifest)
    assert manifest["stage"] == case.stage and manifest["status"] == outcome
    assert manifest["finished"] and manifest["timings_s"]["total"] >= 0
    if outcome == "completed":
        assert manifest["error"] is None
        assert Path(result.manifest) == Path(manifest["path"])
    else:
        assert manifest["error"] == {"type": type(error).__name__, "message": str(error)}


def test_a_busy_output_leaves_no_manifest(tmp_path):
    """Another run holds the outputs: this one changed nothing, so it records nothing."""
    ws = Workspace.init(tmp_path / "ws")
    with pytest.raises(BusyError), stage_run(ws, "test.busy", {}):
        raise BusyError("busy: the test output is being written by PID 1")
    assert read_manifests(ws) == []


def test_a_manifest_that_cannot_be_written_does_not_hide_the_error(tmp_path, monkeypatch):
    ws = Workspace.init(tmp_path / "ws")

    def full_disk(self, status, error=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RunManifest, "finish", full_disk)
    with pytest.raises(DataError, match="the real error"), stage_run(ws, "test.full", {}):
        raise DataError("the real error")
    with pytest.raises(OSError, match="No space left"), stage_run(ws, "test.full", {}):
        pass  # on success the lost record is the error


def test_stage_fields_cannot_overwrite_the_common_ones(tmp_path):
    manifest = RunManifest(None, "test.fields", {})
    manifest.record("run_key", "abc")
    with pytest.raises(ValueError, match="'status' is a field every manifest has"):
        manifest.record("status", "completed")
    assert manifest.data["run_key"] == "abc" and manifest.data["status"] == "running"


def _subscripted(node: ast.AST) -> ast.AST:
    """The object under a chain of subscripts: ``manifest.data`` of ``manifest.data["inputs"]["x"]``."""
    while isinstance(node, ast.Subscript):
        node = node.value
    return node


def test_no_stage_writes_a_manifest_on_its_own():
    """Only stage_run opens and finishes manifests; stages record through RunManifest's methods."""
    found = []
    for path in ENGINE.rglob("*.py"):
        if path.name in ("manifest.py", "stage_run.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "RunManifest":
                found.append(f"{path.name}:{node.lineno}: RunManifest(...)")
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "finish" \
                    and getattr(node.func.value, "id", "") == "manifest":
                found.append(f"{path.name}:{node.lineno}: manifest.finish(...)")
            base = _subscripted(node) if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store) else None
            if isinstance(base, ast.Attribute) and base.attr == "data" and getattr(base.value, "id", "") == "manifest":
                found.append(f"{path.name}:{node.lineno}: manifest.data[...] = ...")
    assert found == []



def test_manifests_of_one_second_are_newest_first_by_write_time(tmp_path):
    """Names carry the start time to the second and a random suffix: two runs of the same second are
    ordered by when their manifests were written, not by the suffix."""
    import os

    ws = Workspace.init(tmp_path / "ws")
    runs = ws.folder("runs")
    for i, name in enumerate(["20261204T120000-detect-ffffff.json", "20261204T120000-detect-000000.json"]):
        (runs / name).write_text(f'{{"run_id": "{i}"}}')
        os.utime(runs / name, ns=(10**18 + i, 10**18 + i))
    (runs / "20261204T115959-embed-aaaaaa.json").write_text('{"run_id": "older"}')
    assert [m["run_id"] for m in read_manifests(ws)] == ["1", "0", "older"]
