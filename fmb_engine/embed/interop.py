"""Import and export of the reference system's embedding files (``.pt`` list of dicts).

Why: embeddings already computed by the reference system (on a GPU cluster)
should not have to be recomputed, and its analysis scripts should be able to
read ours. Format (parity notes §4.4): ``torch.save(list[dict])``, one dict per
object with ``object_id`` (str or int), optional ``targetid`` and ``redshift``, and
1-D tensors under per-family keys (:mod:`fmb_engine.embed.keys`).

Safety: files are read with ``torch.load(weights_only=True)`` only. A file that
holds anything but tensors and plain containers (NumPy arrays, custom classes)
is refused with a :class:`~fmb_engine.errors.DataError`; FMB never unpickles
arbitrary objects.

Decisions (reference bugs, parity notes §9):
* ids: ``object_id`` when present and not None, else ``targetid`` (L13: the reference's
  ``object_id or targetid`` also replaced an id of 0); the fallback is counted.
* a record missing a key that other records have gets a NaN row flagged invalid
  (``missing_<key>``) instead of silently shifting later rows (L5);
* a missing joint is *not* synthesised by concatenation (L3): only the modalities
  present in the file are imported.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fmb_engine.embed import keys as K
from fmb_engine.embed.store import EmbeddingMeta, EmbeddingReader, write_embeddings
from fmb_engine.errors import DataError
from fmb_engine.manifest import versions
from fmb_engine.workspace import atomic_path

MODALITY_ORDER = ("image", "spectrum", "joint")


@dataclass
class ReferenceEmbeddings:
    """Vectors read from a reference file, keyed by FMB modality."""

    object_ids: np.ndarray  # (N,) str
    vectors: dict[str, np.ndarray]  # modality -> (N, D) float32
    valid: dict[str, np.ndarray]
    reasons: np.ndarray  # (N,) str
    family: str
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # targetid, redshift when present
    counts: dict[str, int] = field(default_factory=dict)


def _load_safely(path: Path) -> Any:
    import torch

    if not path.is_file():
        raise DataError(f"reference embedding file not found: {path}")
    with open(path, "rb") as fh:
        head = fh.read(2)
    if not zipfile.is_zipfile(path) and head[:1] != b"\x80":  # neither torch's zip format nor a legacy pickle
        raise DataError(f"{path}: not a readable torch file (neither a torch.save zip archive nor a pickle)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "Unsupported global" in ln or "Unsupported operand" in ln), lines[0] if lines else "")
        detail = detail.split(" was not an allowed global")[0].replace("WeightsUnpickler error: ", "")
        raise DataError(
            f"{path}: the file holds pickled Python objects other than tensors and plain containers "
            f"({detail[:300]}). FMB reads embedding files with torch.load(weights_only=True) "
            "only and never unpickles arbitrary objects. If the file is yours and trusted, re-save it with plain "
            "values: e.g. records = torch.load(f, weights_only=False); then convert NumPy arrays/scalars to "
            "tensors/int/float/str and torch.save(records, f2)."
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise DataError(f"{path}: not a readable torch file ({type(exc).__name__}: {exc})") from None


def _scalar(value: Any) -> Any:
    """Python scalar of a tensor / bytes / plain value (None stays None)."""
    if value is None:
        return None
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value


def _records(obj: Any, path: Path) -> list[Mapping[str, Any]]:
    if isinstance(obj, dict):
        ids = obj.get("object_id")
        if isinstance(ids, (list, tuple)) and len(ids) != 1:  # columnar: {key: (N, D) tensor, object_id: [..]}
            n = len(ids)
            cols = {k: v for k, v in obj.items()}
            return [{k: (v[i] if hasattr(v, "__len__") and len(v) == n else v) for k, v in cols.items()} for i in range(n)]
        return [obj]
    if isinstance(obj, (list, tuple)):
        if obj and not all(isinstance(r, dict) for r in obj):
            bad = next(r for r in obj if not isinstance(r, dict))
            raise DataError(f"{path}: expected a list of dicts, found an item of type {type(bad).__name__}")
        return list(obj)
    raise DataError(f"{path}: expected a list of per-object dicts (or one dict), got {type(obj).__name__}")


def _vector(value: Any, path: Path, i: int, key: str) -> np.ndarray:
    """One record's embedding as a flat float32 array; DataError naming the record and key otherwise."""
    import torch

    try:
        return torch.as_tensor(value).detach().to(torch.float32).reshape(-1).numpy()
    except (TypeError, ValueError, RuntimeError):
        raise DataError(f"{path}: record {i}: {key} is a {type(value).__name__}, expected a tensor or a list of numbers") from None


