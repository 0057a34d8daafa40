"""Blocking access to a workspace for the TUI (no UI imports).

Everything here reads files or runs subprocesses, so screens call it from thread
workers only. One :class:`WorkspaceData` per app: it caches the open survey reader,
recently viewed objects, the ranking and the label store, and guards each with a lock
(h5py and sqlite connections are shared between worker threads).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmb_engine.config import load
from fmb_engine.config.tui import TuiConfig
from fmb_engine.errors import FMBError
from fmb_engine.workspace import Workspace

if TYPE_CHECKING:
    import subprocess

    from fmb_engine.survey.store import SurveyObject, SurveyReader
    from fmb_engine.triage.labels import LabelStore
    from fmb_tui.discovery import ActiveState
    from fmb_tui.ranking_model import RankingData


class NoSurvey(FMBError):
    pass


class SurveyFree(NoSurvey):
    """The ranking was made from survey-free synthetic embeddings: its objects have no spectrum or image."""


#: how much lower than the explorer the re-rank's child process runs (nice increment): keys stay fast on a busy node
RERANK_NICENESS = 10


class RerankFailed(FMBError):
    """``discover rerank`` did not complete; the message is the engine's."""


def load_tui_config(ws: Workspace | None) -> TuiConfig:
    """The ``tui`` section with the workspace layers (raises ConfigError on a bad value)."""
    return load("tui", ws).values  # type: ignore[return-value]


@dataclass
class Overview:
    """What the workspace screen shows."""

    root: str
    surveys: list[dict[str, Any]] = field(default_factory=list)
    embeddings: list[dict[str, Any]] = field(default_factory=list)
    systems: list[str] = field(default_factory=list)
    ranking_problem: str | None = None
    ranking_objects: int | None = None
    survey_free: list[str] = field(default_factory=list)  # the synthetic embedding files of a survey-free ranking
    labels: dict[str, int] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    jobs: dict[str, int] = field(default_factory=dict)
    comparisons: list[str] = field(default_factory=list)
    evaluated: bool = False  # survey-free: analysis/evaluation.csv exists and was made from the current ranking
    next_steps: list[str] = field(default_factory=list)


