"""Readers of the detection and analysis outputs the explorer shows (no UI imports).

* ``<workspace>/scores/systems.parquet`` -- one row per object: ``object_id`` and, for every
  system ``<model>/<modality>/<method>`` (modality: one of :data:`MODALITIES`), ``rank:<system>``
  (int, 1 = most anomalous) and ``score:<system>`` (float, higher = more anomalous). Written by
  the detection stage (``fmb-engine detect all``).
* ``<workspace>/analysis/rankings/{spearman,jaccard}.csv`` -- square system x system matrices
  (first column = the index, the system names).
* ``<workspace>/analysis/similarity/neighbours.parquet`` -- nearest neighbours per object:
  ``object_id, model, modality, neighbour (1..k), neighbour_id, similarity``.

Loading uses pyarrow directly (a 1,000,000-row ranking with a dozen systems reads in a
fraction of a second) and reads only the columns asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fmb_engine.errors import DataError, FMBError, StaleError
from fmb_engine.workspace import Workspace

if TYPE_CHECKING:  # heavy imports stay lazy: the TUI imports this module at start
    import pandas as pd
    import pyarrow as pa

SYSTEMS_FILE = "systems.parquet"
#: The modality part of a system name, as detect writes them: a density of the image, spectrum or
#: joint embedding, the image-spectrum mismatch (``cross``) and the rank fusions (``fused``).
MODALITIES = ("image", "spectrum", "joint", "cross", "fused")
RANK_PREFIX = "rank:"
SCORE_PREFIX = "score:"
COMPARISONS = ("spearman", "jaccard")
DETECT_HINT = "run `fmb-engine detect all`"
COMPARE_HINT = "run `fmb-engine analyze rankings`"
NEIGHBOURS_FILE = "neighbours.parquet"


class RankingsError(FMBError):
    """No ranking yet, or a malformed one; the message says what to run or fix."""


class StaleRankingError(StaleError, RankingsError):
    """The ranking was built from other inputs than the workspace holds now (exit 4); rerun detect."""


@dataclass(frozen=True)
class System:
    """One anomaly-detection system: model x modality x method (fusions have modality ``fused``)."""

    name: str
    model: str
    modality: str
    method: str

    @property
    def fused(self) -> bool:
        return self.modality == "fused"

    @property
    def rank_column(self) -> str:
        return RANK_PREFIX + self.name

    @property
    def score_column(self) -> str:
        return SCORE_PREFIX + self.name


def system_name(model: str, modality: str, method: str) -> str:
    """``<model>/<modality>/<method>``, the name :func:`parse_system` reads back."""
    if modality not in MODALITIES:
        raise ValueError(f"modality {modality!r} is not one of {MODALITIES}")
    return f"{model}/{modality}/{method}"


def parse_system(name: str) -> System:
    """``astropt/joint/flow`` -> System; a name without two slashes keeps it all as the model."""
    parts = str(name).split("/")
    if len(parts) == 3:
        return System(name, *parts)
    return System(name, name, "", "")


def systems_path(ws: Workspace) -> Path:
    return ws.folder("scores") / SYSTEMS_FILE


def _missing(ws: Workspace) -> RankingsError:
    return RankingsError(f"no anomaly ranking yet: {systems_path(ws)} does not exist; {DETECT_HINT}")


def _schema(ws: Workspace, survey: Path | None = None) -> pa.Schema:
    """The schema of systems.parquet, once its recorded inputs are checked against the workspace."""
    schema = _schema_unchecked(ws)
    check_current(ws, schema.metadata, survey)
    return schema


def check_current(ws: Workspace, metadata: dict | None = None, survey: Path | None = None) -> None:
    """:class:`StaleRankingError` when systems.parquet was built from other score tables, embeddings
    or survey (default: the active one) than the workspace holds now: a detect run killed while
    publishing, an embedding recomputed, a survey replaced. A table without a record is not checked."""
    from fmb_engine import lineage

    if metadata is None:
        metadata = _schema_unchecked(ws).metadata
    record = lineage.systems_record(metadata)
    if record:
        try:
            lineage.check(ws, systems_path(ws), record, "fmb-engine detect all", survey,
                          lineage.systems_stamps(metadata))
        except StaleError as exc:
            raise StaleRankingError(str(exc)) from None


def _schema_unchecked(ws: Workspace) -> pa.Schema:
    import pyarrow.parquet as pq

    path = systems_path(ws)
    if not path.is_file():
        raise _missing(ws)
    try:
        return pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise RankingsError(f"{path}: not a readable parquet file ({exc}); {DETECT_HINT} again") from None


def systems_in(columns: list[str], where: str = "systems.parquet") -> list[str]:
    """System names of a column list, in file order; checks that ranks and scores pair up."""
    if "object_id" not in columns:
        raise RankingsError(f"{where}: no object_id column (columns: {', '.join(columns[:8])}...)")
    ranks = [c[len(RANK_PREFIX):] for c in columns if c.startswith(RANK_PREFIX)]
    scores = {c[len(SCORE_PREFIX):] for c in columns if c.startswith(SCORE_PREFIX)}
    unpaired = sorted(set(ranks) ^ scores)
    if unpaired:
        raise RankingsError(f"{where}: rank and score columns do not pair up for {', '.join(unpaired)}")
    if not ranks:
        raise RankingsError(f"{where}: no rank:<system> columns; {DETECT_HINT}")
    return ranks


#: Parquet key-value metadata of systems.parquet: which detect run scored each embedding run's systems.
PROVENANCE_KEY = b"fmb:systems"
#: Parquet key-value metadata of systems.parquet: per active system (`discover rerank`), what its order reflects.
ACTIVE_KEY = b"fmb:active"
#: The method of the systems `discover rerank` writes (``<model>/<modality>/active``).
ACTIVE_METHOD = "active"


@dataclass(frozen=True)
class Provenance:
    """Where the systems of a ranking come from.

    ``runs``: embedding run (model) -> ``{"run_id": detect run id or None, "started": ISO time}``;
    ``scored``: the models the detect run that wrote the file scored itself (the others were
    kept from earlier detect runs); ``dropped``: models whose systems that run removed because
    their embeddings are gone.
    """

    runs: dict[str, dict]
    scored: list[str]
    dropped: list[str]

    @property
    def kept(self) -> list[str]:
        return [m for m in self.runs if m not in self.scored]


def provenance(ws: Workspace) -> Provenance | None:
    """The provenance recorded in systems.parquet; None for a file written without it."""
    return provenance_of(_schema(ws).metadata, systems_path(ws))


def provenance_of(metadata: dict | None, path: Path) -> Provenance | None:
    """The provenance in the parquet metadata of systems table ``path``; None when it has none."""
    import json

    raw = (metadata or {}).get(PROVENANCE_KEY)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
        return Provenance(dict(value["runs"]), list(value["scored"]), list(value.get("dropped", [])))
    except (ValueError, KeyError, TypeError) as exc:
        raise RankingsError(f"{path}: unreadable {PROVENANCE_KEY.decode()} metadata ({exc}); "
                            f"{DETECT_HINT} again") from None


def synthetic_runs(ws: Workspace) -> list[Path]:
    """The survey-free embedding files (``embed synthetic``) the systems table was made from; [] for a
    survey's table, or no table. Cheap: the table's metadata and each file's attributes."""
    from fmb_engine import lineage

    if not systems_path(ws).is_file():
        return []
    prov = provenance(ws)
    files = [ws.folder("embeddings") / f"{model}.h5" for model in (prov.runs if prov else {})]
    return files if files and all(p.is_file() and lineage.is_survey_free(p) for p in files) else []


