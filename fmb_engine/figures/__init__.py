"""Publication figures: one style (``fmb.mplstyle``), deterministic PNG + PDF, no LaTeX.

One module per figure family: ``objects`` (outlier grid, single object, neighbour grid),
``heatmaps`` (Spearman / Jaccard), ``displacement``, ``regression``, ``umap``,
``similarity`` (neighbour-rank histograms). Default paths are under ``figures/``.
"""