class WorkspaceData:
    def __init__(self, ws: Workspace, config: TuiConfig | None = None):
        self.ws = ws
        self.config = config or TuiConfig()
        self._lock = threading.RLock()
        self._reader: SurveyReader | None = None
        self._reader_path: Path | None = None
        self._objects: OrderedDict[str, SurveyObject] = OrderedDict()
        self._labels: LabelStore | None = None
        self._rerank_child: subprocess.Popen | None = None
        self._synthetic: tuple[float, list[Path]] | None = None  # (systems table mtime, its survey-free runs)

    # --- survey ----------------------------------------------------------------------------

    def survey_path(self) -> Path:
        """The workspace's active survey (general.survey, the engine's rule); NoSurvey naming the file when missing."""
        from fmb_engine.survey.active import resolve_survey

        name = load("general", self.ws).values.survey  # type: ignore[attr-defined]
        if not self.ws.surveys():
            raise NoSurvey(f"no survey in {self.ws.folder('survey')}: run `fmb-engine data mock` or "
                           "`fmb-engine data import SOURCE`")
        try:
            return resolve_survey(self.ws, name)
        except FMBError as exc:
            raise NoSurvey(str(exc)) from None

    def reader(self) -> SurveyReader:
        from fmb_engine.survey.store import SurveyReader

        with self._lock:
            path = self.survey_path()
            if self._reader is None or self._reader_path != path:
                if self._reader is not None:
                    self._reader.close()
                self._reader = SurveyReader(path)
                self._reader_path = path
                self._objects.clear()
            return self._reader

    def synthetic_runs(self) -> list[Path]:
        """The survey-free embedding files the ranking was made from ([] for a survey's ranking, or none).

        The engine's rule (:func:`fmb_engine.rankings.synthetic_runs`), asked once per version of
        the systems table: the preview asks on every cursor move.
        """
        from fmb_engine import rankings

        try:
            mtime = rankings.systems_path(self.ws).stat().st_mtime
        except OSError:
            return []
        with self._lock:
            if self._synthetic is None or self._synthetic[0] != mtime:
                self._synthetic = (mtime, rankings.synthetic_runs(self.ws))
            return self._synthetic[1]

    def get_object(self, object_id: str) -> SurveyObject:
        """The survey's object; :class:`SurveyFree` when the ranking has no survey behind it."""
        with self._lock:
            obj = self._objects.get(object_id)
            if obj is not None:
                self._objects.move_to_end(object_id)
                return obj
            runs = self.synthetic_runs()
            if runs:
                raise SurveyFree(survey_free_message(runs))
            obj = self.reader().get(str(object_id))
            self._objects[object_id] = obj
            while len(self._objects) > 64:
                self._objects.popitem(last=False)
            return obj

    # --- ranking ---------------------------------------------------------------------------

    def open_ranking(self, system: str | None = None) -> tuple[RankingData, str]:
        """The ranking with only ``system`` (default: config or first fused) loaded: fast."""
        from fmb_engine import rankings
        from fmb_tui.ranking_model import RankingData

        systems = rankings.list_systems(self.ws)
        chosen = rankings.default_system(systems, system or self.config.system)
        table = rankings.load_table(self.ws, [chosen])
        mtime = rankings.systems_path(self.ws).stat().st_mtime
        return RankingData.from_table(table, systems, mtime, rankings.provenance(self.ws)), chosen

    def load_systems(self, data: RankingData, systems: list[str]) -> dict[str, tuple]:
        """More systems' columns for ``data``, as numpy arrays ready to add (all the copying happens here)."""
        from fmb_engine import rankings

        table = rankings.load_table(self.ws, [s for s in systems if not data.loaded(s)])
        return {s: (table.column(f"rank:{s}").to_numpy(), table.column(f"score:{s}").to_numpy())
                for s in systems if f"rank:{s}" in table.column_names}

    def ranking_changed(self, data: RankingData) -> bool:
        from fmb_engine import rankings

        with contextlib.suppress(OSError):
            return rankings.systems_path(self.ws).stat().st_mtime != data.source_mtime
        return True

    # --- labels ----------------------------------------------------------------------------

    def labels(self) -> LabelStore:
        from fmb_engine.triage.labels import LabelStore

        with self._lock:
            if self._labels is None:
                self._labels = LabelStore.for_workspace(self.ws, user=self.config.user, journal=self.config.label_journal)
            return self._labels

    def label_history(self, object_id: str, limit: int = 4) -> list:
        """The object's last label/note changes, newest first (none before anyone labelled: no store is created)."""
        from fmb_engine.triage.labels import labels_path

        if not labels_path(self.ws).is_file():
            return []
        return self.labels().history(object_id, limit=limit)[::-1]

    # --- active discovery ----------------------------------------------------------------

    def rerank(self) -> tuple[dict[str, Any], tuple[RankingData, str], int | None]:
        """``fmb-engine discover rerank`` with the workspace's settings, then the new order opened on its system.

        The engine runs in a child process at a lower priority: its own interpreter, so its
        file reads and numpy loops never hold this process's GIL (in a thread they stalled the
        keys for up to a second; see docs/tui.md), the explorer wins the CPU on a busy node,
        and the engine's output cannot reach the terminal the explorer draws on.

        Returns the stage's summary (the CLI's JSON), :meth:`open_ranking`'s result and the row
        of the best unlabelled candidate (None when the engine named none or the ranking lacks
        it). An engine error is raised as :class:`RerankFailed` with the engine's message.
        """
        import json
        import subprocess
        import sys

        command = [sys.executable, "-m", "fmb_engine.cli.main", "discover", "rerank", "-w", str(self.ws.root),
                   "--format", "json"]
        with self._lock:
            child = self._rerank_child = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with contextlib.suppress(OSError, AttributeError):  # below the explorer's priority: keys first (Unix)
            os.setpriority(os.PRIO_PROCESS, child.pid, RERANK_NICENESS)
        try:
            out, err = child.communicate()
        finally:
            with self._lock:
                self._rerank_child = None
        if child.returncode != 0:
            at = err.find("error: ")  # the CLI's one message (it may span lines); else the end of what it said
            said = err[at + len("error: "):].strip() if at >= 0 else err.strip()[-500:]
            raise RerankFailed(said or f"`fmb-engine discover rerank` ended with exit status {child.returncode}")
        try:
            summary = json.loads(out)
            system = str(summary["system"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RerankFailed(f"`fmb-engine discover rerank` wrote no summary ({exc}): {out[:200]!r}") from None
        best = summary.get("best_unlabelled")
        data, system = self.open_ranking(system)
        rows = data.rows_of([str(best)]) if best is not None else []
        return summary, (data, system), int(rows[0]) if len(rows) else None

    def active_state(self, system: str | None, labels: dict[str, str]) -> ActiveState:
        """How the order of active ``system`` (else the last re-ranked one) stands against ``labels``.

        A configuration or ranking problem is returned as the state's ``problem``, not raised:
        this check runs after every label and must not notify on each.
        """
        from fmb_engine import rankings
        from fmb_engine.discover.run import labels_digest
        from fmb_tui.discovery import ActiveState, is_active, latest_record

        digest = labels_digest(labels)
        try:
            auto_every = int(load("discover", self.ws).values.auto_every)  # type: ignore[attr-defined]
            records = rankings.active_records(self.ws)
        except FMBError as exc:
            return ActiveState(system, None, 0, digest, problem=str(exc))
        if is_active(system):
            name, record = system, records.get(system)  # type: ignore[arg-type]
            record = record if isinstance(record, dict) else None
        else:
            name, record = latest_record(records)
        if record is None:
            stale = len(labels)
        elif record.get("labels_digest") == digest:
            stale = 0
        else:
            stale = self._changed_since(record, labels)
        return ActiveState(name, record, stale, digest, auto_every)

    def _changed_since(self, record: dict[str, Any], labels: dict[str, str]) -> int:
        """Objects whose label differs from those ``record`` reflects (rebuilt from the label history)."""
        from fmb_engine.discover.run import labels_digest
        from fmb_engine.triage.labels import labels_path
        from fmb_tui.discovery import changed, labels_at

        try:
            version = int(record.get("label_version") or 0)
            total = int(record.get("labels_total") or 0)
        except (TypeError, ValueError):
            version, total = 0, 0
        if not labels_path(self.ws).is_file():
            return max(1, total)
        store = self.labels()
        then = labels_at(store.labels(), store.history(), version)
        if labels_digest(then) != record.get("labels_digest"):  # the history does not explain it (a replaced store)
            return max(1, abs(len(labels) - total))
        return max(1, changed(then, labels))

    # --- analysis outputs ------------------------------------------------------------------

    def neighbours(self, object_id: str):
        from fmb_engine import rankings

        return rankings.load_neighbours(self.ws, object_id)

    def comparison(self, kind: str):
        from fmb_engine import rankings

        return rankings.load_comparison(self.ws, kind)

    # --- overview --------------------------------------------------------------------------

    def overview(self) -> Overview:
        from fmb_engine import rankings
        from fmb_engine.manifest import read_manifests
        from fmb_engine.survey.store import SurveyReader

        ov = Overview(root=str(self.ws.root))
        for path in self.ws.surveys():
            try:
                with SurveyReader(path) as reader:
                    s = reader.summary()
                ov.surveys.append({"name": path.name, "objects": s["objects"], "splits": s["splits"],
                                   "classes": sum(s["anomaly_classes"].values()), "image_size": s["image_size"]})
            except FMBError as exc:
                ov.surveys.append({"name": path.name, "error": str(exc)})
        from fmb_engine import lineage
        from fmb_engine.errors import StaleError

        survey = lineage.active_survey(self.ws)
        for path in sorted(self.ws.folder("embeddings").glob("*.h5")):
            try:
                from fmb_engine.embed.store import EmbeddingReader

                with EmbeddingReader(path) as r:
                    entry = {"name": path.name, "model": r.embedder, "modalities": list(r.modalities),
                             "objects": r.n_objects}
                try:
                    lineage.check_embedding(self.ws, path, survey)
                except StaleError as exc:
                    entry["stale"] = str(exc)
                ov.embeddings.append(entry)
            except FMBError as exc:  # a foreign, damaged or partial file (the reader says which): listed, not fatal
                ov.embeddings.append({"name": path.name, "error": str(exc).splitlines()[0][:120]})
        try:
            ov.systems = rankings.list_systems(self.ws)
            import pyarrow.parquet as pq

            ov.ranking_objects = pq.ParquetFile(rankings.systems_path(self.ws)).metadata.num_rows
            ov.survey_free = [p.name for p in self.synthetic_runs()]
        except FMBError as exc:
            ov.ranking_problem = str(exc)
        for kind in rankings.COMPARISONS:
            if rankings.comparison_path(self.ws, kind).is_file():
                ov.comparisons.append(kind)
        evaluation = self.ws.folder("analysis") / "evaluation.csv"
        if ov.survey_free and evaluation.is_file():  # only next_steps of a survey-free ranking asks
            from fmb_engine import lineage

            with contextlib.suppress(FMBError):  # stale or unreadable: evaluate again
                lineage.check_output(self.ws, evaluation, "fmb-engine evaluate")
                ov.evaluated = True
        from fmb_engine.triage.labels import labels_path

        if labels_path(self.ws).is_file():
            with contextlib.suppress(FMBError):
                ov.labels = self.labels().counts()
        ov.runs = [{"run_id": str(m.get("run_id") or "?"), "stage": str(m.get("stage") or "?"),
                    "status": str(m.get("status") or "?"), "started": str(m.get("started") or ""),
                    "path": m.get("path")} for m in read_manifests(self.ws)[:6]]
        ov.jobs = self.job_counts()
        ov.next_steps = next_steps(ov)
        return ov

    def job_counts(self) -> dict[str, int]:
        from fmb_engine.jobs.registry import REGISTRY_NAME

        path = self.ws.folder("jobs") / REGISTRY_NAME
        if not path.is_file():
            return {}
        from fmb_engine.jobs.registry import open_registry

        with open_registry(self.ws) as reg:
            _, jobs = reg.snapshot()
        return dict(Counter(j.state.value for j in jobs))

    def close(self) -> None:
        with self._lock:
            if self._rerank_child is not None:  # the explorer ends: the engine records the run as interrupted
                with contextlib.suppress(OSError):
                    self._rerank_child.terminate()
            if self._reader is not None:
                with contextlib.suppress(Exception):
                    self._reader.close()
                self._reader = None
            if self._labels is not None:
                with contextlib.suppress(Exception):
                    self._labels.close()
                self._labels = None


def survey_free_message(runs: list[Path]) -> str:
    """What a preview says for a ranking made without a survey."""
    names = ", ".join(f"embeddings/{p.name}" for p in runs)
    return (f"no spectrum or image: the ranking was made from survey-free synthetic embeddings ({names}); "
            "only scores and labels exist for its objects")


def next_steps(ov: Overview) -> list[str]:
    steps = []
    if not ov.surveys and not ov.survey_free:
        steps.append("create a survey: `fmb-engine data mock` (or Runs screen, stage data mock)")
    elif not ov.embeddings:
        steps.append("compute embeddings: Runs screen (R), stage embed.<model>, or `fmb-engine embed pca`")
    stale = [e["model"] for e in ov.embeddings if "stale" in e]
    if stale:
        steps.insert(0, "recompute the embeddings made from another survey: "
                        + ", ".join(f"`fmb-engine embed {m}`" for m in stale))
    if ov.surveys and not ov.systems:
        steps.append("score anomalies: `fmb-engine detect all`; then the Anomalies screen (A)")
    if ov.systems and not ov.labels:
        steps.append("triage the top candidates: Anomalies screen (A), j/k to move, 1-9 to label")
    if ov.systems and not ov.comparisons:
        steps.append("compare systems: `fmb-engine analyze rankings` writes analysis/rankings/*.csv (Compare, C)")
    if ov.survey_free:  # the synthetic files carry the truth; there is nothing to draw an object with
        steps.append("how each system ranks the injected truth: analysis/evaluation.md" if ov.evaluated else
                     "score the systems against the injected truth: `fmb-engine evaluate`")
    elif ov.labels:
        steps.append("export a figure of the interesting ones: Figures screen (F)")
    active = sum(n for s, n in ov.jobs.items() if s in ("PENDING", "RUNNING"))
    if active:
        steps.insert(0, f"{active} job(s) pending or running: Jobs screen (J)")
    return steps


def read_new(path: str | os.PathLike[str], offset: int, max_bytes: int = 256 * 1024,
             initial_tail: int = 64 * 1024) -> tuple[str, int, bool]:
    """Bytes appended to a log since ``offset`` (polling, NFS-safe: no inotify).

    ``offset < 0`` means "first read": start ``initial_tail`` bytes before the end.
    Returns (text, new offset, rewritten) -- rewritten when the file shrank.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError:
        return "", offset, False
    rewritten = False
    if offset < 0:
        offset = max(0, size - initial_tail)
    elif size < offset:
        offset, rewritten = 0, True
    if size == offset:
        return "", offset, rewritten
    with p.open("rb") as fh:
        fh.seek(offset)
        chunk = fh.read(min(max_bytes, size - offset))
    # never split a UTF-8 character: stop at the last newline when the chunk is cut short
    if offset + len(chunk) < size and b"\n" in chunk:
        chunk = chunk[: chunk.rindex(b"\n") + 1]
    return chunk.decode("utf-8", errors="replace"), offset + len(chunk), rewritten


def elapsed(start: float | None, end: float | None, now: float | None = None) -> str:
    if not start:
        return "-"
    seconds = int((end or (now or time.time())) - start)
    if seconds < 0:
        return "-"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"
