"""The one torch-device resolver of every stage (embed, detect, retrain).

Light at import: torch is imported only when a device is resolved, so config schemas and
the CLI can name this module without loading torch.
"""

from __future__ import annotations

from fmb_engine.errors import ConfigError

_VALID = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; an explicit device is checked.

    Raises :class:`ConfigError` for a name that is not cpu/cuda[:N], or for CUDA without a GPU.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device must be {_VALID}, got {device!r}") from exc
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"device must be {_VALID}, got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but torch sees no CUDA device; use device: auto or cpu")
    return device
