"""Active discovery: triage labels re-rank the remaining candidates.

* :mod:`~fmb_engine.discover.config`     -- the `discover` config section and its defaults (light)
* :mod:`~fmb_engine.discover.features`   -- the embedding reduced to a few whitened PCA components
* :mod:`~fmb_engine.discover.relevance`  -- label names -> relevance in [0, 1]
* :mod:`~fmb_engine.discover.strategies` -- fit/score re-ranking strategies (static, astronomaly, gp, evidence)
* :mod:`~fmb_engine.discover.rerank`     -- one re-rank: inputs checked, features, fit, score, what it reflects
* :mod:`~fmb_engine.discover.simulate`   -- the labelling loop with an oracle from injected truth; curves, summary
* :mod:`~fmb_engine.discover.run`        -- the doors: `discover rerank` and `discover simulate` on a workspace
* the discovery-curve figure is :mod:`fmb_engine.figures.discovery`

Submodules are not imported here, so ``import fmb_engine.discover`` stays cheap.
"""
