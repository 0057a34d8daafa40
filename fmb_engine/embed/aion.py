"""AION-1 embedder: Euclid bands -> HSC-like image via a trained U-Net adapter, DESI spectrum, AION encoder.

Uses the upstream ``polymathic-aion`` package (0.0.2, MIT; optional extra ``fmb[aion]``).

Pipeline (per batch)
    1. Euclid bands (VIS, Y, J, H): NaN -> 0, each x ``zp_nu / 3631`` (zp_nu: VIS 2835.34,
       Y 1916.10, J 1370.25, H 918.35 -- FMB's "ADU -> nanomaggies"), bilinear resize to
       96 px, clamp to +-100.
    2. AION has no Euclid modality: FMB's trained ``EuclidToHSC`` U-Net (4 -> 5 channels,
       weights ``euclid_to_hsc`` of ``adapters_final.pt``) maps the bands to HSC G,R,I,Z,Y,
       wrapped as ``HSCImage``.
    3. ``DESISpectrum(flux, ivar, mask, wavelength)`` from the store (mask True = bad pixel).
    4. Each modality is tokenised once by its codec, on a *clone* of its flux (the image
       codec modifies its input in place).
    5. Three encoder passes, each over **all** its tokens (``num_encoder_tokens`` = total
       token count; upstream's default of 256 silently drops the spectrum from a joint pass):
       ``joint`` = image + spectrum tokens, ``image`` = image tokens, ``spectrum`` =
       spectrum tokens; each vector is the mean over tokens of ``AION.encode``.

``aligned`` is False: image and spectrum vectors come from the same encoder but from
separate passes over different tokens (with modality embeddings added); AION was trained
for masked token prediction, not to make the two modalities' pooled vectors comparable,
so an image-spectrum cosine has no defined meaning.

Weights (never downloaded): a local snapshot of ``polymathic-ai/aion-base`` (a directory,
or a Hugging Face cache given in ``weights``) with ``config.json``, ``model.safetensors``,
``codecs/{image,spectrum}/{config.json,model.safetensors}``. The transformer is loaded with
``AION.from_pretrained(snapshot_dir, strict=True)``, each codec with
``<Codec>.from_pretrained(snapshot_dir, modality=..., strict=True, **codec_config)``. The
adapter checkpoint is read with ``torch.load(weights_only=True)`` and loaded strictly.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fmb_engine.embed import preprocess as pp
from fmb_engine.devices import resolve_device
from fmb_engine.embed.base import Embedder
from fmb_engine.embed.config import AIONConfig
from fmb_engine.embed.weights import import_optional, load_strict
from fmb_engine.errors import ConfigError, DataError
from fmb_engine.survey.batch import SurveyBatch

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "pip install --no-deps polymathic-aion==0.0.2 && "
    "pip install einops jaxtyping huggingface_hub safetensors scipy tokenizers"
)

#: Euclid AB zero points in Jy, per band of the store (bands.BANDS order).
EUCLID_ZP_NU: dict[str, float] = {"VIS": 2835.34, "NISP_Y": 1916.10, "NISP_J": 1370.25, "NISP_H": 918.35}
HSC_BANDS: list[str] = ["HSC-G", "HSC-R", "HSC-I", "HSC-Z", "HSC-Y"]



# --------------------------------------------------------------------------- adapter U-Net


class DoubleConv(nn.Module):
    """(3x3 conv, BatchNorm, ReLU) twice, stored as ``net.{0,1,3,4}``."""

    def __init__(self, cin: int, cout: int, mid: int | None = None):
        super().__init__()
        mid = mid or cout
        self.net = nn.Sequential(
            nn.Conv2d(cin, mid, 3, padding=1),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Down(nn.Module):
    """2x2 max-pool, then a double conv (``net.0`` pool, ``net.1`` double conv)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.net = nn.Sequential(nn.MaxPool2d(2), DoubleConv(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Up(nn.Module):
    """Bilinear x2 and a 1x1 conv halving the channels (``up``), pad to the skip, concat, double conv."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(cin, cin // 2, kernel_size=1),
        )
        self.conv = DoubleConv(cin, cout, mid=cin // 2)

    def forward(self, low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        low = self.up(low)
        dy, dx = skip.shape[2] - low.shape[2], skip.shape[3] - low.shape[3]
        low = F.pad(low, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, low], dim=1))


class OutConv(nn.Module):
    """Final 1x1 conv (``conv``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UNetAdapter(nn.Module):
    """FMB's small U-Net band adapter, with the same layers and state-dict names as its
    ``SimpleUNet``: ``inc`` -> ``down1``/``down2`` (channels x2 each) -> ``up1``/``up2``
    (with skips) -> ``outc``; ``hidden`` channels at full resolution.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int):
        super().__init__()
        self.inc = DoubleConv(in_channels, hidden)
        self.down1 = Down(hidden, 2 * hidden)
        self.down2 = Down(2 * hidden, 4 * hidden)
        self.up1 = Up(4 * hidden, 2 * hidden)
        self.up2 = Up(2 * hidden, hidden)
        self.outc = OutConv(hidden, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.inc(x)
        s2 = self.down1(s1)
        x = self.down2(s2)
        x = self.up1(x, s2)
        x = self.up2(x, s1)
        return self.outc(x)


def euclid_to_hsc(hidden: int) -> UNetAdapter:
    """The Euclid (VIS, Y, J, H) -> HSC (G, R, I, Z, Y) adapter, 4 -> 5 channels."""
    return UNetAdapter(4, 5, hidden)


def load_adapter(path: Path) -> tuple[UNetAdapter, dict[str, Any]]:
    """Read ``euclid_to_hsc`` from FMB's ``adapters_final.pt`` (weights_only=True), load strictly;
    returns the adapter and the checkpoint's ``args`` (the settings it was trained with)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConfigError(
            f"{path} cannot be read with weights_only=True ({str(exc).splitlines()[0]}); "
            "re-save it as a plain dict of tensors {'euclid_to_hsc': state_dict, ...}"
        ) from exc
    if not isinstance(ckpt, dict) or "euclid_to_hsc" not in ckpt:
        raise ConfigError(f"{path} is not an FMB AION adapter checkpoint (no 'euclid_to_hsc' entry)")
    state = ckpt["euclid_to_hsc"]
    if "inc.net.0.weight" not in state:
        raise ConfigError(
            f"{path}: 'euclid_to_hsc' is not a U-Net adapter (no 'inc.net.0.weight'); "
            "older CNN adapters are not supported"
        )
    hidden = int(state["inc.net.0.weight"].shape[0])
    args = ckpt.get("args") or {}
    if isinstance(args, dict) and args.get("hidden") not in (None, hidden):
        raise ConfigError(f"{path}: args.hidden={args.get('hidden')} but the weights have hidden={hidden}")
    model = euclid_to_hsc(hidden)
    load_strict(model, state, f"{path} [euclid_to_hsc]")
    return model.eval(), dict(args) if isinstance(args, dict) else {}


# --------------------------------------------------------------------------- AION model + codecs


def load_aion(snapshot: Path):
    """``AION.from_pretrained(snapshot, strict=True)`` on a local snapshot directory."""
    aion = import_optional("aion", "aion", INSTALL_HINT)
    import_optional("safetensors", "aion", INSTALL_HINT)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model = aion.AION.from_pretrained(str(snapshot), strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"{snapshot}: AION weights do not match its config.json (strict load): {exc}") from exc
    return model.eval()


def load_codec(snapshot: Path, modality: type):
    """A codec from ``<snapshot>/codecs/<modality.name>/`` (config read here: the hub mixin
    does not see nested config files in a local directory), loaded strictly."""
    cfg_mod = import_optional("aion.codecs.config", "aion", INSTALL_HINT)
    codec_cls = cfg_mod.MODALITY_CODEC_MAPPING[modality]
    cfg_path = snapshot / "codecs" / modality.name / "config.json"
    cfg = json.loads(cfg_path.read_text())
    params = inspect.signature(codec_cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        cfg = {k: v for k, v in cfg.items() if k in params}
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # "config.json not found" for nested codec configs
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            codec = codec_cls.from_pretrained(str(snapshot), modality=modality, strict=True, **cfg)
    except RuntimeError as exc:
        raise ConfigError(
            f"{cfg_path.parent}: codec weights do not match its config.json (strict load): {exc}"
        ) from exc
    finally:
        hub_log.setLevel(level)
    return codec.eval()


# --------------------------------------------------------------------------- embedder


def euclid_preprocess(images, size: int, max_abs: float):
    """(B, 4, H, W) Euclid bands -> scaled, resized, clamped (B, 4, size, size)."""
    from fmb_engine.survey.bands import BANDS

    x = torch.nan_to_num(images.float(), nan=0.0, posinf=0.0, neginf=0.0)
    scale = torch.tensor([EUCLID_ZP_NU[b] / 3631.0 for b in BANDS], dtype=x.dtype, device=x.device)
    x = x * scale[None, :, None, None]
    x = pp.resize(x, size, antialias=False)
    return x.clamp(-max_abs, max_abs)


class AIONEmbedder(Embedder):
    """AION-1 mean-pooled encoder embeddings; see the module docstring."""

    name: ClassVar[str] = "aion"

    def __init__(self, config: AIONConfig | dict[str, Any] | None = None):
        super().__init__(config)
        self._parts: dict[str, Any] | None = None
        self._device: str | None = None

    def _adopt_training_scale(self, trained: dict[str, Any], path: Path) -> None:
        """The adapter only knows inputs clamped as in its training: use its ``max_abs``. A
        different training ``image_size`` changes the pixel scale it saw, which is worth a warning
        but not a change (the size fed to AION is fixed by its image tokens)."""
        cfg: AIONConfig = self.config
        max_abs = trained.get("max_abs")
        if isinstance(max_abs, (int, float)) and float(max_abs) != cfg.max_abs:
            log.warning("%s was trained with max_abs=%s; using it instead of the configured %s", path, max_abs,
                        cfg.max_abs)
            self.config = cfg.model_copy(update={"max_abs": float(max_abs)})
        size = trained.get("image_size")
        if isinstance(size, int) and size != cfg.image_size:
            log.warning("%s was trained on %d px images; embedding at %d px", path, size, cfg.image_size)

    def load(self) -> dict[str, Any]:
        """Load (once) the transformer, both codecs and the adapter."""
        if self._parts is None:
            mods = import_optional("aion.modalities", "aion", INSTALL_HINT)
            snapshot = self.config.snapshot_dir()
            adapter_path = self.config.adapter_path(snapshot)
            model = load_aion(snapshot)
            image_codec = load_codec(snapshot, mods.HSCImage)
            spectrum_codec = load_codec(snapshot, mods.DESISpectrum)
            adapter, trained = load_adapter(adapter_path)
            self._adopt_training_scale(trained, adapter_path)
            for key in (mods.HSCImage.token_key, mods.DESISpectrum.token_key):
                if key not in model.encoder_embeddings:
                    raise ConfigError(f"{snapshot}: the AION model has no encoder input {key!r}")
            dev = resolve_device(self.config.device)
            self._device = dev
            self._parts = {
                "model": model.to(dev),
                "image_codec": image_codec.to(dev),
                "spectrum_codec": spectrum_codec.to(dev),
                "adapter": adapter.to(dev),
                "mods": mods,
            }
            log.info("AION loaded from %s (adapter %s)", snapshot, adapter_path)
        return self._parts

    def tokens(self, batch: SurveyBatch) -> dict[str, Any]:
        """Codec tokens ``{token_key: (B, N) long}`` of the image and the spectrum of ``batch``."""
        parts = self.load()
        cfg: AIONConfig = self.config
        mods, dev = parts["mods"], self._device
        if batch.images is None:
            raise DataError("AION needs the 4 Euclid band images; the batch has none")
        euclid = euclid_preprocess(pp.to_tensor(batch.images, dev), cfg.image_size, cfg.max_abs)
        with torch.no_grad():
            hsc = parts["adapter"](euclid)
            image = mods.HSCImage(flux=hsc.clone(), bands=list(HSC_BANDS))
            tok_img = parts["image_codec"].encode(image)

            flux = pp.batch_spectra(batch, dev)
            b, n = flux.shape
            ivar = pp.to_tensor(batch.ivar, dev) if batch.ivar is not None else torch.ones_like(flux)
            mask = (
                torch.as_tensor(np.asarray(batch.mask), dtype=torch.bool, device=dev)
                if batch.mask is not None
                else torch.zeros_like(flux, dtype=torch.bool)
            )
            wave = torch.as_tensor(batch.wavelength, dtype=torch.float32, device=dev)[None].expand(b, n).contiguous()
            spectrum = mods.DESISpectrum(flux=flux.clone(), ivar=ivar.clone(), mask=mask.clone(), wavelength=wave)
            tok_spec = parts["spectrum_codec"].encode(spectrum)
        return {mods.HSCImage.token_key: tok_img, mods.DESISpectrum.token_key: tok_spec}

    def encode(self, tokens: dict[str, Any]):
        """Mean over all tokens of ``AION.encode`` (num_encoder_tokens = total token count)."""
        model = self.load()["model"]
        total = sum(int(t.shape[1]) if t.dim() == 2 else 1 for t in tokens.values())
        with torch.no_grad(), pp.autocast(self._device, self.config.amp):
            out = model.encode(tokens, num_encoder_tokens=total)
        return out.float().mean(dim=1)

    def embed(self, batch: SurveyBatch) -> dict[str, np.ndarray]:
        parts = self.load()
        mods = parts["mods"]
        ik, sk = mods.HSCImage.token_key, mods.DESISpectrum.token_key
        out: dict[str, list[np.ndarray]] = {m: [] for m in self.modalities}
        for chunk in pp.iter_chunks(batch, self.config.batch_size):
            tok = self.tokens(chunk)
            views = {"joint": {ik: tok[ik], sk: tok[sk]}, "image": {ik: tok[ik]}, "spectrum": {sk: tok[sk]}}
            for key, view in views.items():
                out[key].append(self.encode(view).cpu().numpy().astype(np.float32))
        dim = int(parts["model"].dim) if hasattr(parts["model"], "dim") else 0
        return {k: np.concatenate(v, axis=0) if v else np.zeros((0, dim), np.float32) for k, v in out.items()}
