"""What `models list`, `models check` and `models download` report and do.

Why: a foundation-model run fails late and obscurely when a package, a weight
file or a GPU is missing. These functions answer "can this embedder run here?"
up front, and say for every failure what to do about it. They never contact
the network except :func:`download`, on explicit request.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from fmb_engine.config import Resolved
from fmb_engine.embed.digests import weight_files
from fmb_engine.errors import ConfigError, FMBError
from fmb_engine.workspace import Workspace, make_dirs


class HubUnreachable(FMBError):
    """The Hugging Face Hub could not be reached (or the file is not in the offline cache)."""


@dataclass(frozen=True)
class Requirements:
    """What an embedder needs beyond the core install."""

    module: str | None = None  # optional package import name
    distribution: str | None = None  # its pip name
    extra: str | None = None  # fmb[extra]
    repo_id_key: str | None = None  # config key holding the Hugging Face repo id
    download_note: str = ""


#: Per embedder: optional package and where its weights come from.
REQUIREMENTS: dict[str, Requirements] = {
    "astropt": Requirements("astropt", "astropt", "astropt", "repo_id"),
    "aion": Requirements(
        "aion", "polymathic-aion", "aion", "repo_id",
        "AION also needs FMB's Euclid->HSC adapter (adapters_final.pt, trained by `retrain aion`); "
        "it is not on the Hub. Set embed.aion.adapter to it.",
    ),
    "astroclip": Requirements(
        None, None, None, "repo_id",
        "Convert the published Lightning checkpoint once: "
        "python -m fmb_engine.embed.astroclip.checkpoint astroclip.ckpt astroclip_fmb.pt, "
        "then set embed.astroclip.checkpoint to astroclip_fmb.pt.",
    ),
}
#: Distributions reported by `models check`.
PACKAGES = ("torch", "numpy", "h5py", "huggingface_hub", "safetensors", "astropt", "polymathic-aion", "einops", "jaxtyping")


@dataclass
class Problem:
    what: str
    fix: str


@dataclass
class ModelStatus:
    name: str
    modalities: tuple[str, ...]
    aligned: bool
    needs_fit: bool
    package: str | None
    package_present: bool
    weights: str  # "not needed", "found", "missing"
    weight_files: list[str] = field(default_factory=list)
    loadable: bool | None = None  # None: not tried
    problems: list[Problem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["problems"] = [p.__dict__ for p in self.problems]
        out["modalities"] = list(self.modalities)
        return out


# --------------------------------------------------------------------------- list / check


def _embedder_config(name: str, ws: Workspace | None, config_file: Path | None, cli: dict | None = None) -> Resolved:
    from fmb_engine.config import load

    return load(f"embed.{name}", ws, config_file, cli or None)


def _status(name: str, ws: Workspace | None, config_file: Path | None, try_load: bool, cli: dict | None = None) -> ModelStatus:
    from fmb_engine.embed.catalog import EMBEDDERS

    info = EMBEDDERS[name]
    req = REQUIREMENTS.get(name, Requirements())
    present = req.module is None or importlib.util.find_spec(req.module) is not None
    st = ModelStatus(name, info.modalities, info.aligned, info.needs_fit, req.distribution, present,
                     "not needed" if info.needs_fit else "missing")
    if not present:
        st.problems.append(Problem(
            f"optional package {req.distribution!r} is not installed",
            f"pip install 'fmb[{req.extra}]' (on a CPU-only machine: see README, install with --no-deps)",
        ))
    if info.needs_fit:
        return st
    resolved = _embedder_config(name, ws, config_file, cli)
    try:
        files = weight_files(resolved.values)
        st.weights = "found"
        st.weight_files = [str(f) for f in files]
    except ConfigError as exc:
        st.problems.append(Problem(str(exc).splitlines()[0], f"fmb-engine models download {name}, or set embed.{name}.weights"
                                   + (f". {req.download_note}" if req.download_note else "")))
        return st
    if try_load and present:
        from fmb_engine.embed import base

        try:
            base.get(name)(resolved.values).load()
            st.loadable = True
        except FMBError as exc:
            st.loadable = False
            st.problems.append(Problem(f"weights found but not loadable: {exc}", _load_fix(name)))
        except Exception as exc:  # a corrupt file or an incompatible package: report, do not crash the check
            st.loadable = False
            st.problems.append(Problem(f"weights found but not loadable: {type(exc).__name__}: {exc}", _load_fix(name)))
    return st


def _load_fix(name: str) -> str:
    return (f"check that the files belong to {name} and the installed package version matches "
            f"(models check shows versions); re-download with `fmb-engine models download {name}`")


def list_models(ws: Workspace | None = None, config_file: Path | None = None) -> list[ModelStatus]:
    """Every registered embedder: modalities, aligned, package and weights presence (nothing loaded)."""
    from fmb_engine.embed.catalog import EMBEDDERS

    return [_status(name, ws, config_file, try_load=False) for name in EMBEDDERS]


def environment() -> dict[str, Any]:
    """torch version, CUDA devices and installed package versions."""
    import torch

    cuda = torch.cuda.is_available()
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    packages = {}
    for dist in PACKAGES:
        try:
            packages[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            packages[dist] = None
    return {"torch": torch.__version__, "cuda_available": cuda, "cuda_version": torch.version.cuda, "devices": devices,
            "packages": packages}


def check_models(
    name: str | None = None, ws: Workspace | None = None, config_file: Path | None = None, load: bool = True,
    cli: dict | None = None,
) -> dict[str, Any]:
    """Environment plus, per embedder (or just ``name``), weight files found and whether they load."""
    from fmb_engine.embed import base

    names = [name] if name else base.names()
    for n in names:
        base.get(n)  # ConfigError for an unknown name
    env = environment()
    problems: list[Problem] = []
    if not env["cuda_available"]:
        problems.append(Problem("no CUDA device visible to torch",
                                "foundation models run on CPU (slowly); on a cluster, run on a GPU node "
                                "(fmb-engine embed ... --slurm) or install a CUDA build of torch"))
    models = [_status(n, ws, config_file, try_load=load, cli=cli if name else None) for n in names]
    return {"environment": env, "problems": problems, "models": models}


# --------------------------------------------------------------------------- download


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def download_plan(name: str, resolved: Resolved) -> dict[str, Any]:
    """(repo_id, allow_patterns, target cache dir) that `models download NAME` uses."""
    from fmb_engine.embed.weights import default_hf_cache

    cfg = resolved.values
    req = REQUIREMENTS.get(name)
    if req is None or req.repo_id_key is None:
        raise ConfigError(f"{name!r} has no weights to download (it is fitted on the survey)")
    repo_id = getattr(cfg, req.repo_id_key)
    if name == "aion":
        from fmb_engine.embed.config import SNAPSHOT_FILES

        patterns = list(SNAPSHOT_FILES)
    else:
        sub = getattr(cfg, "subfolder", "") or ""
        patterns = [f"{sub}/{cfg.checkpoint}" if sub else cfg.checkpoint]
        if name == "astropt" and sub:
            patterns.append(f"{sub}/*.json")
    target = Path(cfg.weights).expanduser() if cfg.weights else default_hf_cache()
    return {"repo_id": repo_id, "allow_patterns": patterns, "cache_dir": target, "note": req.download_note}


def download(
    name: str, ws: Workspace | None = None, config_file: Path | None = None, *, weights: str | None = None,
    revision: str | None = None, offline: bool | None = None,
) -> Path:
    """Fetch an embedder's weights into the configured weights directory (a Hugging Face cache layout).

    ``weights`` overrides ``embed.<name>.weights``; files land under
    ``<weights>/models--<org>--<name>/snapshots/<rev>/``, exactly where the weight
    resolver looks. ``offline`` (default: ``$HF_HUB_OFFLINE``) only resolves from that cache.
    Raises :class:`HubUnreachable` when the Hub cannot be reached or the files are not cached.
    """
    resolved = _embedder_config(name, ws, config_file, {"weights": weights} if weights else None)
    plan = download_plan(name, resolved)
    offline = _offline() if offline is None else offline
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ConfigError("models download needs huggingface_hub: pip install huggingface_hub") from exc
    make_dirs(plan["cache_dir"])
    try:
        path = snapshot_download(
            repo_id=plan["repo_id"], revision=revision, cache_dir=str(plan["cache_dir"]),
            allow_patterns=plan["allow_patterns"], local_files_only=offline,
        )
    except Exception as exc:  # huggingface_hub / httpx raise many types; all mean "not obtained"
        where = "the local cache (offline mode)" if offline else "the Hugging Face Hub"
        raise HubUnreachable(
            f"could not get {plan['repo_id']} ({', '.join(plan['allow_patterns'])}) from {where}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}\n"
            f"Target: {plan['cache_dir']}. On a machine with internet run `fmb-engine models download {name}` "
            f"(or `huggingface-cli download {plan['repo_id']} --cache-dir DIR`) and copy DIR here, then set "
            f"embed.{name}.weights to it."
        ) from None
    missing = [p for p in plan["allow_patterns"] if not any(c in p for c in "*?[") and not (Path(path) / p).is_file()]
    if missing:  # an offline cache hit does not check the files themselves
        raise HubUnreachable(
            f"{plan['repo_id']} snapshot {path} lacks {', '.join(missing)}"
            + (" (offline mode: only the local cache was searched)" if offline else "")
        )
    return Path(path)
