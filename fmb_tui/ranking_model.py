"""The data behind the ranking table (no UI imports; the heavy parts run in worker threads).

:class:`RankingData` holds one ranking file as arrays: the object ids (a pyarrow string
array, never a million Python strings) and, per system, rank and score numpy arrays.
Systems load progressively: the chosen one first (the table shows at once), the others
in the background.

:class:`ViewSpec` says what the table shows (system, sort column and direction, filters);
:func:`compute_order` turns it into the array of rows to display. Rendering only ever
touches the rows on screen, so a 1,000,000-row ranking scrolls as fast as a 100-row one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from fmb_engine.rankings import parse_system

if TYPE_CHECKING:
    import pyarrow as pa

    from fmb_engine.rankings import Provenance


class RankingData:
    """Object ids plus rank/score arrays of every loaded system."""

    def __init__(self, ids: pa.Array, systems: list[str], source_mtime: float = 0.0,
                 provenance: Provenance | None = None):
        self.ids = ids
        self.n = len(ids)
        self.systems = list(systems)
        self.provenance = provenance
        self.ranks: dict[str, np.ndarray] = {}
        self.scores: dict[str, np.ndarray] = {}
        self.source_mtime = source_mtime
        self._by_rank: dict[str, np.ndarray] = {}

    @classmethod
    def from_table(cls, table: pa.Table, systems: list[str], source_mtime: float = 0.0,
                   provenance: Provenance | None = None) -> RankingData:
        data = cls(table.column("object_id").combine_chunks(), systems, source_mtime, provenance)
        data.add_from_table(table)
        return data

    def add_from_table(self, table: pa.Table) -> list[str]:
        added = []
        for name in table.column_names:
            if name.startswith("rank:"):
                system = name[5:]
                self.add_system(system, table.column(name).to_numpy(), table.column("score:" + system).to_numpy())
                added.append(system)
        return added

    def add_system(self, system: str, rank: np.ndarray, score: np.ndarray) -> None:
        """Ranks are integers, or floats with NaN where the system does not rank an object (it goes last)."""
        self.ranks[system] = np.asarray(rank)
        self.scores[system] = np.asarray(score, dtype=np.float64)  # no copy when already float64

    def rank_of(self, system: str, row: int) -> int | None:
        value = self.ranks[system][int(row)]
        return None if value != value else int(value)  # NaN: not ranked by this system

    def ranked(self, system: str) -> int:
        """How many objects the system ranks."""
        rank = self.ranks[system]
        return int(rank.size if rank.dtype.kind in "iu" else np.isfinite(rank).sum())

    def loaded(self, system: str) -> bool:
        return system in self.ranks

    def order_by_rank(self, system: str) -> np.ndarray:
        """Rows sorted by the system's rank (O(N) when ranks are 1..N, as the detection stage writes)."""
        cached = self._by_rank.get(system)
        if cached is not None:
            return cached
        rank = self.ranks[system]
        order = None
        if rank.size and rank.min() == 1 and rank.max() == rank.size:
            order = np.full(rank.size, -1, dtype=np.int64)
            order[rank.astype(np.int64) - 1] = np.arange(rank.size)
            if (order < 0).any():  # ties: not a permutation
                order = None
        if order is None:
            order = np.argsort(rank, kind="stable").astype(np.int64)
        self._by_rank[system] = order
        return order

    def id_at(self, row: int) -> str:
        return self.ids[int(row)].as_py()

    def ids_at(self, rows: np.ndarray) -> list[str]:
        return self.ids.take(np.asarray(rows, dtype=np.int64)).to_pylist()

    def rows_of(self, object_ids: list[str]) -> np.ndarray:
        """Rows whose id is in ``object_ids`` (vectorised, no id map)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if not object_ids:
            return np.zeros(0, dtype=np.int64)
        mask = pc.is_in(self.ids, value_set=pa.array(list(object_ids), type=self.ids.type))
        return np.flatnonzero(mask.to_numpy(zero_copy_only=False))

    def labelled_in_top(self, system: str, k: int, labels: dict[str, str]) -> int:
        """How many of the system's top-``k`` objects have a label."""
        if not labels or not self.loaded(system):
            return 0
        top = self.order_by_rank(system)[: min(k, self.n)]
        return sum(1 for oid in self.ids_at(top) if oid in labels)


