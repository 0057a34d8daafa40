"""Retrain task ``astropt``: the multimodal AstroPT GPT on image patches + spectrum patches.

As FMB's reference (``retrain_spectra_images.py``), the model is trained **from scratch**
(a fresh upstream ``astropt.model.GPT`` seeded by ``seed``) unless ``weights`` names an
AstroPT checkpoint to continue from; that checkpoint is read with the embedder's safe
loader (``torch.load(weights_only=True)``, strict weights) and its ``model_args`` and
registry define the architecture.

Inputs
    Exactly the AstroPT embedder's :meth:`~fmb_engine.embed.astropt.AstroPTEmbedder.inputs`
    (one embedder instance shares the model), so training and embedding cannot drift:
    FMB layout by default (RGB at 224 px, 16x16 patches flattened channel-first, raster
    order, no per-patch z-score), spectra padded/trimmed to 7781 bins, divided by their
    std, patches of 10. Sequence = image tokens, then spectrum tokens (sorted names).

Loss (upstream ``GPT.forward(inputs, targets)``)
    Targets: ``images = inputs["images"][:, 1:]`` (next patch; the last image token
    predicts the first spectrum patch) and ``spectra = inputs["spectra"]`` (all of them).
    ``loss = (w_img * huber(images) + w_spec * huber(spectra)) / 2``, Huber (delta 1,
    mean over elements) per modality. The weights balance the token counts:
    ``w_img = n_spec / n_img`` and ``w_spec = n_img / n_spec`` (reference: 196 image and
    779 spectrum tokens -> 779/196 and 196/779); ``image_loss_weight`` /
    ``spectrum_loss_weight`` override them. The unweighted per-modality Huber losses are
    logged as ``loss_images`` / ``loss_spectra`` (the reference logged one aggregate, B5).

Optimiser
    Upstream ``GPT.configure_optimizers``: AdamW with betas (0.9, 0.95), weight decay 0.1
    on every parameter with >= 2 dimensions (matmul weights, embeddings), none on biases
    and LayerNorm gains; fused on CUDA. Learning rate: the shared loop's warm-up + cosine
    (lr 6e-4 -> min_lr 6e-5; warm-up ``steps / 15`` unless set, the reference's
    2000 of 30000).

Output
    ``ckpt_final.pt`` (and ``best/ckpt_final.pt``): the upstream checkpoint dict
    ``{model, model_args, modality_registry, iter_num, best_val_loss, config, preprocess}``;
    ``modality_registry`` is upstream's own dataclass object (allowed by the safe loader,
    required by ``astropt.model_utils.load_astropt``). Embed it with ``embed.astropt``:
    ``weights: <folder>``, ``checkpoint: ckpt_final.pt``, ``layout``/``image_size``/
    ``spectrum_length`` as trained (``preprocess`` in the checkpoint lists them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from fmb_engine.errors import ConfigError
from fmb_engine.retrain.config import AstroPTTrainConfig, token_counts
from fmb_engine.retrain.loop import TrainTask
from fmb_engine.survey.batch import SurveyBatch
from fmb_engine.workspace import atomic_path

#: Architecture fields of ``AstroPTTrainConfig`` that a continued checkpoint defines.
ARCH_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "tokeniser", "image_patch_size",
               "spectrum_patch_size")
#: Preprocessing fields passed through to the embedder's config (same names and meaning).
PREPROCESS_FIELDS = ("layout", "image_size", "patch_order", "patch_norm", "spiral", "image_source",
                     "spectrum_length", "spectrum_norm")


class _Progress(nn.Module):
    """Buffers the loop checkpoints with the model, so a resumed run still knows its best val loss."""

    def __init__(self):
        super().__init__()
        self.register_buffer("best_val_loss", torch.tensor(math.inf, dtype=torch.float64))


def _set_dropout(model: nn.Module, p: float) -> None:
    """Dropout ``p`` everywhere in an upstream GPT (modules, flash-attention argument, config)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        if hasattr(module, "dropout") and isinstance(module.dropout, float):
            module.dropout = p  # SelfAttention passes it to scaled_dot_product_attention
    model.config.dropout = p


