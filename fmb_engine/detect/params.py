"""The detection parameters, listed once: parts, fusion rules, flow types and presets.

Standard library only: the CLI's help and choices, the ``detect`` schema
(:mod:`fmb_engine.detect.config`), :mod:`~fmb_engine.detect.flows`,
:mod:`~fmb_engine.detect.fusion` and :mod:`~fmb_engine.detect.run` all read them here.
"""

from __future__ import annotations

from typing import Any

#: The parts of ``fmb-engine detect``, in the order ``detect all`` runs them.
PARTS: tuple[str, ...] = ("flows", "mismatch", "fuse")
#: Rank-fusion rules (docs/science.md); all are computed, ``detect.fusion`` orders the top-k tables.
FUSION_METHODS: tuple[str, ...] = ("geo", "min", "avg", "fisher")
DEFAULT_FUSION = "fisher"
#: Default of ``detect.max_duplicate_fraction``.
MAX_DUPLICATE_FRACTION = 0.05

#: Default of ``detect.fit_max_objects``: models are fitted on at most this many usable rows (a
#: seeded sample, :mod:`fmb_engine.detect.stream`). Above today's largest matched survey
#: (Euclid Q1 x DESI DR1, ~40,000 objects), so runs of that size fit on everything as before.
FIT_MAX_OBJECTS = 50_000
#: Default of ``detect.chunk_rows``: rows read at a time when scoring (100 MB for a 1536-d float32 chunk).
CHUNK_ROWS = 16_384
#: Default of ``detect.knn_approx_threshold``: reference rows (the fit sample) from which ``auto`` tries
#: the approximate index for the k-NN baseline. Above ``FIT_MAX_OBJECTS``, so by default the search is
#: exact: on a 50,000-row sample of the synthetic embeddings (768-d image, preprocessed to PCA-100) the
#: index reaches recall@10 0.67 with every cell scanned, while exact search (faiss IndexFlatL2) costs
#: ~1.9 CPU s per 16,384 queries (docs/benchmarks.md, "Detect at scale"). Per query both costs grow with
#: the reference rows, and so does the index's saving: hence a threshold on them alone.
KNN_APPROX_THRESHOLD = 200_000

#: Flow architectures of :class:`~fmb_engine.detect.flows.FlowDensity`: RealNVP coupling or MAF.
FLOW_TYPES: tuple[str, ...] = ("coupling", "autoregressive")

# The reference paper's anomalies.yaml hyper-parameters, verbatim (the architecture is
# detect/flows.py's, see its module docstring).
_PAPER: dict[str, Any] = dict(
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
)

#: Named settings. ``pca_components``/``clip_sigma`` go to the preprocessor, the rest to
#: ``FlowDensity`` (see :func:`fmb_engine.detect.flows.split_preset`).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": _PAPER,
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
    "default": dict(_PAPER, epochs=10, batch_size=256, lr=1e-3),
}
