"""AstroCLIP contrastive fine-tune of the projection heads (``fmb-engine retrain astroclip-heads``).

Starts from an AstroCLIP checkpoint (FMB's pure-torch model, :mod:`fmb_engine.embed.astroclip`)
and trains, with the CLIP loss on matched image/spectrum pairs of the survey:

* the image head (cross-attention pooling + MLP); the ViT backbone stays frozen, except its
  last ``unfreeze_backbone_blocks`` blocks and final norm when asked;
* the spectrum head (cross-attention pooling + residual MLP) with ``finetune_spectrum``;
  SpecFormer stays frozen;
* the logit scale with ``learnable_scale``.

Images and spectra are preprocessed by :class:`~fmb_engine.embed.astroclip.AstroCLIPEmbedder`
itself (``images``/``spectra``), so training sees exactly what ``embed astroclip`` feeds.

Loss, with ``i``/``t`` the image/spectrum outputs of a batch of ``B`` pairs::

    i_n = i / max(|i|, 1e-3),  t_n = t / max(|t|, 1e-3)
    logits = s * i_n @ t_n.T                      (B x B)
    loss = (CE(logits, arange(B)) + CE(logits.T, arange(B))) / 2

with ``s = exp(log_s)``; ``log_s = log(logit_scale)`` is a parameter (trained only with
``learnable_scale``). Logged extra: ``cosine`` (mean cosine of the matched pairs) and ``scale``.

Fixes of the reference ``models/astroclip/finetune.py`` (see fmb_parity.md §9, L4):

* with a learnable scale the reference fed the *log* scale (~2.74) to the loss; here the
  loss always uses ``exp`` of the stored log, in both modes (15.5 at the start);
* the reference ran the backbones under ``set_grad_enabled(not freeze_backbone)``, so
  unfrozen ViT blocks (and a "fine-tuned" SpecFormer) never received a gradient; here the
  frozen parts simply have ``requires_grad=False`` (autograd then keeps no graph for them)
  and the unfrozen blocks really train. ``finetune_spectrum`` trains the spectrum *head*,
  which is what the reference effectively trained. The reference also flagged ``patch_embed``
  as trainable with N > 0; here only the last N blocks and the final norm train (a gradient
  for the patch embedding would have to pass through every frozen block);
* frozen parts stay in eval mode while the heads train (no dropout in frozen modules);
* the split comes from the survey's ``train``/``test`` splits (``train_split``/``val_split``)
  rather than a random 10 % of one split that ignored the YAML keys;
* one learning rate default, 1e-4, instead of code 3e-6 vs YAML 3e-3. The heads are
  pretrained and trained alone: AdamW moves each weight by up to ~lr per step, so 3e-3
  rewrites weights of size ~0.02 within tens of steps (and with them the published
  alignment), while 3e-6 moves them by ~3e-3 in a thousand steps, i.e. hardly at all. 1e-4
  with warm-up and cosine decay is the usual setting for adapting CLIP projection heads;
  unfrozen ViT blocks get ``backbone_lr_scale`` (0.1) of it. The logit scale is not
  weight-decayed (decay would pull ``log_s`` towards 0, i.e. ``s`` towards 1).

Resumable step checkpoints hold only the parts that can change (heads, unfrozen blocks, scale);
the frozen backbones are read again from ``weights`` when a run resumes.

Outputs (``export``): ``<checkpoint name>`` (default ``astroclip.ckpt``), a full checkpoint in
FMB's ``fmb-astroclip/1`` format that :class:`AstroCLIPEmbedder` loads strictly
(``embed astroclip --weights <folder>``), and ``finetuned.pt``, the reference payload
``{"image_encoder": state_dict, "spectrum_encoder": state_dict, "logit_scale": log_s}``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fmb_engine.embed.astroclip.checkpoint import save_checkpoint
from fmb_engine.embed.astroclip.embedder import AstroCLIPEmbedder
from fmb_engine.errors import ConfigError
from fmb_engine.retrain.config import AstroCLIPHeadsConfig
from fmb_engine.retrain.loop import TrainTask, file_fingerprint
from fmb_engine.survey.batch import SurveyBatch
from fmb_engine.workspace import atomic_path, make_dirs

#: L2-normalisation floor of the CLIP loss (upstream AstroCLIP's ``F.normalize(eps=1e-3)``).
NORM_EPS = 1e-3
#: File name of the reference-format payload.
FINETUNED_FILE = "finetuned.pt"


# --------------------------------------------------------------------------- the loss


def clip_loss(image: torch.Tensor, spectrum: torch.Tensor, scale: torch.Tensor | float
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric CLIP loss of ``B`` matched pairs and the mean matched-pair cosine (detached).

    ``scale`` is the logit scale itself (``s``, e.g. 15.5), not its log.
    """
    img = F.normalize(image, dim=-1, eps=NORM_EPS)
    spec = F.normalize(spectrum, dim=-1, eps=NORM_EPS)
    logits = scale * img @ spec.T
    target = torch.arange(logits.shape[0], device=logits.device)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    cosine = F.cosine_similarity(image.detach(), spectrum.detach(), dim=-1).mean()
    return loss, cosine


