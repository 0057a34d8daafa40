"""What each output was made from, and the check that its inputs are still the ones in the workspace.

Why: every stage reads what an earlier stage wrote. When an input is replaced (a new
survey, a recomputed embedding, a detect run) the outputs built on the old one are
stale, and using them silently gives wrong numbers. So each output records the
identity of its inputs, and every reader compares that record with the inputs the
workspace holds now before use, stopping with :class:`StaleError` (exit 4) that
names the stale file, the input that changed and the command to rerun.

A record maps input keys to identities:

* ``survey``: the digest of the active survey (``general.survey``);
* ``embeddings/<model>.h5``: the embedding file's identity (:func:`embedding_identity`:
  its survey digest, run key, creation time and size, all attributes of the file);
* any other workspace path (score tables, ``scores/systems.parquet``, analysis
  tables): the SHA-256 of the file's bytes.

Beside each file's digest a record keeps its *stamp*, ``[size, mtime_ns]`` when it was
hashed (:func:`stamp`). A check first compares the stamp: a file whose size and
modification time (ns) are the recorded ones is taken as unchanged without reading it
(rsync's quick check); any other file is hashed and its digest compared. Why: the
systems table records ~0.5 GB of score tables and flows at 10^6 objects, and every
reader (each start of the explorer, each re-rank) re-hashed them. Every rewrite FMB
makes writes a new file and renames it over the old (a new mtime), so only a same-size
rewrite in place within the file system's timestamp resolution could pass unseen.

Where records live: an embedding file stores its survey digest (attribute
``survey_digest``); ``scores/systems.parquet`` stores its record in the parquet
metadata (:data:`SYSTEMS_KEY`); analysis outputs have ``lineage.json`` in their folder
(one entry per file). An input that no longer exists, or a record written before
records existed, is not checked (nothing to compare with).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from fmb_engine import manifest
from fmb_engine.errors import DataError, FMBError, StaleError
from fmb_engine.workspace import Workspace, atomic_write_text

#: Parquet metadata key of systems.parquet that holds its inputs.
SYSTEMS_KEY = b"fmb:lineage"
#: Per analysis folder: output file name -> {"inputs": {key: identity}, "stamps": {key: stamp}}.
RECORD_FILE = "lineage.json"
SURVEY = "survey"
#: Record entry beside "inputs": key -> [size, mtime_ns] of the file when its digest was taken.
STAMPS = "stamps"


@functools.lru_cache(maxsize=256)
def _digest(path: str, size: int, mtime_ns: int, inode: int) -> str:
    return manifest.file_digest(path)  # size, mtime and inode only key the cache


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (cached per path, size, mtime and inode: checking twice reads once)."""
    st = os.stat(path)
    return _digest(str(Path(path).absolute()), st.st_size, st.st_mtime_ns, st.st_ino)


def stamp(path: str | os.PathLike[str]) -> list[int]:
    """``[size, mtime_ns]`` of a file: recorded beside its digest, compared before re-hashing it."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def hashed(path: str | os.PathLike[str]) -> tuple[str, list[int] | None]:
    """(digest, stamp) of a file, the stamp taken around the hashing: None when the file changed
    while it was read (then only its digest is recorded and every check re-hashes it)."""
    before = stamp(path)
    digest = file_digest(path)
    return digest, (before if stamp(path) == before else None)


def identify(ws: Workspace, keys: Iterable[str], survey: Path | None = None) -> tuple[dict[str, str], dict[str, list[int]]]:
    """The record of inputs ``keys``: their identities (:func:`identity`, "" for a missing one) and the
    stamps of the plain files among them."""
    inputs, stamps = {}, {}
    for key in keys:
        path = _input_path(ws, key)
        if path is not None and path.is_file() and not _is_embedding(path):
            inputs[key], file_stamp = hashed(path)
            if file_stamp is not None:
                stamps[key] = file_stamp
        else:
            inputs[key] = identity(ws, key, survey) or ""
    return inputs, stamps


def _input_path(ws: Workspace, key: str) -> Path | None:
    if key == SURVEY:
        return None
    return Path(key) if Path(key).is_absolute() else ws.root / key


def _is_embedding(path: Path) -> bool:
    return path.suffix == ".h5" and path.parent.name == "embeddings"


def embedding_identity(path: str | os.PathLike[str]) -> str:
    """Identity of an embedding file from its attributes: another survey, run or recompute gives another one."""
    from fmb_engine.embed.store import EmbeddingReader

    with EmbeddingReader(path) as r:
        fields = {"survey": r.survey_digest, "run_key": r.extra.get("run_key", ""), "created": r.created,
                  "n": r.n_objects, "weights": r.weights_digest, "embedder": r.embedder}
    return "emb:" + hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def survey_digest(path: str | os.PathLike[str]) -> str:
    from fmb_engine.survey.store import SurveyReader

    with SurveyReader(path) as reader:
        return reader.digest


def active_survey(ws: Workspace) -> Path | None:
    """The file of the workspace's active survey (``general.survey``), None when there is none."""
    from fmb_engine.config import load

    try:
        name = load("general", ws).values.survey  # type: ignore[attr-defined]
    except FMBError:
        return None
    path = ws.survey_path(name)
    return path if path.is_file() else None


