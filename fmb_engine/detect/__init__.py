"""Detection stage, array-level core: numpy arrays in, numpy arrays / DataFrames out.

No file formats, CLI or config here; those wrap these objects.

* :mod:`~fmb_engine.detect.preprocess` -- ``finite_rows``, ``Preprocessor`` (PCA -> standardise -> clip)
* :mod:`~fmb_engine.detect.params` -- the one list of parts, fusion rules, flow types and ``PRESETS``
* :mod:`~fmb_engine.detect.config` -- the ``detect`` config section (pydantic only)
* :mod:`~fmb_engine.detect.flows` -- ``FlowDensity`` (nflows coupling / MAF),
  ``split_preset``, ``fit_flows`` (one flow per key, optionally in worker processes),
  ``score_out_of_fold``, ``anomaly_table``
* :mod:`~fmb_engine.detect.mismatch` -- cosine (aligned embedders) or out-of-fold ridge
  residual (unaligned), ``mismatch_scores``, ``mismatch_table``
* :mod:`~fmb_engine.detect.fusion` -- rank percentiles and the fusion rules of ``FUSION_METHODS``, uplift, thresholds
* :mod:`~fmb_engine.detect.baselines` -- IsolationForest and kNN-distance detectors
* :mod:`~fmb_engine.detect.stream` -- the seeded fit sample and row-chunk reads/scoring (bounded memory)
* :mod:`~fmb_engine.detect.metrics` -- AUROC / AP / precision@k / recall@k against labels
* :mod:`~fmb_engine.detect.tables` -- shared rank conventions (rank 1 = most anomalous)

Typical use for one embedder with image/spectrum/joint matrices::

    pre_kw, flow_kw = split_preset("default")
    ok = finite_rows(X)                       # report (~ok).sum() as dropped
    Z = Preprocessor(**pre_kw).fit_transform(X[ok])
    flow = FlowDensity(**flow_kw).fit(Z)
    table = anomaly_table(ids[ok], flow.score_samples(Z), "image")

Submodules are not imported here, so ``import fmb_engine.detect`` stays cheap.
"""
