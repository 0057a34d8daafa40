"""The retrain settings: every loop's shared fields, and each task's section ``retrain.<task>``.

Pydantic only (no torch): the config registry reads the schemas here; which tasks exist is
:data:`fmb_engine.retrain.tasks.TASKS`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fmb_engine.embed.config import ASTROPT_LAYOUTS, AIONConfig, AstroCLIPConfig
from fmb_engine.retrain.tasks import TASKS


class TrainConfig(BaseModel):
    """Optimiser, schedule, evaluation and checkpoint settings of one adaptation loop.

    ``steps`` counts optimiser steps; each step accumulates ``accum_steps`` micro-batches of
    ``batch_size`` objects. The learning rate warms up linearly over :meth:`warmup` steps and then
    follows a cosine from ``lr`` down to ``min_lr`` at ``steps`` (``schedule: constant`` keeps
    ``lr`` after the warm-up). A run shorter than its warm-up never reaches ``lr``.
    """

    model_config = ConfigDict(extra="forbid")

    weights: str | None = Field(
        None, description="Starting weights (directory, file or Hugging Face cache); see the task for what it needs."
    )
    output: str | None = Field(None, description="Output folder (default: <workspace>/checkpoints/<task>).")
    train_split: str = Field("train", description="Survey split to train on.")
    val_split: str = Field("test", description="Held-out split for validation losses and early stopping.")
    max_objects: int = Field(0, ge=0, description="Use at most this many objects per split (0: all).")
    batch_size: int = Field(8, ge=1, description="Objects per micro-batch.")
    accum_steps: int = Field(1, ge=1, description="Micro-batches accumulated per optimiser step.")
    steps: int = Field(1000, ge=1, description="Optimiser steps in total (a resumed run continues up to this).")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate.")
    min_lr: float = Field(0.0, ge=0, description="Learning rate at the end of the cosine.")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="After warm-up: cosine to min_lr, or constant.")
    warmup_steps: int | None = Field(
        None, ge=0, description="Linear warm-up steps (from lr/warmup_steps to lr); unset: warmup_fraction x steps."
    )
    warmup_fraction: float = Field(0.0, ge=0, lt=1, description="Warm-up as a fraction of steps, when warmup_steps is unset.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, ge=0, description="Clip the global gradient norm to this (0: off).")
    eval_every: int = Field(50, ge=1, description="Validate every this many steps (and at the last step).")
    eval_batches: int = Field(10, ge=1, description="Validation micro-batches per evaluation (fixed objects).")
    checkpoint_every: int = Field(100, ge=1, description="Write a resumable checkpoint every this many steps.")
    keep_checkpoints: int = Field(3, ge=1, description="Resumable checkpoints kept (older ones are deleted).")
    patience: int = Field(0, ge=0, description="Stop after this many evaluations without improvement (0: never).")
    min_delta: float = Field(1e-4, ge=0, description="Smallest drop of the validation loss that counts as better.")
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")
    amp: Literal["off", "bfloat16", "float16"] = Field(
        "off", description="Mixed precision on CUDA (float16 adds a gradient scaler); ignored on CPU."
    )
    threads: int = Field(0, ge=0, description="torch CPU threads (0: leave torch's default).")
    seed: int = Field(42, ge=0, description="Seeds model initialisation, batch order and dropout.")

    def warmup(self) -> int:
        """Warm-up steps in effect: ``warmup_steps``, else ``int(warmup_fraction * steps)``."""
        return self.warmup_steps if self.warmup_steps is not None else int(self.warmup_fraction * self.steps)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        return self


def token_counts(image_size: int, image_patch: int, spectrum_length: int, spectrum_patch: int) -> tuple[int, int]:
    """(image tokens, spectrum tokens): ``(size / patch)^2`` and ``ceil(length / patch)``."""
    return (image_size // image_patch) ** 2, -(-spectrum_length // spectrum_patch)


class AstroPTTrainConfig(TrainConfig):
    """Retrain AstroPT (multimodal GPT on image + spectrum patches), from scratch or from a checkpoint."""

    weights: str | None = Field(
        None, description="AstroPT checkpoint to continue from (file, or folder holding `checkpoint`); "
        "unset: a fresh model seeded by seed (the reference trains from scratch).",
    )
    checkpoint: str = Field("ckpt_final.pt", description="Checkpoint file name when weights is a folder.")
    # architecture (upstream GPTConfig + the two modality patch sizes); a continued checkpoint defines them
    n_layer: int = Field(12, ge=1, description="Transformer blocks.")
    n_head: int = Field(12, ge=1, description="Attention heads.")
    n_embd: int = Field(768, ge=1, description="Model width (embedding dimension).")
    block_size: int = Field(1024, ge=2, description="Largest sequence (image + spectrum tokens).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout (also applied to a continued checkpoint).")
    bias: bool = Field(False, description="Biases in Linear and LayerNorm layers.")
    tokeniser: Literal["aim", "affine"] = Field(
        "aim", description="Patch encoder/decoder: aim (2-layer MLP) or affine.")
    image_patch_size: int = Field(16, ge=1, description="Image patch side in pixels (tokens of 3 x p^2 values).")
    spectrum_patch_size: int = Field(10, ge=1, description="Spectrum bins per token.")
    # preprocessing: the embedder's fields, same meaning
    layout: Literal["upstream", "fmb"] = Field("fmb", description="Image patch layout preset (embed.astropt layout).")
    image_size: int | None = Field(None, ge=8, description="Image side after resize (layout default: fmb 224).")
    patch_order: Literal["channel_last", "channel_first"] | None = Field(None, description="Layout override.")
    patch_norm: Literal["zscore", "none"] | None = Field(None, description="Layout override.")
    spiral: bool | None = Field(None, description="Layout override.")
    image_source: Literal["auto", "rgb", "bands"] = Field("auto", description="RGB composite source (as the embedder).")
    spectrum_length: int = Field(7781, ge=1, description="Spectra padded/trimmed to this many bins.")
    spectrum_norm: Literal["std", "zscore", "none"] = Field("std", description="Per-spectrum scaling (FMB: std).")
    # loss
    image_loss_weight: float | None = Field(
        None, gt=0, description="Loss weight of the image tokens (default: spectrum tokens / image tokens).")
    spectrum_loss_weight: float | None = Field(
        None, gt=0, description="Loss weight of the spectrum tokens (default: image tokens / spectrum tokens).")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    # TrainConfig defaults replaced by the reference's
    steps: int = Field(3000, ge=1, description="Optimiser steps in total (reference max_iters 3000).")
    lr: float = Field(6e-4, gt=0, description="Peak learning rate.")
    min_lr: float = Field(6e-5, ge=0, description="Learning rate at the end of the cosine.")
    warmup_fraction: float = Field(
        1 / 15, ge=0, lt=1, description="Warm-up fraction of steps when warmup_steps is unset (reference: 2000 of 30000).")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (parameters with >= 2 dimensions only).")
    grad_clip: float = Field(1.0, ge=0, description="Clip the global gradient norm to this (0: off).")
    batch_size: int = Field(8, ge=1, description="Objects per micro-batch.")
    accum_steps: int = Field(4, ge=1, description="Micro-batches accumulated per optimiser step.")
    amp: Literal["off", "bfloat16", "float16"] = Field("bfloat16", description="Mixed precision on CUDA.")

    @model_validator(mode="after")
    def _check_tokens(self) -> AstroPTTrainConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.weights is None:  # a continued checkpoint brings its own patch sizes and block size
            size = self.image_size_resolved()
            if size % self.image_patch_size:
                raise ValueError(f"image_size {size} is not a multiple of image_patch_size {self.image_patch_size}")
            n_img, n_spec = token_counts(size, self.image_patch_size, self.spectrum_length, self.spectrum_patch_size)
            if n_img + n_spec > self.block_size:
                raise ValueError(f"{n_img} image + {n_spec} spectrum tokens exceed block_size {self.block_size}")
        return self

    def image_size_resolved(self) -> int:
        return self.image_size if self.image_size is not None else ASTROPT_LAYOUTS[self.layout]["image_size"]


class AIONAdapterConfig(TrainConfig):
    """Train the Euclid<->HSC U-Net adapters that AION's embedder needs, through AION's frozen image codec.

    Section ``retrain.aion_adapter``; see the module docstring.
    """

    weights: str | None = Field(
        None,
        description="The AION snapshot holding the frozen image codec (a directory or a Hugging Face cache; "
        "the same files and search as the AION embedder). Unset: the default local Hugging Face cache.",
    )
    repo_id: str = AIONConfig.model_fields["repo_id"]  # the embedder's own field: the snapshot resolves alike
    init: str | None = Field(
        None,
        description="Start from this adapters checkpoint (adapters_final.pt, or a folder holding it) instead of "
        "random initialisation; read with weights_only=True and loaded strictly.",
    )
    hidden: int = Field(16, ge=1, description="U-Net channels at full resolution (x2, x4 deeper).")
    image_size: int = Field(96, ge=16, description="Euclid bands are resized (bilinear) to this size; "
                            "the AION codec is trained on 96 px.")
    max_abs: float = Field(100.0, gt=0, description="Clamp of the scaled Euclid flux, before the adapter.")
    codec_grad: Literal["ste", "full"] = Field(
        "ste",
        description="Gradient through the codec round trip: ste (identity, codec run without autograd) "
        "or full (backpropagate through the frozen codec).",
    )
    # task defaults (reference: Adam lr 1e-4, no weight decay, clip 1.0, constant rate)
    batch_size: int = Field(8, ge=1, description="Objects per micro-batch.")
    steps: int = Field(5000, ge=1, description="Optimiser steps in total (a resumed run continues up to this).")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate.")
    schedule: Literal["cosine", "constant"] = Field(
        "constant", description="After warm-up: cosine to min_lr, or constant (the reference)."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (0: plain Adam, the reference).")
    grad_clip: float = Field(1.0, ge=0, description="Clip the global gradient norm to this (0: off).")
    eval_every: int = Field(250, ge=1, description="Validate every this many steps (and at the last step).")
    eval_batches: int = Field(20, ge=1, description="Validation micro-batches per evaluation (fixed objects).")
    checkpoint_every: int = Field(500, ge=1, description="Write a resumable checkpoint every this many steps.")


class AstroCLIPHeadsConfig(TrainConfig):
    """Fine-tune AstroCLIP's projection heads (optionally the last ViT blocks) with the CLIP loss on matched pairs."""

    weights: str | None = Field(
        None,
        description="AstroCLIP checkpoint to start from: the file itself, or a directory / Hugging Face cache "
        "holding 'checkpoint' (resolved exactly as embed.astroclip resolves it).",
    )
    repo_id: str = AstroCLIPConfig.model_fields["repo_id"]  # the embedder's own fields: weights resolve alike
    subfolder: str = AstroCLIPConfig.model_fields["subfolder"]
    checkpoint: str = Field(
        "astroclip.ckpt",
        description="Checkpoint file name (FMB format; convert the published Lightning file once with "
        "python -m fmb_engine.embed.astroclip.checkpoint SRC DST). The result is written under the same name.",
    )
    finetune_spectrum: bool = Field(True, description="Train the spectrum head too (SpecFormer stays frozen).")
    unfreeze_backbone_blocks: int = Field(
        0, ge=0, description="Also train the last N ViT blocks and the ViT's final norm (0: backbone frozen)."
    )
    backbone_lr_scale: float = Field(
        0.1, gt=0, description="Learning-rate multiplier of the unfrozen ViT blocks (pretrained: move them gently)."
    )
    learnable_scale: bool = Field(False, description="Train the logit scale (stored as its log, used as exp).")
    logit_scale: float = Field(15.5, gt=0, description="CLIP logit scale s (the start value when learnable).")
    # preprocessing: the embedder's own fields (keep them equal to embed.astroclip)
    image_size: int = AstroCLIPConfig.model_fields["image_size"]
    image_source: Literal["auto", "rgb", "bands"] = AstroCLIPConfig.model_fields["image_source"]
    swap_hw: bool = AstroCLIPConfig.model_fields["swap_hw"]
    spectrum_length: int = AstroCLIPConfig.model_fields["spectrum_length"]
    spectrum_norm: Literal["none", "zscore"] = AstroCLIPConfig.model_fields["spectrum_norm"]
    warmup_fraction: float = Field(0.1, ge=0, lt=1, description="Warm-up fraction of steps when warmup_steps is unset.")
    # task defaults (the reference's): AdamW wd 5e-4, clip 1.0, patience 3, min_delta 1e-4
    batch_size: int = Field(
        64, ge=1, description="Pairs per micro-batch; each pair has batch_size - 1 negatives (accumulation adds none)."
    )
    lr: float = Field(1e-4, gt=0, description="Peak learning rate (pretrained heads; see docs/retrain.md).")
    weight_decay: float = Field(5e-4, ge=0, description="AdamW weight decay (not applied to the logit scale).")
    grad_clip: float = Field(1.0, ge=0, description="Clip the global gradient norm to this (0: off).")
    patience: int = Field(3, ge=0, description="Stop after this many evaluations without improvement (0: never).")
    min_delta: float = Field(1e-4, ge=0, description="Smallest drop of the validation loss that counts as better.")

    def embedder_config(self, device: str) -> AstroCLIPConfig:
        """The embedder settings that load the starting model and preprocess like ``embed astroclip``."""
        return AstroCLIPConfig(
            weights=self.weights, repo_id=self.repo_id, subfolder=self.subfolder, checkpoint=self.checkpoint,
            image_size=self.image_size, image_source=self.image_source, swap_hw=self.swap_hw,
            spectrum_length=self.spectrum_length, spectrum_norm=self.spectrum_norm, device=device,
            batch_size=self.batch_size, seed=self.seed,
        )


#: The ``retrain`` family of config sections: ``retrain.<task>`` (dashes as underscores) -> schema.
SCHEMAS: dict[str, type[TrainConfig]] = {
    "aion_adapter": AIONAdapterConfig,
    "astroclip_heads": AstroCLIPHeadsConfig,
    "astropt": AstroPTTrainConfig,
}


def config_model(task: str) -> type[TrainConfig]:
    """The settings schema of ``task``."""
    if task not in TASKS:
        from fmb_engine.errors import ConfigError

        raise ConfigError(f"unknown retrain task {task!r}; expected one of {', '.join(TASKS)}")
    return SCHEMAS[task.replace("-", "_")]
