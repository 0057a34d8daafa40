"""``retrain aion-adapter``: FMB's Euclid<->HSC U-Net adapters around AION-1's frozen image codec.

AION has no Euclid modality, so the AION embedder maps the four Euclid bands to an
HSC-like image with a small U-Net (``EuclidToHSC``) before the AION image codec tokenises
it. This task trains that U-Net, together with its inverse (``HSCToEuclid``), as an
autoencoder whose bottleneck is the frozen codec's discrete token space::

    x       = euclid_preprocess(images, image_size, max_abs)          (B, 4, S, S)
    hsc     = EuclidToHSC(x)                                           (B, 5, S, S)  HSC G,R,I,Z,Y
    hsc_dec = codec.decode(codec.encode(HSCImage(hsc, HSC bands)))     the token round trip
    rec     = HSCToEuclid(bridge(hsc, hsc_dec))                        (B, 4, S, S)
    loss    = MSE(rec, x)

so E2H learns HSC-like images that survive AION's tokeniser and keep the Euclid
information. ``codec_grad`` chooses the bridge: ``ste`` (default, as the reference)
uses the round trip's value with an identity gradient, ``hsc + (hsc_dec - hsc).detach()``,
and runs the codec without autograd; ``full`` backpropagates through the codec's decoder
and encoder (the quantiser's rounding passes its gradient straight through, as in
training AION's codec). Either way the codec's weights are frozen (``requires_grad``
False, eval mode) and are not part of the checkpoints. The codec runs in float32 even
under AMP (its range compression uses ``sinh``).

Two defects of ``polymathic-aion`` 0.0.2 are worked around on the private codec
instance only (nothing global is patched):

* ``ImageCodec.decode`` of HSC bands raises ``AttributeError`` (``RescaleToLegacySurvey.backward``
  calls a missing ``_reverse_zeropoint``). Decoding must undo ``forward``'s division by
  ``10**((27 - 22.5) / 2.5)``, so the instance gets ``_reverse_zeropoint = convert_zeropoint``.
* The codec's per-band ``Clamp`` writes into its input in place, which breaks autograd
  (``full``) and alters the caller's tensor; it is replaced by an out-of-place clamp with
  the same per-band limits (same values).

Outputs (``export``): ``adapters_final.pt`` = ``{"euclid_to_hsc": state_dict,
"hsc_to_euclid": state_dict, "args": {hidden, image_size, max_abs, codec_grad}}`` (CPU
tensors and plain values: ``torch.load(weights_only=True)`` reads it; the AION embedder's
``adapter`` setting points at the folder), and ``sample_grid.png`` (4 rows x 5 columns for
the first validation object: Euclid input, predicted HSC, codec-decoded HSC, reconstructed
Euclid).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fmb_engine.embed.aion import (
    HSC_BANDS,
    INSTALL_HINT,
    UNetAdapter,
    euclid_preprocess,
    load_adapter,
    load_codec,
)
from fmb_engine.embed.config import SNAPSHOT_FILES
from fmb_engine.embed.weights import import_optional, load_strict, resolve_dir, resolve_file
from fmb_engine.errors import ConfigError, DataError
from fmb_engine.retrain.config import AIONAdapterConfig
from fmb_engine.retrain.loop import TrainTask, file_fingerprint
from fmb_engine.survey.batch import SurveyBatch
from fmb_engine.workspace import atomic_path, make_dirs

log = logging.getLogger(__name__)

ADAPTER_FILE = "adapters_final.pt"
GRID_FILE = "sample_grid"


# --------------------------------------------------------------------------- codec helpers


class _OutOfPlaceClamp:
    """Per-band clamp with the limits of aion's ``Clamp``, without writing into its input."""

    def __init__(self, limits: dict[str, float]):
        self.clamp_dict = dict(limits)

    def __call__(self, image: torch.Tensor, bands: list[str]) -> torch.Tensor:
        try:
            lim = torch.tensor([float(self.clamp_dict[b]) for b in bands], dtype=image.dtype, device=image.device)
        except KeyError as exc:
            raise DataError(f"AION image codec has no clamp limit for band {exc.args[0]!r}") from exc
        lim = lim[None, :, None, None]
        return torch.maximum(torch.minimum(image, lim), -lim)