def read_reference_pt(path: str | Path, family: str | None = None) -> ReferenceEmbeddings:
    """Read a reference ``.pt`` file into arrays (safe loading; see the module docstring)."""
    path = Path(path)
    records = _records(_load_safely(path), path)
    if not records:
        raise DataError(f"{path}: the file holds no records")
    all_keys: set[str] = set()
    for rec in records:
        all_keys.update(rec)
    present = sorted(k for k in all_keys if k in K.KEY_TO_MODALITY)
    try:
        family = family or K.detect_family(present)
    except DataError as exc:
        raise DataError(f"{path}: {exc}; record keys found: {', '.join(sorted(map(str, all_keys)))}") from None
    wanted = {K.FAMILIES[family][m]: m for m in MODALITY_ORDER if K.FAMILIES[family][m] in all_keys}
    foreign = [k for k in present if k not in wanted]
    if foreign:
        raise DataError(f"{path}: keys {foreign} do not belong to the {family!r} key family {K.FAMILIES[family]}")
    if not wanted:
        raise DataError(f"{path}: no embedding key of the {family!r} family {sorted(K.FAMILIES[family].values())}; "
                        f"record keys found: {', '.join(sorted(map(str, all_keys)))}")
    n = len(records)
    dims: dict[str, int] = {}
    for key in wanted:
        first = next(i for i, r in enumerate(records) if r.get(key) is not None)
        dims[key] = int(_vector(records[first][key], path, first, key).size)
    vectors = {m: np.full((n, dims[k]), np.nan, np.float32) for k, m in wanted.items()}
    valid = {m: np.ones(n, bool) for m in wanted.values()}
    reasons = np.full(n, "", dtype=object)
    ids = np.empty(n, dtype=object)
    targetid = np.full(n, -1, np.int64)
    redshift = np.full(n, np.nan, np.float32)
    has_tid = has_z = False
    from_targetid = 0
    for i, rec in enumerate(records):
        oid = _scalar(rec.get("object_id"))
        if oid is None or (isinstance(oid, str) and not oid.strip()):
            oid = _scalar(rec.get("targetid"))
            from_targetid += 1
            if oid is None:
                raise DataError(f"{path}: record {i} has neither object_id nor targetid")
        ids[i] = str(oid).strip()
        tid = _scalar(rec.get("targetid"))
        if tid is not None:
            try:
                targetid[i] = int(tid)
                has_tid = True
            except (TypeError, ValueError):
                pass
        z = _scalar(rec.get("redshift"))
        if z is not None:
            try:
                redshift[i] = float(z)
                has_z = True
            except (TypeError, ValueError):
                pass
        why = []
        for key, mod in wanted.items():
            value = rec.get(key)
            if value is None:
                valid[mod][i] = False
                why.append(f"missing_{key}")
                continue
            vec = _vector(value, path, i, key)
            if vec.size != dims[key]:
                raise DataError(f"{path}: record {i} ({ids[i]}): {key} has {vec.size} values, the first record {dims[key]}")
            vectors[mod][i] = vec
            if not np.isfinite(vec).all():
                valid[mod][i] = False
                why.append(f"non_finite_{mod}")
        reasons[i] = ";".join(why)
    uniq, counts = np.unique(ids.astype(str), return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{path}: object_id {uniq[counts > 1][0]!r} occurs {counts[counts > 1][0]} times; ids must be unique")
    columns: dict[str, np.ndarray] = {}
    if has_tid:
        columns["targetid"] = targetid
    if has_z:
        columns["redshift"] = redshift
    order = [m for m in MODALITY_ORDER if m in vectors]
    return ReferenceEmbeddings(
        ids, {m: vectors[m] for m in order}, {m: valid[m] for m in order}, reasons, family, columns,
        {"records": n, "id_from_targetid": from_targetid, "not_valid": int((reasons != "").sum())},
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def import_reference_pt(
    path: str | Path, output: str | Path, *, model: str | None = None, aligned: bool | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Convert a reference ``.pt`` file into an FMB embedding file at ``output``.

    ``model`` (e.g. ``astroclip``) names the embedder that produced the file: it
    picks the key family and, from the registry, whether image and spectrum are
    aligned (``aligned`` overrides; unknown models count as not aligned).
    """
    path = Path(path)
    family = K.family_of(model) if model else None
    ref = read_reference_pt(path, family)
    name = model or ref.family
    if aligned is None:
        from fmb_engine.embed.catalog import EMBEDDERS

        aligned = name in EMBEDDERS and EMBEDDERS[name].aligned
    meta = EmbeddingMeta(
        embedder=name, aligned=aligned, modalities=tuple(ref.vectors), config={"imported_from": str(path)},
        weights_digest="", survey_digest="", versions=versions(),
        extra={"source": str(path), "source_sha256": _sha256(path), "key_family": ref.family, "import": ref.counts},
    )
    out = write_embeddings(output, ref.object_ids, ref.vectors, meta, valid=ref.valid, reasons=ref.reasons,
                           columns=ref.columns)
    return out, {"objects": len(ref.object_ids), "modalities": list(ref.vectors), "family": ref.family} | ref.counts


def export_reference_pt(
    store_path: str | Path, out: str | Path, model_family: str | None = None, *, survey: str | Path | None = None,
) -> Path:
    """Write an FMB embedding file as the reference format (one dict per object, 1-D float32 tensors).

    ``model_family`` picks the keys (default: the file's embedder, ``generic`` names for
    pca/cca). ``targetid``/``redshift`` come from the file's carried columns, else from the
    survey (``survey`` or the file's recorded survey path) when it can be read.
    """
    import torch

    with EmbeddingReader(store_path) as r:
        family = model_family or K.family_of(r.embedder)
        if family not in K.FAMILIES:
            raise DataError(f"unknown key family {family!r}; families: {', '.join(K.FAMILIES)}")
        vectors = r.load_all()
        ids = r.object_ids
        cols = r.columns()
        survey_path = Path(survey) if survey else (Path(r.survey_path) if r.survey_path else None)
        rows = r.rows()
    if ("targetid" not in cols or "redshift" not in cols) and survey_path is not None and survey_path.exists() and (rows >= 0).all():
        from fmb_engine.survey.store import SurveyReader

        with SurveyReader(survey_path) as s:
            table = s.table()
            cols.setdefault("targetid", table["targetid"].to_numpy()[rows])
            cols.setdefault("redshift", table["redshift"].to_numpy()[rows])
    keys = {m: K.reference_key(family, m) for m in vectors}
    tensors = {m: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for m, v in vectors.items()}
    records = []
    for i, oid in enumerate(ids):
        rec: dict[str, Any] = {"object_id": str(oid)}
        if "targetid" in cols:
            rec["targetid"] = int(cols["targetid"][i])
        if "redshift" in cols:
            rec["redshift"] = float(cols["redshift"][i])
        for m, t in tensors.items():
            rec[keys[m]] = t[i].clone()  # own storage per record, as the reference files have
        records.append(rec)
    with atomic_path(out) as tmp:
        torch.save(records, tmp)
    return Path(out)
