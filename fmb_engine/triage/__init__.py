"""Triage: the label store shared by the TUI, figures and exports (no UI imports).

* :mod:`fmb_engine.triage.labels` -- SQLite label store with an append-only history
"""
