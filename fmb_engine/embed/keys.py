"""Modality names <-> the reference system's embedding keys, in one place.

FMB calls the three vectors of an object ``image``, ``spectrum`` and ``joint``
everywhere. The reference system stored them under per-model keys of a
``.pt`` list of dicts (parity notes §4.4). Each family's mapping is written out
here exactly once, and every reader and writer of the reference format goes
through it.

This also fixes reference bug L1: its fusion step guessed the modality from
key substrings, so AION's joint key ``embedding_hsc_desi`` (it contains
"hsc") was counted as an image. Here a key maps to a modality only through
this table.
"""

from __future__ import annotations

from collections.abc import Iterable

from fmb_engine.errors import DataError

#: family -> {modality: reference key}. ``generic`` (the AstroPT/AstroCLIP naming)
#: is used for embedders the reference system never had (pca, cca, ...).
FAMILIES: dict[str, dict[str, str]] = {
    "aion": {"image": "embedding_hsc", "spectrum": "embedding_spectrum", "joint": "embedding_hsc_desi"},
    "astropt": {"image": "embedding_images", "spectrum": "embedding_spectra", "joint": "embedding_joint"},
    "astroclip": {"image": "embedding_images", "spectrum": "embedding_spectra", "joint": "embedding_joint"},
    "generic": {"image": "embedding_images", "spectrum": "embedding_spectra", "joint": "embedding_joint"},
}

#: Default file names the reference system's consumers looked for (typo "aions" included).
REFERENCE_FILES: dict[str, str] = {
    "aion": "aions_embeddings.pt",
    "astropt": "astropt_embeddings.pt",
    "astroclip": "embeddings_astroclip.pt",
    "generic": "embeddings.pt",
}

#: Every reference key -> modality. The union is unambiguous: the same key never
#: means two modalities in two families.
KEY_TO_MODALITY: dict[str, str] = {key: mod for fam in FAMILIES.values() for mod, key in fam.items()}

#: Per-object metadata keys of the reference records (not vectors).
META_KEYS: tuple[str, ...] = ("object_id", "targetid", "redshift")


def family_of(model: str) -> str:
    """The key family of an embedder (``astropt``, ``aion``, ``astroclip``) or ``generic``."""
    return model if model in FAMILIES else "generic"


def reference_key(family: str, modality: str) -> str:
    """Reference key of ``modality`` in ``family`` (``family_of`` first for embedder names)."""
    if family not in FAMILIES:
        raise DataError(f"unknown key family {family!r}; families: {', '.join(FAMILIES)}")
    mapping = FAMILIES[family]
    if modality not in mapping:
        raise DataError(f"unknown modality {modality!r}; modalities: {', '.join(mapping)}")
    return mapping[modality]


def modality_of(key: str) -> str:
    """Modality of a reference key; DataError for a key no family uses."""
    try:
        return KEY_TO_MODALITY[key]
    except KeyError:
        raise DataError(
            f"unknown embedding key {key!r}; known keys: {', '.join(sorted(KEY_TO_MODALITY))}"
        ) from None


def detect_family(keys: Iterable[str]) -> str:
    """Family whose keys appear in a record: ``aion`` when any AION key is present, else ``generic``."""
    present = set(keys)
    if present & set(FAMILIES["aion"].values()):
        return "aion"
    if present & set(FAMILIES["generic"].values()):
        return "generic"
    raise DataError(
        f"no embedding key found among {sorted(present)}; expected one of {', '.join(sorted(KEY_TO_MODALITY))}"
    )
