"""Jobs: submitit executors, SLURM job arrays, the job registry and monitoring.

Modules (import what you need; this package module stays light):

* :mod:`fmb_engine.jobs.config`       -- the ``jobs`` config section (SLURM parameters, executor default)
* :mod:`fmb_engine.jobs.executors`    -- the executor kinds (local, slurm, debug), one class each; choosing one
* :mod:`fmb_engine.jobs.submission`   -- ``submit`` / ``submit_array`` / ``resubmit`` / ``cancel`` / ``attach``
* :mod:`fmb_engine.jobs.calls`        -- the submitted callable, and its JSON record for ``resubmit``
* :mod:`fmb_engine.jobs.outcome`      -- each job's JSON outcome record (submitit's result pickles are never read)
* :mod:`fmb_engine.jobs.folders`      -- modes of job files; the ownership/mode checks of ``attach``
* :mod:`fmb_engine.jobs.registry`     -- SQLite registry of runs and jobs (``jobs/registry.sqlite``)
* :mod:`fmb_engine.jobs.slurm`        -- one batched ``squeue`` + ``sacct`` poll, ``scancel``
* :mod:`fmb_engine.jobs.states`       -- the one state normaliser for every executor
* :mod:`fmb_engine.jobs.monitor`      -- ``refresh`` (poll once, update the registry), ``logs`` (polling tail)
* :mod:`fmb_engine.jobs.selftest`     -- tiny importable job functions for tests and ``jobs selftest``
"""

from __future__ import annotations

from fmb_engine.errors import FMBError


class JobsError(FMBError):
    """A job could not be submitted, found, cancelled or resubmitted; the message says why."""


__all__ = ["JobsError"]
