"""Settings every adaptation loop shares; each task extends them (section ``retrain.<task>``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
