"""Reading AstroCLIP checkpoints safely, and converting the published Lightning file once.

FMB reads checkpoints only with ``torch.load(weights_only=True)``. The published
``astroclip.ckpt`` is a PyTorch Lightning checkpoint whose ``hyper_parameters`` are
pickled Python objects, which ``weights_only=True`` refuses. Convert it once, on a
file you trust (this step unpickles it and can run code embedded in it)::

    python -m fmb_engine.embed.astroclip.checkpoint astroclip.ckpt astroclip_fmb.pt

and point the embedder at ``astroclip_fmb.pt``. Neither Lightning nor the AstroCLIP
package is needed for the conversion: classes that cannot be imported are replaced
by inert placeholders, and only tensors and plain values are written out.

Converted format (a plain dict, readable with ``weights_only=True``)::

    {"format": "fmb-astroclip/1", "state_dict": {name: tensor},
     "hyper_parameters": {plain values}, "architecture": {...} or None, "source": str}
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path
from typing import Any

import torch

from fmb_engine.errors import ConfigError
from fmb_engine.workspace import atomic_path

FORMAT = "fmb-astroclip/1"
CONVERT_COMMAND = "python -m fmb_engine.embed.astroclip.checkpoint"


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(state_dict, architecture or None) from a checkpoint, read with ``weights_only=True``.

    Accepts FMB's converted format, a plain ``{"state_dict": ...}`` dict, or a bare
    state dict. A file that needs unpickling raises :class:`ConfigError` with the
    conversion command.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        dst = path.with_name(path.stem + "_fmb.pt")
        raise ConfigError(
            f"{path} contains pickled Python objects (a PyTorch Lightning checkpoint's hyper_parameters), "
            "so it cannot be read with weights_only=True. If you trust the file, convert it once:\n"
            f"    {CONVERT_COMMAND} {path} {dst}\n"
            f"and set the AstroCLIP 'checkpoint' to {dst.name} (conversion unpickles the file: only do it "
            "for files from a trusted source)."
        ) from exc
    if not isinstance(obj, dict):
        raise ConfigError(f"{path} is not an AstroCLIP checkpoint (a {type(obj).__name__}, not a dict)")
    if "state_dict" in obj:
        state, arch = obj["state_dict"], obj.get("architecture")
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, arch = obj, None
    else:
        raise ConfigError(f"{path} has no 'state_dict' entry (keys: {sorted(obj)[:10]})")
    return state, arch


def save_checkpoint(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    *,
    hyper_parameters: dict[str, Any] | None = None,
    architecture: dict[str, Any] | None = None,
    source: str = "",
) -> Path:
    """Write FMB's plain AstroCLIP checkpoint (readable with ``weights_only=True``)."""
    path = Path(path)
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    with atomic_path(path) as tmp:
        torch.save(
            {
                "format": FORMAT,
                "state_dict": tensors,
                "hyper_parameters": _plain(hyper_parameters or {}),
                "architecture": _plain(architecture) if architecture is not None else None,
                "source": str(source),
            },
            tmp,
        )
    return path


# --------------------------------------------------------------------------- conversion


class _Placeholder(dict):
    """Stands in for a class that cannot be imported; keeps whatever it was built with.

    A dict subclass so that pickled mappings (e.g. Lightning's ``AttributeDict``) can be
    filled item by item; list-like contents and ``__setstate__`` state are kept too.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__()
        self.args, self.kwargs, self.list_items, self.state = args, kwargs, [], None

    def append(self, item: Any) -> None:
        self.list_items.append(item)

    def extend(self, items: Any) -> None:
        self.list_items.extend(items)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<unavailable {type(self).__name__}>"


class _TolerantUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(f"{module}.{name}", (_Placeholder,), {})


class _TolerantPickle:
    """A ``pickle_module`` for torch.load whose Unpickler tolerates missing classes."""

    Unpickler = _TolerantUnpickler
    load = staticmethod(pickle.load)
    loads = staticmethod(pickle.loads)
    dump = staticmethod(pickle.dump)
    dumps = staticmethod(pickle.dumps)


def _plain(value: Any, depth: int = 0) -> Any:
    """Plain Python (dict/list/str/int/float/bool/None) copy; anything else becomes its repr."""
    if depth > 20:
        return repr(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict) or (hasattr(value, "items") and callable(value.items)):
        try:
            return {str(k): _plain(v, depth + 1) for k, v in value.items()}
        except Exception:  # noqa: BLE001 - a placeholder or odd mapping: keep its text
            return repr(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return repr(value)


def convert_lightning_checkpoint(
    src: str | Path, dst: str | Path, *, architecture: dict[str, Any] | None = None
) -> Path:
    """Convert a (trusted) Lightning AstroCLIP checkpoint to FMB's plain format.

    **This unpickles ``src`` with ``weights_only=False``** and may execute code stored in
    it: call it only on files from a trusted source. The output holds the state dict,
    the hyper-parameters as plain values and the optional ``architecture`` sizes, and
    is read back with ``weights_only=True`` to check it.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ConfigError(f"checkpoint to convert not found: {src}")
    obj = torch.load(src, map_location="cpu", weights_only=False, pickle_module=_TolerantPickle)
    if isinstance(obj, dict) and "state_dict" in obj:
        state, hparams = obj["state_dict"], obj.get("hyper_parameters") or {}
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, hparams = obj, {}
    else:
        raise ConfigError(f"{src} does not look like an AstroCLIP checkpoint (no 'state_dict')")
    save_checkpoint(dst, state, hyper_parameters=hparams, architecture=architecture, source=str(src))
    read_checkpoint(dst)  # must now load with weights_only=True
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=CONVERT_COMMAND,
        description="Convert a trusted AstroCLIP Lightning checkpoint to FMB's weights_only format. "
        "WARNING: this unpickles SRC; use it only on files from a trusted source.",
    )
    parser.add_argument("src", help="Lightning checkpoint, e.g. astroclip.ckpt")
    parser.add_argument("dst", help="output file, e.g. astroclip_fmb.pt")
    args = parser.parse_args(argv)
    try:
        out = convert_lightning_checkpoint(args.src, args.dst)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
