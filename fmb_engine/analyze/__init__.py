"""Analyses of the detection outputs and embeddings: ranking comparisons, similarity
search, physical-parameter probes and UMAP projections. Doors live in :mod:`.run`."""
