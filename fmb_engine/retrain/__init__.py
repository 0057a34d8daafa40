"""Lightweight adaptation of the foundation models (``fmb-engine retrain <task>``).

Three tasks share one loop (:mod:`fmb_engine.retrain.loop`): the AION Euclid<->HSC
adapters, the AstroCLIP projection heads and AstroPT; each writes weights that the
matching embedder loads.
"""