def describe_sources(prov: Provenance | None) -> str | None:
    """One line naming the detect runs behind the systems, when they are not all from the latest one.

    None when every system comes from the run that wrote the file (nothing worth a line).
    """
    if prov is None or (not prov.kept and not prov.dropped):
        return None

    def when(model: str) -> str:
        started = str(prov.runs[model].get("started") or "?")
        return started[:16].replace("T", " ")

    parts = [f"{m} {when(m)}" for m in prov.scored if m in prov.runs]
    n_runs = len({prov.runs[m].get("run_id") or when(m) for m in prov.runs})
    text = f"systems from {n_runs} detect run{'s' if n_runs != 1 else ''}: latest " + ", ".join(parts)
    if prov.kept:
        text += " · kept from older runs: " + ", ".join(f"{m} {when(m)}" for m in prov.kept)
    if prov.dropped:
        text += " · dropped (embeddings removed): " + ", ".join(prov.dropped)
    return text


def next_unlabelled(data: RankingData, order: np.ndarray, position: int, labels: dict[str, str]) -> int | None:
    """Position of the first unlabelled row after ``position`` in ``order``; None when all below are labelled.

    It runs on the event loop (a key): it reads the ids below the cursor in growing chunks and
    stops at the first unlabelled one, so it costs the labelled rows it skips (at most the number of
    labels), not the size of the ranking (a membership test over 10^6 ids took 40 ms).
    """
    start, chunk = position + 1, 64
    while start < len(order):
        rows = np.asarray(order[start:start + chunk], dtype=np.int64)
        for i, oid in enumerate(data.ids_at(rows)):
            if oid not in labels:
                return start + i
        start += rows.size
        chunk = min(chunk * 4, 65536)
    return None


@dataclass(frozen=True)
class ViewSpec:
    """What the table shows. ``sort`` is a column key: rank | score | object_id | label | rank:<s> | score:<s>."""

    system: str
    sort: str = "rank"
    descending: bool = False
    labels: frozenset[str] | None = None  # keep objects with one of these labels ("" = unlabelled)
    score_min: float | None = None
    score_max: float | None = None
    text: str = ""

    def with_(self, **changes) -> ViewSpec:
        return replace(self, **changes)

    @property
    def filtered(self) -> bool:
        return self.labels is not None or self.score_min is not None or self.score_max is not None or bool(self.text)

    def describe(self) -> str:
        arrow = "↓" if self.descending else "↑"
        parts = [f"sort {self.sort} {arrow}"]
        if self.labels is not None:
            parts.append("label " + "|".join(sorted(lbl or "(none)" for lbl in self.labels)))
        if self.score_min is not None or self.score_max is not None:
            lo = "" if self.score_min is None else f"{self.score_min:g}"
            hi = "" if self.score_max is None else f"{self.score_max:g}"
            parts.append(f"score {lo}..{hi}")
        if self.text:
            parts.append(f"id ~ {self.text!r}")
        return " · ".join(parts)


def default_descending(sort: str) -> bool:
    return sort == "score" or sort.startswith("score:")


def sort_keys(data: RankingData) -> list[tuple[str, str]]:
    """(key, title) of every sortable column."""
    keys = [("rank", "rank (current system)"), ("score", "score (current system)"), ("object_id", "object id"),
            ("label", "triage label")]
    for s in data.systems:
        name = with_short(s)
        keys += [(f"rank:{s}", f"rank in {name}"), (f"score:{s}", f"score in {name}")]
    return keys


def with_short(system: str) -> str:
    """``cca/image/flow (cca/img/flow)``: the full name plus the column header's abbreviation,
    so typing either in a chooser finds the system."""
    short = short_system(system)
    return system if short == system else f"{system} ({short})"


def sort_column(spec: ViewSpec) -> str:
    """The table column the view is sorted by (``rank``/``score`` of another system resolve to theirs)."""
    if spec.sort.startswith(("rank:", "score:")) and spec.sort.split(":", 1)[1] == spec.system:
        return spec.sort.split(":", 1)[0]
    return spec.sort


def _resolve(spec: ViewSpec, key: str) -> str:
    if key == "rank":
        return f"rank:{spec.system}"
    if key == "score":
        return f"score:{spec.system}"
    return key