def prepare_codec(codec: nn.Module) -> nn.Module:
    """Freeze ``codec`` and fix aion 0.0.2's HSC decode and in-place clamp on this instance."""
    codec.eval()
    codec.requires_grad_(False)
    rescaler = getattr(codec, "rescaler", None)
    if rescaler is not None and not hasattr(rescaler, "_reverse_zeropoint"):
        # backward multiplies by _reverse_zeropoint(27.0); forward divided by convert_zeropoint(27.0)
        rescaler._reverse_zeropoint = rescaler.convert_zeropoint
    clamp = getattr(codec, "clamp", None)
    if clamp is not None and hasattr(clamp, "clamp_dict"):
        codec.clamp = _OutOfPlaceClamp(clamp.clamp_dict)
    return codec


def codec_roundtrip(codec: nn.Module, hsc: torch.Tensor, differentiable: bool) -> torch.Tensor:
    """HSC flux -> tokens -> decoded HSC flux (same shape when the codec keeps the size).

    ``differentiable`` False: ``codec.decode(codec.encode(...))`` through the integer tokens,
    without autograd. True: the same values via the codec's continuous path
    (``_encode`` -> ``quantizer.quantize`` -> ``_decode``), so gradients reach ``hsc``.
    """
    mods = import_optional("aion.modalities", "aion", INSTALL_HINT)
    image = mods.HSCImage(flux=hsc.float().clone(), bands=list(HSC_BANDS))
    if differentiable:
        z = codec.quantizer.quantize(codec._encode(image))
        decoded = codec._decode(z, bands=list(HSC_BANDS))
    else:
        with torch.no_grad():
            decoded = codec.decode(codec.encode(image), bands=list(HSC_BANDS))
    flux = decoded.flux if hasattr(decoded, "flux") else decoded  # aion 0.0.2 returns an Image
    if tuple(flux.shape) != tuple(hsc.shape):
        raise ConfigError(
            f"retrain aion-adapter: the AION image codec turns a {tuple(hsc.shape[-2:])} image into "
            f"{tuple(flux.shape[-2:])} (it centre-crops to 96 px and downsamples by a power of 2); "
            "set image_size to 96, the size AION's codec was trained on"
        )
    return flux


# --------------------------------------------------------------------------- the task


