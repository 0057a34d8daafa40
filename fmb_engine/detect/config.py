"""The ``detect`` section and the detection parameters: the one place they are listed.

Light on purpose (pydantic and the standard library): the config registry, ``config
show|check`` and the CLI's help read the parts, fusion rules, flow types and presets from
here without importing torch, nflows or scikit-learn. :mod:`~fmb_engine.detect.flows`,
:mod:`~fmb_engine.detect.fusion` and :mod:`~fmb_engine.detect.run` use these names.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: The parts of ``fmb-engine detect``, in the order ``detect all`` runs them.
PARTS: tuple[str, ...] = ("flows", "mismatch", "fuse")
#: Rank-fusion rules (docs/science.md); all are computed, ``detect.fusion`` orders the top-k tables.
FUSION_METHODS: tuple[str, ...] = ("geo", "min", "avg", "fisher")
DEFAULT_FUSION = "fisher"
#: Default of ``detect.max_duplicate_fraction``.
MAX_DUPLICATE_FRACTION = 0.05

#: Flow architectures of :class:`~fmb_engine.detect.flows.FlowDensity`: RealNVP coupling or MAF.
FLOW_TYPES: tuple[str, ...] = ("coupling", "autoregressive")

#: Named settings. ``pca_components``/``clip_sigma`` go to the preprocessor, the rest to
#: ``FlowDensity`` (see :func:`fmb_engine.detect.flows.split_preset`).
PRESETS: dict[str, dict[str, Any]] = {
    # The reference paper's anomalies.yaml hyper-parameters, verbatim (the
    # architecture is detect/flows.py's, see its module docstring).
    "paper": dict(
        flow_type="coupling",
        num_transforms=4,
        hidden_features=16,
        pca_components=100,
        epochs=5,
        batch_size=24,
        lr=1e-4,
        weight_decay=1e-5,
        clip_sigma=8.0,
        grad_clip=5.0,
        seed=42,
    ),
    # The paper's model (4 coupling layers, hidden 16, PCA 100, clip 8) with a
    # different optimisation: 10x the batch and 10x the learning rate, 10 epochs
    # -> ~1,600 optimiser steps instead of ~8,300 on 40k objects, ~3-4x faster
    # on one CPU core. Measured with `bench/bench_detect.py --quality` (16-d
    # latent Gaussian mixture -> 768-d through a linear / a non-linear map,
    # 40k objects, flows fit on 32k, NLL on 8k held-out normals; AUROC of
    # in-sample -log p), fit 2.8 s vs 9.7 s: held-out NLL 138.3 / 134.1 vs
    # 139.5 / 138.3 (paper), extreme singletons AUROC 0.983 / 0.998 vs
    # 0.954 / 0.997, a rare 0.5 % group 0.805 / 0.954 vs 0.879 / 0.946 -- the
    # under-trained paper preset flags that group better on the linear data.
    "default": dict(
        flow_type="coupling",
        num_transforms=4,
        hidden_features=16,
        pca_components=100,
        epochs=10,
        batch_size=256,
        lr=1e-3,
        weight_decay=1e-5,
        clip_sigma=8.0,
        grad_clip=5.0,
        seed=42,
    ),
}

FLOW_KEYS = ("flow_type", "num_transforms", "hidden_features", "pca_components", "epochs", "batch_size", "lr",
             "weight_decay", "clip_sigma", "grad_clip")


class DetectConfig(BaseModel):
    """`fmb-engine detect`: density flows, cross-modal mismatch, baselines and rank fusion."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    models: list[str] = Field(default_factory=list, description="Embedding runs to score (names under embeddings/); empty = all.")
    preset: Literal[tuple(PRESETS)] = Field(  # type: ignore[valid-type]
        "default", description="Flow preset: paper = the reference's hyper-parameters on FMB's flow; default = ours (docs/science.md)."
    )
    flow_type: Literal[FLOW_TYPES] | None = Field(  # type: ignore[valid-type]
        None, description="Override the preset's flow type."
    )
    num_transforms: int | None = Field(None, ge=1, description="Override: number of flow transforms.")
    hidden_features: int | None = Field(None, ge=1, description="Override: hidden units of each transform.")
    pca_components: int | None = Field(None, ge=0, description="Override: PCA components before the flow (0 = none).")
    epochs: int | None = Field(None, ge=1, description="Override: training epochs.")
    batch_size: int | None = Field(None, ge=1, description="Override: training batch size.")
    lr: float | None = Field(None, gt=0, description="Override: learning rate.")
    weight_decay: float | None = Field(None, ge=0, description="Override: weight decay.")
    clip_sigma: float | None = Field(None, ge=0, description="Override: clip standardised features at +-k sigma (0 = off).")
    grad_clip: float | None = Field(None, ge=0, description="Override: gradient-norm clip (0 = off).")
    out_of_fold: int = Field(
        0, ge=0, description="K >= 2: score each object with a flow not trained on it (K folds); 0 = in-sample like the reference."
    )
    seed: int = Field(42, ge=0, description="Seed of every random choice (flows, folds, baselines).")
    device: str = Field("auto", description="Torch device: auto, cpu, cuda.")
    threads: int = Field(1, ge=0, description="Torch CPU threads for the flows (0 = torch default).")
    n_jobs: int = Field(
        0, ge=0, description="Processes training one run's flows side by side (0 = one per CPU core on CPU, 1 on CUDA)."
    )
    fusion: Literal[FUSION_METHODS] = Field(  # type: ignore[valid-type]
        DEFAULT_FUSION, description="Fusion that orders the ranked top-k tables (all four are always computed)."
    )
    top_k: int = Field(200, ge=1, description="Rows in the ranked / filtered top-k tables.")
    t_img: float = Field(0.0, ge=0, le=1, description="Filtered table: keep p_img >= t_img.")
    t_spec: float = Field(0.0, ge=0, le=1, description="Filtered table: keep p_spec >= t_spec.")
    t_mis: float = Field(0.0, ge=0, le=1, description="Filtered table: keep p_mis >= t_mis.")
    baselines: bool = Field(True, description="Also score with IsolationForest and k-NN distance.")
    knn_k: int = Field(10, ge=1, description="k of the k-NN distance baseline.")
    iforest_trees: int = Field(200, ge=1, description="Trees of the IsolationForest baseline.")
    mismatch_alpha: float = Field(1.0, gt=0, description="Ridge penalty of the learned mismatch (unaligned embedders).")
    max_duplicate_fraction: float = Field(
        MAX_DUPLICATE_FRACTION, ge=0, le=1,
        description="Warn when more than this share of a modality's vectors duplicate another vector (docs/science.md).",
    )

    def flow_params(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(preprocessing kwargs, FlowDensity kwargs) from the preset plus overrides."""
        from fmb_engine.detect.flows import split_preset

        overrides = {k: getattr(self, k) for k in FLOW_KEYS if getattr(self, k) is not None}
        pre, flow = split_preset(self.preset, **overrides, seed=self.seed)
        flow |= {"device": self.device, "threads": self.threads or None}
        return pre, flow

    def flow_jobs(self) -> int:
        """Worker processes for the flows: results are identical for any value (same threads)."""
        from fmb_engine.devices import resolve_device
        from fmb_engine.parallel import resolve_jobs

        if not self.n_jobs and resolve_device(self.device).startswith("cuda"):
            return 1
        return resolve_jobs(self.n_jobs)