def key_of(ws: Workspace, path: str | os.PathLike[str]) -> str:
    """The record key of a workspace file: its path relative to the workspace root."""
    path = Path(path).absolute()
    try:
        return path.relative_to(ws.root.absolute()).as_posix()
    except ValueError:
        return str(path)


def identity(ws: Workspace, key: str, survey: Path | None = None) -> str | None:
    """The current identity of input ``key`` (None when that input does not exist now)."""
    if key == SURVEY:
        path = survey if survey is not None else active_survey(ws)
        return survey_digest(path) if path is not None and Path(path).is_file() else None
    path = _input_path(ws, key)
    if path is None or not path.is_file():
        return None
    if _is_embedding(path):
        return embedding_identity(path)
    return file_digest(path)


def _rerun_hint(key: str) -> str:
    if key == SURVEY:
        return "the survey was replaced"
    return f"{key} was rewritten"


def _unchanged(ws: Workspace, key: str, recorded_stamp: object) -> bool:
    """True when input ``key`` still has the size and mtime recorded when it was hashed."""
    path = _input_path(ws, key)
    if path is None or not isinstance(recorded_stamp, list):
        return False
    try:
        return stamp(path) == recorded_stamp
    except OSError:
        return False


def check(ws: Workspace, output: str | os.PathLike[str], inputs: dict[str, str], rerun: str,
          survey: Path | None = None, stamps: dict[str, list[int]] | None = None) -> None:
    """StaleError when an input recorded for ``output`` is not the one the workspace holds now.

    An input whose recorded stamp (:func:`stamp`) still matches is not re-hashed."""
    for key, recorded in inputs.items():
        if stamps and _unchanged(ws, key, stamps.get(key)):
            continue
        now = identity(ws, key, survey)
        if now is not None and recorded and now != recorded:
            raise StaleError(
                f"stale: {key_of(ws, output)} was made from other inputs than the workspace holds now "
                f"({_rerun_hint(key)} after it was made: recorded {recorded[:16]}, now {now[:16]}). "
                f"Rerun `{rerun}`."
            )


def is_survey_free(path: str | os.PathLike[str]) -> bool:
    """True for an embedding file made without a survey (``embed synthetic``): its ``survey_digest``
    names its synthetic population, and no survey is checked against it."""
    from fmb_engine.embed.store import read_meta

    return bool(read_meta(path).extra.get("survey_free"))


def check_embedding(ws: Workspace, path: str | os.PathLike[str], survey: Path | None) -> None:
    """StaleError when an embedding file was made from another survey than ``survey`` (the active one),
    or made without one (a survey-free file does not belong with a survey's)."""
    from fmb_engine.embed.store import read_meta

    if survey is None:
        return
    if is_survey_free(path):
        raise StaleError(
            f"{key_of(ws, path)} is a survey-free synthetic file; it is not scored or compared with the "
            f"embeddings of survey {key_of(ws, survey)}. Choose the runs with -m/--models (detect.models)."
        )
    stored = read_meta(path).survey_digest
    now = survey_digest(survey)
    if stored and stored != now:
        model = Path(path).stem
        raise StaleError(
            f"stale: {key_of(ws, path)} was embedded from another survey (digest {stored[:16]}) than the "
            f"workspace's survey {key_of(ws, survey)} (digest {now[:16]}). Rerun `fmb-engine embed {model}` "
            "(or choose the survey it was made from with --survey / general.survey)."
        )