class LogitScale(nn.Module):
    """The CLIP logit scale: the parameter ``log_scale`` holds log(s); :meth:`forward` returns s = exp(log_scale)."""

    def __init__(self, value: float, learnable: bool):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(value), dtype=torch.float32), requires_grad=learnable)

    def forward(self) -> torch.Tensor:
        return self.log_scale.exp()


# --------------------------------------------------------------------------- the task


class Task(TrainTask):
    """Contrastive fine-tune of AstroCLIP's projection heads; see the module docstring."""

    name: ClassVar[str] = "astroclip-heads"
    #: ``rgb`` and ``images`` both: ``image_source: auto`` uses the composite when stored, else the bands.
    fields: ClassVar[tuple[str, ...]] = ("images", "rgb", "spectra")
    needs: ClassVar[tuple[str, ...]] = ("bands", "spectrum")

    def __init__(self, config: AstroCLIPHeadsConfig, device: str):
        super().__init__(config, device)
        self.embedder = AstroCLIPEmbedder(config.embedder_config(device))
        self.source = self.embedder.config.checkpoint_path()  # ConfigError naming every place searched
        self.model = self.embedder.load()  # strict loading, architecture from the checkpoint, on device
        self.scale = LogitScale(config.logit_scale, config.learnable_scale).to(device)

        image, spectrum = self.model.image_encoder, self.model.spectrum_encoder
        blocks = image.backbone.blocks
        n = config.unfreeze_backbone_blocks
        if n > len(blocks):
            raise ConfigError(f"unfreeze_backbone_blocks {n} exceeds the ViT's {len(blocks)} blocks")
        self.heads: list[nn.Module] = [image.cross_attention, image.mlp]
        if config.finetune_spectrum:
            self.heads += [spectrum.cross_attention, spectrum.mlp]
        self.unfrozen: list[nn.Module] = [*blocks[len(blocks) - n:], image.backbone.norm] if n else []
        self.model.requires_grad_(False)
        for module in self.heads + self.unfrozen:
            module.requires_grad_(True)
        # What a resumable checkpoint holds: the parts that can change (they share their tensors
        # with the model). The frozen backbones come again from the starting checkpoint, so a
        # step file holds ~25 M parameters at full size instead of 371 M.
        self._state: dict[str, nn.Module] = {
            "image_head": nn.ModuleDict({"cross_attention": image.cross_attention, "mlp": image.mlp}),
            "spectrum_head": nn.ModuleDict({"cross_attention": spectrum.cross_attention, "mlp": spectrum.mlp}),
            "logit_scale": self.scale,
        }
        if n:
            top = {str(i): blocks[i] for i in range(len(blocks) - n, len(blocks))}
            self._state["image_backbone_top"] = nn.ModuleDict(
                {"blocks": nn.ModuleDict(top), "norm": image.backbone.norm})
        self.train(False)

    def modules(self) -> dict[str, nn.Module]:
        """The trainable parts (heads, unfrozen ViT blocks, logit scale); see ``__init__``."""
        return self._state

    def fingerprint(self) -> dict[str, Any]:
        """The frozen towers are re-read from the starting checkpoint on resume: it must be unchanged."""
        return file_fingerprint(self.source)

    def describe(self) -> dict[str, Any]:
        """Parameter counts of both whole towers and the logit scale (total and trainable)."""
        out = {}
        for key, module in (("image_encoder", self.model.image_encoder),
                            ("spectrum_encoder", self.model.spectrum_encoder), ("logit_scale", self.scale)):
            params = list(module.parameters())
            out[key] = {"parameters": sum(p.numel() for p in params),
                        "trainable": sum(p.numel() for p in params if p.requires_grad)}
        return out

    def parameter_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = [{"params": [p for m in self.heads for p in m.parameters()]}]
        if self.unfrozen:
            groups.append({"params": [p for m in self.unfrozen for p in m.parameters()],
                           "lr_scale": self.config.backbone_lr_scale})
        if self.config.learnable_scale:
            groups.append({"params": [self.scale.log_scale], "weight_decay": 0.0})
        return groups

    def train(self, mode: bool = True) -> None:
        """Heads (and unfrozen blocks) in train mode; every frozen part always in eval mode."""
        self.model.eval()
        self.scale.eval()
        if mode:
            for module in self.heads + self.unfrozen:
                module.train()

    def encode(self, batch: SurveyBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised image and spectrum outputs, preprocessed exactly as ``embed astroclip`` does."""
        image = self.model.image_encoder(self.embedder.images(batch))
        spectrum = self.model.spectrum_encoder(self.embedder.spectra(batch))
        return image, spectrum

    def loss(self, batch: SurveyBatch) -> tuple[torch.Tensor, dict[str, float]]:
        image, spectrum = self.encode(batch)
        with torch.autocast(torch.device(self.device).type, enabled=False):  # the loss in float32 under AMP
            scale = self.scale()
            loss, cosine = clip_loss(image.float(), spectrum.float(), scale)
        return loss, {"cosine": float(cosine), "scale": float(scale.detach())}

    def export(self, folder: Path) -> dict[str, Path]:
        """``<checkpoint name>`` for the embedder and the reference ``finetuned.pt``; see the module docstring."""
        cfg: AstroCLIPHeadsConfig = self.config
        make_dirs(folder)
        full = folder / Path(cfg.checkpoint).name
        if full.resolve() == self.source.resolve():
            raise ConfigError(f"retrain {self.name}: the output {full} would overwrite the starting checkpoint; "
                              "set 'output' to another folder")
        image = {k: v.detach().cpu().clone() for k, v in self.model.image_encoder.state_dict().items()}
        spectrum = {k: v.detach().cpu().clone() for k, v in self.model.spectrum_encoder.state_dict().items()}
        log_scale = self.scale.log_scale.detach().cpu().clone()
        state = {**{f"image_encoder.{k}": v for k, v in image.items()},
                 **{f"spectrum_encoder.{k}": v for k, v in spectrum.items()},
                 "logit_scale": log_scale}
        hyper = {"task": self.name, "base_checkpoint": str(self.source), "logit_scale": float(log_scale.exp()),
                 "learnable_logit_scale": cfg.learnable_scale, "finetune_spectrum": cfg.finetune_spectrum,
                 "unfreeze_backbone_blocks": cfg.unfreeze_backbone_blocks, "image_size": cfg.image_size,
                 "image_source": cfg.image_source, "swap_hw": cfg.swap_hw,
                 "spectrum_length": cfg.spectrum_length, "spectrum_norm": cfg.spectrum_norm}
        with atomic_path(full) as tmp:
            save_checkpoint(tmp, state, hyper_parameters=hyper, architecture=self.model.arch.to_dict(),
                            source=f"fmb retrain {self.name} from {self.source}")
        reference = folder / FINETUNED_FILE
        with atomic_path(reference) as tmp:
            torch.save({"image_encoder": image, "spectrum_encoder": spectrum, "logit_scale": log_scale}, tmp)
        return {"checkpoint": full, "finetuned": reference}