def compute_order(data: RankingData, spec: ViewSpec, labels: dict[str, str]) -> np.ndarray:
    """Rows to show, in order. Heavy for a million rows (sorting, substring search): run it in a thread."""
    import pyarrow.compute as pc

    key = _resolve(spec, spec.sort)
    if key.startswith("rank:") or key.startswith("score:"):
        system = key.split(":", 1)[1]
        if not data.loaded(system):
            raise KeyError(system)
        if key.startswith("rank:"):
            order = data.order_by_rank(system)
            if spec.descending:
                order = order[::-1]
        else:
            score = data.scores[system]
            # NaN scores go last either way
            order = np.argsort(-score if spec.descending else score, kind="stable")
    elif key == "object_id":
        order = pc.sort_indices(data.ids, sort_keys=[("", "descending" if spec.descending else "ascending")])
        order = order.to_numpy().astype(np.int64)
    elif key == "label":
        base = data.order_by_rank(spec.system) if data.loaded(spec.system) else np.arange(data.n)
        rows = data.rows_of(list(labels))
        if rows.size:
            rows = rows[np.argsort(data.ranks[spec.system][rows], kind="stable")] if data.loaded(spec.system) else rows
            ids = data.ids_at(rows)
            pairs = sorted(zip([labels[i] for i in ids], range(len(ids)), strict=True), reverse=spec.descending)
            labelled = rows[[p[1] for p in pairs]]
            rest_mask = np.ones(data.n, dtype=bool)
            rest_mask[labelled] = False
            order = np.concatenate([labelled, base[rest_mask[base]]])
        else:
            order = base
    else:
        raise KeyError(spec.sort)
    order = np.asarray(order, dtype=np.int64)

    mask: np.ndarray | None = None

    def narrow(m: np.ndarray) -> None:
        nonlocal mask
        mask = m if mask is None else (mask & m)

    if spec.labels is not None:
        wanted = {oid for oid, lbl in labels.items() if lbl in spec.labels}
        m = np.zeros(data.n, dtype=bool)
        m[data.rows_of(sorted(wanted))] = True
        if "" in spec.labels:  # unlabelled objects
            unl = np.ones(data.n, dtype=bool)
            unl[data.rows_of(sorted(labels))] = False
            m |= unl
        narrow(m)
    if (spec.score_min is not None or spec.score_max is not None) and data.loaded(spec.system):
        score = data.scores[spec.system]
        m = np.ones(data.n, dtype=bool)
        if spec.score_min is not None:
            m &= score >= spec.score_min
        if spec.score_max is not None:
            m &= score <= spec.score_max
        narrow(m)
    if spec.text:
        hit = pc.match_substring(data.ids, pattern=spec.text, ignore_case=True)
        narrow(hit.fill_null(False).to_numpy(zero_copy_only=False))
    if mask is not None:
        order = order[mask[order]]
    return order


# --- formatting ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    key: str  # rank | object_id | label | score | rank:<s> | score:<s>
    title: str  # header line 2
    group: str  # header line 1 ("" for the fixed columns)
    width: int
    right: bool = True
    fixed: bool = False


def short_system(name: str) -> str:
    s = parse_system(name)
    short = {"image": "img", "spectrum": "spec"}.get(s.modality, s.modality[:5])  # joint, cross, fused fit as they are
    return f"{s.model}/{short}/{s.method}" if s.method else name


def columns(data: RankingData, system: str, id_width: int = 16) -> list[Column]:
    rank_w = max(5, len(f"{data.n:,}") - 0)
    cols = [
        Column("rank", "rank", "", rank_w, fixed=True),
        Column("object_id", "object_id", "", id_width, right=False, fixed=True),
        Column("label", "label", "", 11, right=False, fixed=True),
        Column("score", "score", "", 10, fixed=True),
    ]
    for s in data.systems:
        if s == system:
            continue
        group = short_system(s)
        cols.append(Column(f"rank:{s}", "rank", group, rank_w))
        cols.append(Column(f"score:{s}", "score", group, 10))
    return cols


def fmt_score(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    a = abs(v)
    if a >= 1e5 or (0 < a < 1e-3):
        return f"{v:.3g}"
    return f"{v:.3f}"


@dataclass
class CellText:
    text: str
    kind: str = ""  # "" | "label:<name>" | "pending"


@dataclass
class RowFormatter:
    """Formats the cells of one row for the columns on screen."""

    data: RankingData
    system: str
    labels: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def cell(self, row: int, col: Column, object_id: str) -> CellText:
        key = col.key
        if key == "object_id":
            return CellText(object_id)
        if key == "label":
            label = self.labels.get(object_id, "")
            mark = "*" if object_id in self.notes else ""
            return CellText(label + mark, f"label:{label}" if label else "")
        system = self.system if key in ("rank", "score") else key.split(":", 1)[1]
        if not self.data.loaded(system):
            return CellText("…", "pending")
        if key == "rank" or key.startswith("rank:"):
            rank = self.data.rank_of(system, row)
            return CellText("–" if rank is None else f"{rank:,}")
        return CellText(fmt_score(float(self.data.scores[system][row])))
