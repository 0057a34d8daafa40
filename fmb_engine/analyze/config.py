"""The ``analyze`` config section (one flat schema for every analysis command)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fmb_engine.config.schemas import Section


class AnalyzeConfig(Section):
    """`fmb-engine analyze ...`: ranking comparisons, similarity, regression probes, UMAP."""

    systems: list[str] = Field(default_factory=list, description="Systems (model/modality/method) to compare; empty = all in scores/systems.parquet.")
    top_percent: float = Field(1.0, gt=0, le=50, description="q: the top q % of a ranking (Jaccard, disagreement, retention source).")
    disagree_percent: float = Field(50.0, gt=0, lt=100, description="Disagreement: top q % in one system and beyond this percentile in the other.")
    retention_percents: list[float] = Field(default_factory=lambda: [1.0, 10.0], description="Target top-% levels of the retention of a source's top q %.")
    models: list[str] = Field(default_factory=list, description="Embedding runs (embeddings/<model>.h5) to analyse; empty = all.")
    modalities: list[str] = Field(default_factory=list, description="Modalities to analyse (image, spectrum, joint); empty = all of each run.")
    k: int = Field(10, ge=1, le=1000, description="Nearest neighbours per query (self excluded).")
    chunk: int = Field(4096, ge=16, le=1_000_000, description="Query rows per matrix-product block of the exact k-NN (fewer when a block would exceed 2^27 similarities).")
    backend: Literal["auto", "exact", "approx", "torch", "faiss"] = Field("auto", description="k-NN search: exact (faiss IndexFlatIP when installed, else torch; or name one), approx (faiss inverted file, recall measured), auto = approx from approx_threshold on.")
    approx_threshold: int = Field(200_000, ge=2, description="auto searches approximately when queries x objects >= this squared (a self-query of this many objects) and faiss-cpu is installed.")
    approx_nlist: int = Field(0, ge=0, description="Cells of the approximate index; 0 = round(sqrt(objects)).")
    approx_nprobe: int = Field(0, ge=0, description="Cells scanned per query; 0 = the first of 1, 2, 3, 4, 6, 8, 11, 16, ... (x sqrt 2) reaching approx_min_recall on a seeded tuning sample.")
    approx_min_recall: float = Field(0.95, gt=0, le=1, description="Recall@k the tuning aims at; a lower measured recall is a manifest warning.")
    approx_recall_queries: int = Field(1000, ge=1, le=1_000_000, description="Seeded queries whose recall@k against exact search is measured and recorded.")
    rank_method: str = Field("flow", description="Method whose ranks neighbour-ranks reads (system <model>/<modality>/<method>).")
    targets: list[str] = Field(default_factory=lambda: ["redshift", "logM", "logSFR"], description="Survey columns probed by the regression.")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Held-out fraction of the regression split (shared by all embeddings).")
    ridge_alpha: float = Field(1.0, gt=0, description="Ridge penalty on standardised features.")
    gbm_iter: int = Field(200, ge=1, le=10_000, description="Boosting iterations of the non-linear regressor (HistGradientBoosting).")
    gbm_early_stopping: bool = Field(True, description="Stop boosting after 10 iterations without improvement on 10 % of the training rows held out (scikit-learn's rule).")
    bootstrap: int = Field(200, ge=0, le=100_000, description="Bootstrap resamples of the test set for R² intervals (0 = none).")
    min_train: int = Field(50, ge=2, description="Skip a probe with fewer training rows than this.")
    n_jobs: int = Field(0, ge=0, description="Processes running the regression probes side by side (0 = one per CPU core); results do not depend on it.")
    gbm_shap: bool = Field(True, description="Participation ratio of the GBM from TreeSHAP (shap.TreeExplainer): pr_gbm, pr90_gbm, epd/pes/cwp_gbm; needs the shap package.")
    shap_max_rows: int = Field(2000, ge=10, le=1_000_000, description="Test rows explained by TreeSHAP per probe at most (seeded subsample above).")
    pr_bootstrap: int = Field(50, ge=0, le=10_000, description="Bootstrap resamples of the attribution rows for the PR std (NaN with fewer than 50 rows or 2 resamples).")
    umap_neighbors: int = Field(15, ge=2, le=1000, description="UMAP n_neighbors.")
    umap_min_dist: float = Field(0.1, ge=0, le=1, description="UMAP min_dist.")
    umap_metric: str = Field("euclidean", description="UMAP metric (euclidean, cosine, ...).")
    umap_max_points: int = Field(200_000, ge=10, description="Objects UMAP is fitted on per embedding at most (a seeded sample; the others are placed by the fitted model's transform, in chunks); at most 500,000 (one node's fit).")
    umap_thumbnails: int = Field(25, ge=0, le=100, description="Figures: cells per side of the thumbnail grid beside each UMAP map (RGB of the object nearest each occupied cell centre); 0 = none.")
    seed: int = Field(42, description="Seed of splits, bootstraps, baselines, subsamples and UMAP.")


__all__ = ["AnalyzeConfig"]