class Task(TrainTask):
    """Train ``EuclidToHSC`` and ``HSCToEuclid`` through the frozen AION image codec."""

    name: ClassVar[str] = "aion-adapter"
    fields: ClassVar[tuple[str, ...]] = ("images",)
    needs: ClassVar[tuple[str, ...]] = ("bands",)

    def __init__(self, config: AIONAdapterConfig, device: str):
        super().__init__(config, device)
        cfg = config
        mods = import_optional("aion.modalities", "aion", INSTALL_HINT)
        import_optional("safetensors", "aion", INSTALL_HINT)
        # fail on missing weights before anything is built
        self.snapshot = resolve_dir(SNAPSHOT_FILES, weights=cfg.weights, repo_id=cfg.repo_id, what="AION")
        init_path = (
            resolve_file(ADAPTER_FILE, weights=cfg.init, repo_id=None, what="AION adapter init", config_key="init")
            if cfg.init is not None
            else None
        )
        self.e2h = UNetAdapter(4, 5, cfg.hidden)  # seeded by build_task
        self.h2e = UNetAdapter(5, 4, cfg.hidden)
        if init_path is not None:
            self._load_init(init_path)
        self.codec = prepare_codec(load_codec(self.snapshot, mods.HSCImage))
        self.e2h.to(device)
        self.h2e.to(device)
        self.codec.to(device)
        self.init_path = init_path
        self._sample: tuple[np.ndarray, str, bool] | None = None  # (1, 4, H, W), object id, from validation
        log.info("aion-adapter: codec from %s%s", self.snapshot, f", adapters from {init_path}" if init_path else "")

    def _load_init(self, path: Path) -> None:
        e2h, _ = load_adapter(path)  # weights_only=True, strict, checks args.hidden
        hidden = int(e2h.inc.net[0].weight.shape[0])
        if hidden != self.config.hidden:
            raise ConfigError(f"init {path}: the adapters have hidden={hidden} but the config says "
                              f"hidden={self.config.hidden}")
        self.e2h.load_state_dict(e2h.state_dict(), strict=True)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state = ckpt.get("hsc_to_euclid")
        if not isinstance(state, dict) or not state:
            raise ConfigError(f"init {path}: no 'hsc_to_euclid' weights to start the inverse adapter from")
        load_strict(self.h2e, state, f"{path} [hsc_to_euclid]")

    # ------------------------------------------------------------------ TrainTask interface

    def modules(self) -> dict[str, nn.Module]:
        return {"euclid_to_hsc": self.e2h, "hsc_to_euclid": self.h2e}

    def fingerprint(self) -> dict[str, Any]:
        """The frozen codec is not in the checkpoints: a resumed run must find the same one."""
        return file_fingerprint(self.snapshot / "codecs" / "image" / "model.safetensors")

    def parameter_groups(self) -> list[dict[str, Any]]:
        return [{"params": [p for m in (self.e2h, self.h2e) for p in m.parameters() if p.requires_grad]}]

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        params = list(self.codec.parameters())
        out["image_codec"] = {"parameters": sum(p.numel() for p in params),
                              "trainable": sum(p.numel() for p in params if p.requires_grad),
                              "snapshot": str(self.snapshot)}
        return out

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The pipeline of the module docstring on (B, 4, H, W) Euclid bands."""
        cfg: AIONAdapterConfig = self.config
        x = euclid_preprocess(images.to(self.device), cfg.image_size, cfg.max_abs)
        hsc = self.e2h(x)
        device_type = "cuda" if str(self.device).startswith("cuda") else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            hsc32 = hsc.float()
            if cfg.codec_grad == "full":
                bridged = hsc_dec = codec_roundtrip(self.codec, hsc32, differentiable=True)
            else:
                hsc_dec = codec_roundtrip(self.codec, hsc32, differentiable=False)
                bridged = hsc32 + (hsc_dec - hsc32).detach()
        rec = self.h2e(bridged)
        return {"x": x, "hsc": hsc32, "hsc_dec": hsc_dec, "rec": rec}

    def loss(self, batch: SurveyBatch) -> tuple[torch.Tensor, dict[str, float]]:
        if batch.images is None:
            raise DataError("retrain aion-adapter needs the 4 Euclid band images; the batch has none")
        validating = not self.e2h.training
        if self._sample is None or (validating and not self._sample[2]):
            self._sample = (np.array(batch.images[:1], dtype=np.float32), str(batch.object_ids[0]), validating)
        out = self.forward(torch.as_tensor(np.asarray(batch.images), dtype=torch.float32))
        loss = F.mse_loss(out["rec"].float(), out["x"])
        codec_mse = F.mse_loss(out["hsc_dec"].detach(), out["hsc"].detach())
        return loss, {"codec_mse": float(codec_mse)}

    def export(self, folder: Path) -> dict[str, Path]:
        cfg: AIONAdapterConfig = self.config
        make_dirs(folder)
        payload = {
            "euclid_to_hsc": {k: v.detach().cpu().clone() for k, v in self.e2h.state_dict().items()},
            "hsc_to_euclid": {k: v.detach().cpu().clone() for k, v in self.h2e.state_dict().items()},
            "args": {"hidden": int(cfg.hidden), "image_size": int(cfg.image_size),
                     "max_abs": float(cfg.max_abs), "codec_grad": str(cfg.codec_grad)},
        }
        path = folder / ADAPTER_FILE
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        written = {"adapters": path}
        if self._sample is not None:
            written["sample_grid"] = self.sample_grid(folder)
        return written

    # ------------------------------------------------------------------ figure

    def sample_grid(self, folder: Path) -> Path:
        """``sample_grid.png``: Euclid input, predicted HSC, decoded HSC, reconstructed Euclid."""
        from fmb_engine.figures.style import fmb_style, pyplot, save
        from fmb_engine.survey.bands import BANDS

        assert self._sample is not None
        images, object_id, from_val = self._sample
        modes = {name: m.training for name, m in self.modules().items()}
        self.train(False)
        try:
            with torch.no_grad():
                out = self.forward(torch.as_tensor(images))
        finally:
            for name, m in self.modules().items():
                m.train(modes[name])
        rows = [("Euclid input", out["x"], list(BANDS)), ("predicted HSC", out["hsc"], HSC_BANDS),
                ("codec-decoded HSC", out["hsc_dec"], HSC_BANDS), ("reconstructed Euclid", out["rec"], list(BANDS))]
        plt = pyplot()
        with fmb_style():
            fig, axes = plt.subplots(4, 5, figsize=(7.5, 6.2), squeeze=False)
            for r, (label, tensor, names) in enumerate(rows):
                arr = tensor[0].detach().float().cpu().numpy()
                for c in range(5):
                    ax = axes[r][c]
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if c >= arr.shape[0]:
                        ax.axis("off")
                        continue
                    lo, hi = np.percentile(arr[c], [1, 99])
                    ax.imshow(arr[c], origin="lower", cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1e-6)
                    ax.set_title(names[c], fontsize=7)
                    if c == 0:
                        ax.set_ylabel(label, fontsize=7)
            fig.suptitle(f"aion-adapter: {'validation' if from_val else 'training'} object {object_id}", fontsize=8)
            return save(fig, folder / GRID_FILE, formats=("png",), dpi=80)[0]