class Task(TrainTask):
    """Train the AstroPT GPT; see the module docstring."""

    name: ClassVar[str] = "astropt"
    fields: ClassVar[tuple[str, ...]] = ("images", "spectra", "rgb")
    needs: ClassVar[tuple[str, ...]] = ("bands", "spectrum")

    def __init__(self, config: AstroPTTrainConfig, device: str):
        super().__init__(config, device)
        from fmb_engine.embed.astropt import INSTALL_HINT, AstroPTEmbedder, default_registry
        from fmb_engine.embed.config import AstroPTConfig
        from fmb_engine.embed.weights import import_optional

        m = import_optional("astropt.model", "astropt", INSTALL_HINT)
        cfg = config
        if cfg.image_source == "rgb":
            self.fields = ("rgb", "spectra")
        elif cfg.image_source == "bands":
            self.fields = ("images", "spectra")
        embed_cfg = AstroPTConfig(
            device=device, weights=cfg.weights, checkpoint=cfg.checkpoint, repo_id="", subfolder="", loader="safe",
            image_patch_size=cfg.image_patch_size, spectrum_patch_size=cfg.spectrum_patch_size,
            **{k: getattr(cfg, k) for k in PREPROCESS_FIELDS},
        )
        self.embedder = AstroPTEmbedder(embed_cfg)
        if cfg.weights is not None:
            self.init_path: Path | None = self.embedder.config.checkpoint_path()
            self.model = self.embedder.load()  # safe loader, strict weights, modality checks
            self._check_architecture(self.model)
            _set_dropout(self.model, cfg.dropout)
        else:
            self.init_path = None
            gpt_config = m.GPTConfig(
                block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, n_chan=3,
                dropout=cfg.dropout, bias=cfg.bias, attn_type="causal", tokeniser=cfg.tokeniser,
            )
            with contextlib.redirect_stdout(io.StringIO()):  # upstream prints the parameter count
                model = m.GPT(gpt_config, default_registry(m, embed_cfg))
            self.model = self.embedder.attach(model, "<fresh model>")
        reg = self.model.modality_registry
        img, spec = reg.get_config("images"), reg.get_config("spectra")
        self.n_img, self.n_spec = token_counts(cfg.image_size_resolved(), img.patch_size, cfg.spectrum_length,
                                               spec.patch_size)
        img.loss_weight = float(cfg.image_loss_weight or self.n_spec / self.n_img)
        spec.loss_weight = float(cfg.spectrum_loss_weight or self.n_img / self.n_spec)
        self.progress = _Progress()
        self._optimizer: torch.optim.Optimizer | None = None
        self._eval_sum, self._eval_n = 0.0, 0

    def _check_architecture(self, model) -> None:
        """Architecture fields set explicitly in the config must agree with the checkpoint's."""
        reg = model.modality_registry
        actual = {**{k: getattr(model.config, k) for k in ARCH_FIELDS[:6]},
                  "image_patch_size": reg.get_config("images").patch_size,
                  "spectrum_patch_size": reg.get_config("spectra").patch_size}
        clash = [f"{k}: config {getattr(self.config, k)!r}, checkpoint {actual[k]!r}"
                 for k in ARCH_FIELDS if k in self.config.model_fields_set and getattr(self.config, k) != actual[k]]
        if clash:
            raise ConfigError(f"{self.init_path}: the checkpoint defines the architecture; it differs from the "
                              f"config in {'; '.join(clash)} (remove these keys or pick another checkpoint)")

    # -- the TrainTask interface
    def modules(self) -> dict[str, nn.Module]:
        return {"gpt": self.model, "progress": self.progress}

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Upstream's grouping: weight decay on parameters with >= 2 dimensions, none on the rest."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": self.config.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Upstream ``GPT.configure_optimizers`` (AdamW, betas, decay only on >= 2-D parameters, fused on CUDA)."""
        cfg = self.config
        with contextlib.redirect_stdout(io.StringIO()):
            self._optimizer = self.model.configure_optimizers(
                cfg.weight_decay, cfg.lr, tuple(cfg.betas), "cuda" if str(self.device).startswith("cuda") else "cpu"
            )
        return self._optimizer

    def train(self, mode: bool = True) -> None:
        super().train(mode)
        if not mode:  # an evaluation starts: average its losses afresh (for best_val_loss)
            self._eval_sum, self._eval_n = 0.0, 0

    def inputs_and_targets(self, batch: SurveyBatch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The embedder's inputs and the reference targets (next image patch; all spectrum patches)."""
        inputs = self.embedder.inputs(batch)
        return inputs, {"images": inputs["images"][:, 1:], "spectra": inputs["spectra"]}

    def loss(self, batch: SurveyBatch) -> tuple[torch.Tensor, dict[str, float]]:
        inputs, targets = self.inputs_and_targets(batch)
        outputs, loss = self.model(inputs, targets=targets)
        with torch.no_grad():
            metrics = {f"loss_{k}": float(nn.functional.huber_loss(outputs[k].float(), targets[k].float()))
                       for k in ("images", "spectra")}
        if not self.model.training:
            self._eval_sum += float(loss) * len(batch)
            self._eval_n += len(batch)
        return loss, metrics

    def export(self, folder: Path) -> dict[str, Path]:
        """``ckpt_final.pt`` in upstream's checkpoint format, readable with ``weights_only=True``."""
        if folder.name == "best" and self._eval_n:  # the loop exports best/ right after an improving evaluation
            self.progress.best_val_loss.fill_(self._eval_sum / self._eval_n)
        best = float(self.progress.best_val_loss)
        model_args = {k: v for k, v in dataclasses.asdict(self.model.config).items() if k != "modalities"}
        cfg = self.config
        payload = {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "model_args": model_args,
            "modality_registry": self.model.modality_registry,
            "iter_num": self._iterations(),
            "best_val_loss": best if math.isfinite(best) else None,
            "config": cfg.model_dump(mode="json"),
            "preprocess": {**{k: self.embedder.config.resolved(k) for k in ("image_size", "patch_order",
                                                                           "patch_norm", "spiral")},
                           **{k: getattr(cfg, k) for k in ("layout", "image_source", "spectrum_length",
                                                           "spectrum_norm")}},
            "tokens": {"images": self.n_img, "spectra": self.n_spec},
            "init_from": str(self.init_path) if self.init_path else None,
        }
        path = folder / "ckpt_final.pt"
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return {"checkpoint": path}

    def _iterations(self) -> int:
        """Optimiser steps taken (AdamW's own step count; restored with the optimiser on resume)."""
        if self._optimizer is None:
            return 0
        for group in self._optimizer.param_groups:
            for p in group["params"]:
                step = self._optimizer.state.get(p, {}).get("step")
                if step is not None:
                    return int(step)
        return 0
