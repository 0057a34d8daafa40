"""AstroCLIP embedder: contrastively aligned image and spectrum embeddings (one shared space).

Model: FMB's own torch re-implementation (:mod:`fmb_engine.embed.astroclip.model`) of
PolymathicAI/AstroCLIP (MIT). No optional package is needed.

Inputs
    Images: RGB in [0, 1] (the stored 8-bit composite, or one made from the 4 bands),
    bilinear resize to 144 px. (Upstream trained on Legacy Survey g,r,z with its own
    arcsinh RGB stretch and an H/W swap; FMB fine-tuned on Euclid RGB /255 resized to
    144 without either. ``swap_hw`` reproduces upstream's swap.)
    Spectra: raw flux padded/trimmed to ``spectrum_length``, as (B, L, 1); SpecFormer
    standardises each spectrum itself.

Outputs
    ``image`` and ``spectrum``: L2-normalised 1024-d vectors in the shared CLIP space
    (``aligned`` True: cosine image-vs-spectrum is what the model was trained on).
    ``joint`` = normalise(image + spectrum).

Weights
    ``checkpoint`` (default ``astroclip.ckpt`` of ``polymathic-ai/astroclip``) is read with
    ``torch.load(weights_only=True)`` and loaded strictly. The published Lightning file
    must first be converted once with
    ``python -m fmb_engine.embed.astroclip.checkpoint SRC DST`` (see
    :mod:`fmb_engine.embed.astroclip.checkpoint`). The architecture sizes come from the
    checkpoint's ``architecture`` entry when present, else the published sizes.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import torch

from fmb_engine.embed import preprocess as pp
from fmb_engine.embed.astroclip.checkpoint import read_checkpoint
from fmb_engine.embed.astroclip.model import AstroCLIP, AstroCLIPArchitecture, load_state_strict
from fmb_engine.devices import resolve_device
from fmb_engine.embed.base import Embedder
from fmb_engine.embed.config import AstroCLIPConfig
from fmb_engine.errors import ConfigError
from fmb_engine.survey.batch import SurveyBatch

log = logging.getLogger(__name__)


class AstroCLIPEmbedder(Embedder):
    """AstroCLIP image/spectrum embeddings in one space; see the module docstring."""

    name: ClassVar[str] = "astroclip"

    def __init__(self, config: AstroCLIPConfig | dict[str, Any] | None = None):
        super().__init__(config)
        self._model: AstroCLIP | None = None
        self._device: str | None = None

    def load(self) -> AstroCLIP:
        """Load (once) the model on the configured device."""
        if self._model is None:
            cfg: AstroCLIPConfig = self.config
            path = self.config.checkpoint_path()
            state, arch_dict = read_checkpoint(path)
            arch = AstroCLIPArchitecture.from_dict(arch_dict)
            if cfg.image_size != arch.image_size:
                raise ConfigError(f"image_size {cfg.image_size} differs from the model's {arch.image_size}")
            with torch.random.fork_rng(devices=[]):
                model = AstroCLIP(arch)
            load_state_strict(model, state, str(path))
            n_tok = model.spectrum_encoder.backbone.n_tokens(cfg.spectrum_length)
            if n_tok > arch.spec_max_len:
                raise ConfigError(
                    f"spectrum_length {cfg.spectrum_length} gives {n_tok} tokens, "
                    f"more than SpecFormer's max_len {arch.spec_max_len}"
                )
            self._device = resolve_device(cfg.device)
            self._model = model.eval().to(self._device)
            log.info("AstroCLIP loaded from %s", path)
        return self._model

    def images(self, batch: SurveyBatch) -> torch.Tensor:
        cfg: AstroCLIPConfig = self.config
        x = pp.batch_rgb(batch, cfg.image_size, source=cfg.image_source, antialias=True, device=self._device)
        return x.transpose(-1, -2).contiguous() if cfg.swap_hw else x

    def spectra(self, batch: SurveyBatch) -> torch.Tensor:
        cfg: AstroCLIPConfig = self.config
        flux = pp.pad_or_trim(pp.batch_spectra(batch, self._device), cfg.spectrum_length)
        return pp.normalise_spectra(flux, cfg.spectrum_norm)[..., None]

    def embed(self, batch: SurveyBatch) -> dict[str, np.ndarray]:
        model = self.load()
        cfg: AstroCLIPConfig = self.config
        out: dict[str, list[np.ndarray]] = {m: [] for m in self.modalities}
        for chunk in pp.iter_chunks(batch, cfg.batch_size):
            with torch.no_grad(), pp.autocast(self._device, cfg.amp):
                img = pp.l2_normalise(model.image_encoder(self.images(chunk)).float())
                spec = pp.l2_normalise(model.spectrum_encoder(self.spectra(chunk)).float())
            joint = pp.l2_normalise(img + spec)
            for key, val in (("image", img), ("spectrum", spec), ("joint", joint)):
                out[key].append(val.cpu().numpy().astype(np.float32))
        dim = model.arch.embed_dim
        return {k: np.concatenate(v, axis=0) if v else np.zeros((0, dim), np.float32) for k, v in out.items()}