def check_embeddings(ws: Workspace, paths: Iterable[Path], survey: Path | None) -> None:
    """Every embedding file against the active survey; without one, or when the files are survey-free
    (:func:`is_survey_free`), against each other. Survey-free files and a survey's are never mixed."""
    from fmb_engine.embed.store import read_meta

    paths = list(paths)
    free = [p for p in paths if is_survey_free(p)]
    if free and len(free) < len(paths):
        made = ", ".join(key_of(ws, p) for p in paths if p not in free)
        raise StaleError(f"survey-free synthetic embeddings ({', '.join(key_of(ws, p) for p in free)}) cannot be "
                         f"scored or compared with embeddings made from a survey ({made}): their objects are not "
                         "the same. Choose the runs with -m/--models (detect.models).")
    if survey is not None and not free:
        for path in paths:
            check_embedding(ws, path, survey)
        return
    digests = {p: read_meta(p).survey_digest for p in paths}
    known = {d for d in digests.values() if d}
    if len(known) > 1:
        what = "synthetic populations (seed, size, outlier fraction)" if free else "surveys"
        listing = ", ".join(f"{key_of(ws, p)} ({d if free else d[:16]})" for p, d in digests.items() if d)
        raise StaleError(f"stale: the embedding files were made from different {what}: {listing}. "
                         + ("Generate them with one --seed, --objects and --outlier-fraction, or choose the runs "
                            "with -m/--models." if free else
                            "Re-embed the stale ones on the workspace's survey (`fmb-engine embed MODEL`)."))


# -- records of analysis outputs ------------------------------------------------------------------

def read_records(folder: Path) -> dict[str, dict]:
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable lineage record ({exc}); rerun the analysis that wrote the folder") from None
    return data if isinstance(data, dict) else {}


def write_records(published: Path, target: Path, outputs: Iterable[Path], inputs: dict[str, str],
                  stamps: dict[str, list[int]]) -> Path:
    """Add one entry per output to the records of folder ``published``, written to ``target`` (staged or not):
    its inputs and their stamps (:func:`identify`)."""
    records = read_records(published)
    for out in outputs:
        records[Path(out).name] = {"inputs": dict(inputs), STAMPS: stamps}
    return atomic_write_text(Path(target), json.dumps(records, indent=1, sort_keys=True) + "\n")


def check_output(ws: Workspace, path: str | os.PathLike[str], rerun: str, survey: Path | None = None) -> None:
    """Check an analysis output against its recorded inputs (no record: nothing to check)."""
    path = Path(path)
    entry = read_records(path.parent).get(path.name)
    if entry:
        stamps = entry.get(STAMPS)
        check(ws, path, dict(entry.get("inputs", {})), rerun, survey, stamps if isinstance(stamps, dict) else None)


def systems_json(inputs: dict[str, str], stamps: dict[str, list[int]]) -> bytes:
    """The value of systems.parquet's :data:`SYSTEMS_KEY` metadata."""
    return json.dumps({"inputs": inputs, STAMPS: stamps}, sort_keys=True).encode()


def _systems_value(schema_metadata: dict | None) -> dict | None:
    raw = (schema_metadata or {}).get(SYSTEMS_KEY)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
        return value if isinstance(value, dict) and isinstance(value.get("inputs"), dict) else None
    except ValueError:
        return None


def systems_record(schema_metadata: dict | None) -> dict[str, str] | None:
    """The inputs recorded in systems.parquet's metadata, None for a file written without them."""
    value = _systems_value(schema_metadata)
    return None if value is None else {str(k): str(v) for k, v in value["inputs"].items()}


def systems_stamps(schema_metadata: dict | None) -> dict[str, list[int]]:
    """The stamps recorded beside systems.parquet's inputs ({} for a file written before stamps)."""
    value = _systems_value(schema_metadata) or {}
    stamps = value.get(STAMPS)
    return stamps if isinstance(stamps, dict) else {}
