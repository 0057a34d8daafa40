"""Pieces without a running app: action registry, ranking model, renderers, log tail, form parsing."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from fmb_engine.survey.bands import EMISSION_LINES, wavelength_grid
from fmb_tui import actions
from fmb_tui import ranking_model as rm
from fmb_tui.data import read_new
from fmb_tui.render import SpectrumView, halfblock_text, spectrum_text
from fmb_tui.screens.base import FMBScreen
from fmb_tui.widgets.config_form import error_lines, parse

ROOT = Path(__file__).resolve().parents[2]


def test_action_ids_unique_and_every_action_has_a_handler():
    ids = [a.id for a in actions.ACTIONS]
    assert len(ids) == len(set(ids))
    from fmb_tui.app import FMBApp
    from fmb_tui.screens.anomalies import AnomaliesScreen
    from fmb_tui.screens.compare import CompareScreen
    from fmb_tui.screens.figures import FiguresScreen
    from fmb_tui.screens.jobs import JobsScreen
    from fmb_tui.screens.object import ObjectScreen
    from fmb_tui.screens.runs import RunsScreen
    from fmb_tui.screens.workspace import WorkspaceScreen

    targets = {"app": [FMBApp], "triage": [AnomaliesScreen, ObjectScreen], "anomalies": [AnomaliesScreen],
               "object": [ObjectScreen], "jobs": [JobsScreen], "runs": [RunsScreen], "workspace": [WorkspaceScreen],
               "compare": [CompareScreen], "figures": [FiguresScreen]}
    for a in actions.ACTIONS:
        name = a.action.removeprefix("app.").split("(")[0]
        for cls in targets[a.scope]:
            assert hasattr(cls, f"action_{name}"), (a.id, cls.__name__)
    # every screen's bindings carry their ids (the keymap remaps by id)
    for cls in (AnomaliesScreen, ObjectScreen, JobsScreen):
        assert all(b.id for b in cls.BINDINGS)
    assert issubclass(AnomaliesScreen, FMBScreen)


def test_docs_key_table_is_in_sync():
    doc = (ROOT / "docs" / "tui.md").read_text()
    table = actions.markdown_table()
    assert table in doc, "docs/tui.md's key table is stale: paste fmb_tui.actions.markdown_table() between the markers"


def test_display_keys():
    assert actions.display_key("question_mark,f1") == "? / F1"
    assert actions.display_key("ctrl+s") == "Ctrl+S"
    assert actions.display_key("j,down") == "j / ↓"


def ranking(n=1000, systems=("a/image/flow", "a/fused/geo")):
    rng = np.random.default_rng(1)
    ids = pa.array([f"id{i:05d}" for i in range(n)])
    data = rm.RankingData(ids, list(systems))
    for s in systems:
        score = rng.normal(size=n)
        rank = np.empty(n, dtype=np.int64)
        rank[np.argsort(-score)] = np.arange(1, n + 1)
        data.add_system(s, rank, score)
    return data


def test_order_by_rank_sort_and_filters():
    data = ranking()
    spec = rm.ViewSpec("a/fused/geo")
    order = rm.compute_order(data, spec, {})
    assert list(data.ranks["a/fused/geo"][order[:4]]) == [1, 2, 3, 4]
    desc = rm.compute_order(data, spec.with_(sort="score:a/image/flow", descending=True), {})
    assert np.all(np.diff(data.scores["a/image/flow"][desc]) <= 0)
    by_id = rm.compute_order(data, spec.with_(sort="object_id", descending=True), {})
    assert data.id_at(by_id[0]) == "id00999"
    labels = {"id00003": "lens", "id00500": "AGN", "id00007": "lens"}
    lens = rm.compute_order(data, spec.with_(labels=frozenset({"lens"})), labels)
    assert sorted(data.ids_at(lens)) == ["id00003", "id00007"]
    unl = rm.compute_order(data, spec.with_(labels=frozenset({""})), labels)
    assert len(unl) == 997
    rng = rm.compute_order(data, spec.with_(score_min=0.0, score_max=0.5), {})
    s = data.scores["a/fused/geo"][rng]
    assert len(s) and s.min() >= 0 and s.max() <= 0.5
    txt = rm.compute_order(data, spec.with_(text="ID0001"), {})
    assert len(txt) == 10 and all("id0001" in i for i in data.ids_at(txt))
    by_label = rm.compute_order(data, spec.with_(sort="label"), labels)
    assert data.ids_at(by_label[:3]) == sorted(data.ids_at(by_label[:3]), key=lambda i: labels[i]) and len(by_label) == 1000
    assert data.labelled_in_top("a/fused/geo", 1000, labels) == 3
    assert "label lens" in spec.with_(labels=frozenset({"lens"})).describe()


def test_next_unlabelled_reads_only_what_it_skips(monkeypatch):
    data = ranking(n=5000)
    order = rm.compute_order(data, rm.ViewSpec("a/fused/geo"), {})
    ids = data.ids_at(order)
    labels = {oid: "normal" for oid in ids[1:400]}  # a run of labelled rows across several chunks
    labels[ids[401]] = "lens"
    assert rm.next_unlabelled(data, order, 0, labels) == 400
    assert rm.next_unlabelled(data, order, 400, labels) == 402
    assert rm.next_unlabelled(data, order, -1, labels) == 0
    assert rm.next_unlabelled(data, order, len(order) - 1, {}) is None
    assert rm.next_unlabelled(data, order, 0, {oid: "x" for oid in ids}) is None
    read = []
    original = data.ids_at
    monkeypatch.setattr(data, "ids_at", lambda rows: read.append(len(rows)) or original(rows))
    assert rm.next_unlabelled(data, order, 0, labels) == 400
    assert sum(read) < 1500  # the labelled run and one chunk past it, never the 5,000 rows


def test_row_formatter_and_columns():
    data = ranking(systems=("a/image/flow", "a/fused/geo", "b/joint/knn"))
    cols = rm.columns(data, "a/fused/geo")
    assert [c.key for c in cols[:4]] == ["rank", "object_id", "label", "score"]
    assert [c.group for c in cols[4:]] == ["a/img/flow"] * 2 + ["b/joint/knn"] * 2
    fmt = rm.RowFormatter(data, "a/fused/geo", {"id00001": "lens"}, {"id00001": "ring"})
    assert fmt.cell(1, cols[2], "id00001").text == "lens*"
    assert fmt.cell(1, cols[2], "id00001").kind == "label:lens"
    assert rm.fmt_score(123456.0) == "1.23e+05" and rm.fmt_score(1.5) == "1.500"


def test_spectrum_text_shape_lines_and_masks():
    wave = wavelength_grid()
    rng = np.random.default_rng(0)
    flux = 1 + 0.1 * rng.normal(size=wave.size)
    ivar = np.ones(wave.size, dtype=np.float32)
    mask = np.zeros(wave.size, dtype=bool)
    mask[1000:1100] = True
    z = 0.2
    text = spectrum_text(wave, flux, ivar, mask, z, 80, 12)
    lines = text.plain.split("\n")
    assert len(lines) == 12 and all(len(line) <= 80 for line in lines)
    assert "OIII" in lines[0] and "Ha" in lines[0]  # lines named at the object's redshift
    assert "×" in lines[-2]  # masked pixels marked
    assert any(0x2800 < ord(ch) <= 0x28FF for ch in text.plain)  # braille
    view = SpectrumView(float(wave[0]), float(wave[-1])).zoom(0.1, (wave[0], wave[-1]))
    zoomed = spectrum_text(wave, flux, ivar, mask, z, 80, 12, view)
    ha = EMISSION_LINES["Ha"] * (1 + z)
    assert zoomed.plain != text.plain and view.hi - view.lo < 700
    assert SpectrumView(ha - 50, ha + 50).pan(-100, (wave[0], wave[-1])).lo == wave[0]


def test_halfblock_image_shape():
    rgb = np.zeros((32, 32, 3), dtype=np.uint8)
    rgb[:16] = 255
    text = halfblock_text(rgb, 20, 8)
    lines = text.plain.split("\n")
    assert len(lines) == 8 and all(len(line) == 20 for line in lines)
    assert {line.strip() for line in lines} == {"▀" * 16}  # square pixels: 16 wide for 16 tall, centred


def test_read_new_tails_and_notices_rewrites(tmp_path):
    log = tmp_path / "job.out"
    text, off, rew = read_new(log, -1)
    assert (text, rew) == ("", False)
    log.write_text("a\n" * 10)
    text, off, _ = read_new(log, -1, initial_tail=6)
    assert text == "a\na\na\n" and off == 20
    with log.open("a") as fh:
        fh.write("b\nc")
    text, off, _ = read_new(log, off)
    assert text == "b\nc"
    log.write_text("new\n")
    text, off, rew = read_new(log, off)
    assert rew and text == "new\n"


def test_form_parsing_and_error_lines():
    assert parse(int, "42") == 42
    assert parse(str | None, "") is None
    assert parse(list[str], "[a, b]") == ["a", "b"]
    assert parse(str, "123") == "123"
    with pytest.raises(ValueError, match="cannot read"):
        parse(dict[str, str], "{a: [")
    per_key, other = error_lines("TUI form: mock.objects = 5 is invalid: Input should be >= 20 (expected int, got int)\nboom")
    assert per_key == {"objects": "Input should be >= 20 (expected int, got int)"} and other == ["boom"]


def test_systems_that_do_not_rank_every_object(tmp_path):
    """detect writes nullable ranks (an outer join of systems): unranked objects go last, shown as –."""
    import pandas as pd

    from fmb_engine.rankings import systems_path
    from fmb_engine.config.tui import TuiConfig
    from fmb_engine.workspace import Workspace
    from fmb_tui.data import WorkspaceData

    ws = Workspace.init(tmp_path / "ws")
    table = pd.DataFrame({
        "object_id": ["a", "b", "c", "d"],
        "rank:m/image/flow": pd.array([2, None, 1, 3], dtype="Int64"),
        "score:m/image/flow": [0.5, None, 0.9, 0.1],
        "rank:m/fused/geo": pd.array([1, 2, 3, 4], dtype="Int64"),
        "score:m/fused/geo": [4.0, 3.0, 2.0, 1.0],
    })
    table.to_parquet(systems_path(ws), index=False)
    data, system = WorkspaceData(ws, TuiConfig()).open_ranking("m/image/flow")
    order = rm.compute_order(data, rm.ViewSpec(system), {})
    assert data.ids_at(order) == ["c", "a", "d", "b"]
    assert data.ranked(system) == 3 and data.rank_of(system, 1) is None
    fmt = rm.RowFormatter(data, system)
    cols = rm.columns(data, system)
    assert fmt.cell(1, cols[0], "b").text == "–" and fmt.cell(1, cols[3], "b").text == "–"
    desc = rm.compute_order(data, rm.ViewSpec(system, sort="score", descending=True), {})
    assert data.ids_at(desc)[-1] == "b"


def test_tui_config_reads_without_importing_the_stages(tmp_path):
    """A workspace config holding stage sections yields `tui` without importing a stage (every section is
    named by the config registry; an unknown one is an error, as in the CLI)."""
    import subprocess
    import sys

    from fmb_engine.errors import ConfigError
    from fmb_engine.workspace import Workspace
    from fmb_tui.data import load_tui_config

    ws = Workspace.init(tmp_path / "ws")
    ws.config_file.write_text("tui:\n  top_k: 7\ndetect:\n  epochs: 3\nembed:\n  astroclip:\n    batch_size: 8\n")
    code = ("import sys; from pathlib import Path; from fmb_engine.workspace import Workspace; "
            "from fmb_tui.data import load_tui_config; "
            f"assert load_tui_config(Workspace(Path({str(ws.root)!r}))).top_k == 7; "
            "heavy = [m for m in ('torch', 'nflows', 'sklearn', 'fmb_engine.detect.run') if m in sys.modules]; "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    ws.config_file.write_text("tui:\n  top_k: 7\nnot_a_section:\n  x: 1\n")
    with pytest.raises(ConfigError, match="unknown section 'not_a_section'"):
        load_tui_config(ws)
