"""Where pretrained weights live on disk: one resolver shared by every embedder.

FMB never downloads weights and never falls back to random weights. An
embedder names the files it needs (relative to a model repository, e.g.
``config.json`` and ``codecs/image/model.safetensors``) and the resolver looks
for them, in this order:

1. ``weights`` (the embedder config field) as a plain directory: ``<weights>/<subfolder>/<file>``
   and ``<weights>/<file>``; when ``weights`` is a file, that file itself (single-file models).
2. ``weights`` as a Hugging Face cache: ``<weights>/models--<org>--<name>/snapshots/<rev>/...``,
   also under ``<weights>/hub/`` (an ``HF_HOME``) and with ``weights`` pointing at the
   ``models--<org>--<name>`` folder itself. ``refs/main`` is preferred, then the newest snapshot.
3. Only when ``weights`` is unset: the default local Hugging Face cache (``HF_HUB_CACHE``,
   else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``), read in place, offline.

When nothing matches, :class:`~fmb_engine.errors.ConfigError` names the missing
file(s) and every place that was searched.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fmb_engine.errors import ConfigError


@dataclass
class _Search:
    """Candidate directories tried so far and what each lacked (for the error message)."""

    tried: list[tuple[Path, list[str]]] = field(default_factory=list)

    def check(self, directory: Path, required: Sequence[str]) -> bool:
        missing = [name for name in required if not (directory / name).is_file()]
        self.tried.append((directory, missing))
        return not missing


def default_hf_cache() -> Path:
    """The local Hugging Face hub cache huggingface_hub itself would use (never contacted)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _repo_folder(repo_id: str) -> str:
    return "models--" + repo_id.replace("/", "--")


def _snapshots(repo_dir: Path) -> list[Path]:
    """Snapshot folders of one cached repo: refs/main first, then newest first."""
    snap_root = repo_dir / "snapshots"
    if not snap_root.is_dir():
        return []
    ordered: list[Path] = []
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        rev = ref.read_text().strip()
        if rev and (snap_root / rev).is_dir():
            ordered.append(snap_root / rev)
    others = sorted(
        (p for p in snap_root.iterdir() if p.is_dir() and p not in ordered),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    return ordered + others


def _cache_candidates(cache_root: Path, repo_id: str | None, subfolder: str) -> list[tuple[Path, bool]]:
    """(directory, exists-as-snapshot) pairs to try inside a Hugging Face cache at ``cache_root``.

    A repo folder without any snapshot still yields its expected location, flagged
    False, so the error message shows where the files were expected.
    """
    repo_dirs: list[Path] = []
    if cache_root.name.startswith("models--"):
        repo_dirs.append(cache_root)
    elif repo_id:
        repo_dirs += [cache_root / _repo_folder(repo_id), cache_root / "hub" / _repo_folder(repo_id)]
    out: list[tuple[Path, bool]] = []
    for repo_dir in repo_dirs:
        snaps = _snapshots(repo_dir)
        if not snaps:
            out.append((repo_dir / "snapshots" / "<revision>" / subfolder, False))
        for snap in snaps:
            out.append((snap / subfolder if subfolder else snap, True))
    return out


def resolve_dir(
    required: Sequence[str],
    *,
    weights: str | os.PathLike[str] | None,
    repo_id: str | None,
    subfolder: str = "",
    what: str = "model",
    config_key: str = "weights",
) -> Path:
    """Return the first directory holding every file in ``required`` (paths relative to it).

    ``repo_id`` is the Hugging Face repository the files come from (used only to find
    them in a local cache); ``subfolder`` is their folder inside that repository.
    Raises :class:`ConfigError` naming the missing files and every location searched.
    """
    if not required:
        raise ValueError("resolve_dir needs at least one required file")
    search = _Search()
    candidates: list[tuple[Path, bool]] = []
    if weights is not None:
        root = Path(weights).expanduser()
        if root.is_file():
            root = root.parent
        if subfolder:
            candidates.append((root / subfolder, True))
        candidates.append((root, True))
        candidates += _cache_candidates(root, repo_id, subfolder)
    else:
        candidates += _cache_candidates(default_hf_cache(), repo_id, subfolder)

    seen: set[Path] = set()
    for cand, real in candidates:
        if cand in seen:
            continue
        seen.add(cand)
        if not real:
            search.tried.append((cand, list(required)))
        elif search.check(cand, required):
            return cand
    raise ConfigError(_not_found_message(required, search, weights, repo_id, what, config_key))


def resolve_file(
    filename: str,
    *,
    weights: str | os.PathLike[str] | None,
    repo_id: str | None,
    subfolder: str = "",
    what: str = "model",
    config_key: str = "weights",
) -> Path:
    """Return the path of one weight file; ``weights`` may also point at the file itself."""
    if weights is not None:
        direct = Path(weights).expanduser()
        if direct.is_file():
            return direct
    directory = resolve_dir(
        [filename], weights=weights, repo_id=repo_id, subfolder=subfolder, what=what, config_key=config_key
    )
    return directory / filename


def _not_found_message(
    required: Sequence[str],
    search: _Search,
    weights: str | os.PathLike[str] | None,
    repo_id: str | None,
    what: str,
    config_key: str,
) -> str:
    files = ", ".join(repr(r) for r in required)
    lines = [f"{what} weights not found: need {files}. Looked in:"]
    for directory, missing in search.tried:
        lack = ", ".join(missing)
        lines.append(f"  - {directory}  (missing: {lack})")
    if weights is not None and not Path(weights).expanduser().exists():
        lines.append(f"'{config_key}' = {weights} does not exist.")
    if weights is None:
        lines.append(
            f"'{config_key}' is not set, so only the default Hugging Face cache ({default_hf_cache()}) was searched."
        )
    hint = f"Set '{config_key}' to a local directory holding these files"
    if repo_id:
        hint += f", or to a Hugging Face cache that holds {repo_id}"
    hint += ". FMB never downloads weights and never falls back to random weights."
    lines.append(hint)
    return "\n".join(lines)


def import_optional(module: str, extra: str, install_hint: str = ""):
    """Import ``module`` or raise :class:`ConfigError` telling how to install the optional extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"the {extra} embedder needs the optional package providing {module!r} ({exc}). "
        msg += f"Install the optional extra: pip install fmb[{extra}]"
        if install_hint:
            msg += f" (CPU-only torch: {install_hint})"
        raise ConfigError(msg) from exc


def load_strict(model, state: dict, where: Path | str) -> None:
    """``load_state_dict(strict=True)`` with a ConfigError naming ``where`` and listing the
    missing and unexpected keys (never a silent partial load)."""
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ConfigError(
            f"{where}: weights do not match the model; missing keys: {missing[:20]}"
            f"{' ...' if len(missing) > 20 else ''}; unexpected keys: {unexpected[:20]}"
            f"{' ...' if len(unexpected) > 20 else ''}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"{where}: weights do not match the model: {exc}") from exc