def active_records(ws: Workspace) -> dict[str, dict]:
    """Per active system: strategy, parameters, seed, base system and the labels it reflects
    (count, digest, the label store's version, users); empty when none was re-ranked."""
    import json

    raw = (_schema_unchecked(ws).metadata or {}).get(ACTIVE_KEY)
    if raw is None:
        return {}
    try:
        return dict(json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise RankingsError(f"{systems_path(ws)}: unreadable {ACTIVE_KEY.decode()} metadata ({exc}); "
                            "run `fmb-engine discover rerank` again") from None


def list_systems(ws: Workspace, survey: Path | None = None) -> list[str]:
    """Every system in the workspace's ranking (reads only the file's schema; checks its inputs)."""
    return systems_in(list(_schema(ws, survey).names), str(systems_path(ws)))


def default_system(systems: list[str], preferred: str | None = None) -> str:
    """``preferred`` when present, else the first fused system, else the first."""
    if not systems:
        raise RankingsError(f"no systems in the ranking; {DETECT_HINT}")
    if preferred:
        if preferred not in systems:
            import difflib

            close = difflib.get_close_matches(preferred, systems, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RankingsError(f"system {preferred!r} is not in the ranking.{hint} Systems: {', '.join(systems)}")
        return preferred
    for name in systems:
        if parse_system(name).fused:
            return name
    return systems[0]


def load_table(ws: Workspace, systems: list[str] | None = None, survey: Path | None = None) -> pa.Table:
    """The ranking as a pyarrow Table (``object_id`` + rank/score of ``systems``, default all).

    Its inputs are checked first (:func:`check_current`, against ``survey`` or the active one)."""
    import pyarrow.parquet as pq

    available = list_systems(ws, survey)
    if systems is None:
        systems = available
    unknown = [s for s in systems if s not in available]
    if unknown:
        raise RankingsError(f"unknown system(s) {', '.join(unknown)}; available: {', '.join(available)}")
    columns = ["object_id"] + [c for s in systems for c in (RANK_PREFIX + s, SCORE_PREFIX + s)]
    path = systems_path(ws)
    try:
        # ParquetFile, not read_table: the same read of one file without importing pyarrow.dataset
        # (0.3 s of CPU on the first call, which the explorer paid on every first open)
        table = pq.ParquetFile(path, memory_map=True).read(columns=columns)
    except Exception as exc:  # noqa: BLE001
        raise RankingsError(f"{path}: cannot read ({exc}); {DETECT_HINT} again") from None
    if table.column("object_id").null_count:
        raise DataError(f"{path}: {table.column('object_id').null_count} rows have no object_id")
    return _checked_types(table, path)


def _checked_types(table: pa.Table, path: Path) -> pa.Table:
    """Ranks integer, scores numeric, object ids text (integer ids are turned into text)."""
    import pyarrow as pa

    for name, ok, expected in (
        *((c, pa.types.is_integer, "integers") for c in table.column_names if c.startswith(RANK_PREFIX)),
        *((c, lambda t: pa.types.is_floating(t) or pa.types.is_integer(t), "numbers")
          for c in table.column_names if c.startswith(SCORE_PREFIX)),
        ("object_id", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t), "text"),
    ):
        if not ok(table.schema.field(name).type):
            raise RankingsError(f"{path}: column {name!r} has type {table.schema.field(name).type}, expected {expected}; "
                                f"{DETECT_HINT} again")
    ids = table.schema.get_field_index("object_id")
    if pa.types.is_integer(table.schema.field(ids).type):
        table = table.set_column(ids, "object_id", table.column(ids).cast(pa.string()))
    return table


def load_rankings(ws: Workspace, systems: list[str] | None = None, survey: Path | None = None) -> pd.DataFrame:
    """The ranking as a pandas DataFrame (one row per object; columns as in the file)."""
    return load_table(ws, systems, survey).to_pandas()


def _check_analysis(ws: Workspace, path: Path, rerun: str) -> None:
    """:class:`StaleRankingError` when an analysis table was made from other inputs than the workspace holds."""
    from fmb_engine import lineage

    try:
        lineage.check_output(ws, path, rerun)
    except StaleError as exc:
        raise StaleRankingError(str(exc)) from None


def comparison_path(ws: Workspace, kind: str) -> Path:
    if kind not in COMPARISONS:
        raise ValueError(f"unknown comparison {kind!r}; expected one of {COMPARISONS}")
    return ws.folder("analysis") / "rankings" / f"{kind}.csv"


def load_comparison(ws: Workspace, kind: str) -> pd.DataFrame:
    """A square system x system matrix (``spearman`` or ``jaccard``)."""
    import pandas as pd

    path = comparison_path(ws, kind)
    if not path.is_file():
        raise RankingsError(f"no {kind} matrix yet: {path} does not exist; {COMPARE_HINT}")
    _check_analysis(ws, path, "fmb-engine analyze rankings")
    try:
        frame = pd.read_csv(path, index_col=0)
    except Exception as exc:  # noqa: BLE001
        raise RankingsError(f"{path}: not a readable CSV matrix ({exc})") from None
    frame.index = frame.index.astype(str)
    frame.columns = frame.columns.astype(str)
    if list(frame.index) != list(frame.columns):
        raise RankingsError(f"{path}: not a square matrix with the same systems as rows and columns")
    return frame.astype(float)


def neighbours_path(ws: Workspace) -> Path:
    return ws.folder("analysis") / "similarity" / NEIGHBOURS_FILE


def load_neighbours(ws: Workspace, object_id: str) -> pd.DataFrame:
    """Nearest neighbours of one object (all models and modalities), ordered by model, modality, rank."""
    import pyarrow.dataset as ds

    path = neighbours_path(ws)
    if not path.is_file():
        raise RankingsError(f"no similarity analysis yet: {path} does not exist; run `fmb-engine analyze similarity`")
    _check_analysis(ws, path, "fmb-engine analyze similarity")
    try:
        table = ds.dataset(path, format="parquet").to_table(filter=ds.field("object_id") == str(object_id))
    except Exception as exc:  # noqa: BLE001
        raise RankingsError(f"{path}: cannot read ({exc})") from None
    return table.to_pandas().sort_values(["model", "modality", "neighbour"], kind="stable").reset_index(drop=True)


__all__ = [
    "COMPARISONS", "MODALITIES", "RankingsError", "StaleRankingError", "check_current", "System", "default_system", "list_systems", "load_comparison",
    "load_neighbours", "load_rankings", "load_table", "parse_system", "system_name", "systems_path",
]
