"""The ``detect`` config section (pydantic only: no torch, nflows or scikit-learn).

Its choices come from :mod:`fmb_engine.detect.params`, the one list of detection parameters.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fmb_engine.detect.params import (
    CHUNK_ROWS, DEFAULT_FUSION, FIT_MAX_OBJECTS, FLOW_TYPES, FUSION_METHODS, KNN_APPROX_THRESHOLD, MAX_DUPLICATE_FRACTION,
    PRESETS,
)

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
    threads: int = Field(1, ge=0, description="CPU threads for the flows and the k-NN baseline's search (0 = torch's and faiss's default).")
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
    knn_backend: Literal["auto", "exact", "approx"] = Field(
        "auto", description="k-NN baseline search: exact (faiss IndexFlatL2 when installed, else torch), approx (the "
                            "analyze stage's faiss inverted file, distances exact, recall measured), auto = approx from "
                            "knn_approx_threshold on, exact when the index cannot reach knn_min_recall.",
    )
    knn_approx_threshold: int = Field(
        KNN_APPROX_THRESHOLD, ge=2, description="auto searches approximately when the k-NN reference set (the fit "
                                                "sample) has at least this many rows and faiss-cpu is installed.",
    )
    knn_min_recall: float = Field(0.95, gt=0, le=1, description="Recall@k the approximate k-NN's nprobe is tuned to; "
                                                                "a lower measured recall is a manifest warning.")
    iforest_trees: int = Field(200, ge=1, description="Trees of the IsolationForest baseline.")
    mismatch_alpha: float = Field(1.0, gt=0, description="Ridge penalty of the learned mismatch (unaligned embedders).")
    fit_max_objects: int = Field(
        FIT_MAX_OBJECTS, ge=100,
        description="Fit flows, preprocessing, baselines and the learned mismatch on at most this many usable rows "
                    "(a seeded sample, docs/science.md); every object is scored.",
    )
    chunk_rows: int = Field(
        CHUNK_ROWS, ge=1, description="Rows read from the embedding file at a time when scoring (bounds memory; "
                                      "ranks do not depend on it).",
    )
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
