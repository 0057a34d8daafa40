"""The submitted callable, and its JSON form for resubmission.

:class:`Call` is what submitit runs in the job process: it sets the job's umask, runs
the stage function and writes the job's JSON outcome record
(:mod:`fmb_engine.jobs.outcome`) before the process ends.

:func:`call_spec` records a call as JSON in the registry at submission (function
``module:name`` plus its arguments), so ``jobs resubmit`` rebuilds it from that record
instead of loading submitit's ``*_submitted.pkl`` (which would run any code a planted
file names). Only module-level functions of the ``fmb_engine`` package are rebuilt,
and only arguments of a few plain kinds: JSON values, tuples, paths, a
:class:`~fmb_engine.workspace.Workspace`, a resolved config section.
"""

from __future__ import annotations

import importlib
import os
import reprlib
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import DelayedSubmission

from fmb_engine.config import Resolved
from fmb_engine.jobs import JobsError
from fmb_engine.jobs.folders import umask_for
from fmb_engine.jobs.outcome import outcome_path, write_outcome
from fmb_engine.workspace import Workspace


class Call:
    """``fn(*args, **kwargs)`` as a picklable zero-argument callable (``fn`` must be importable)."""

    def __init__(self, fn: Callable[..., Any], args: tuple = (), kwargs: dict[str, Any] | None = None,
                 stage: str = "") -> None:
        self.fn = fn
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.stage = stage
        self.starts = 0

    def __call__(self) -> Any:
        """In the job process (submitit runs this): the rule's umask, then :meth:`run`."""
        env = submitit.JobEnvironment()
        folder = env.paths.folder
        os.umask(umask_for(folder))
        return self.run(outcome_path(folder, env.job_id))

    def run(self, outcome: Path) -> Any:
        """Run the function and write its outcome record (success, or the error and traceback)."""
        self.starts += 1
        started = time.time()
        try:
            value = self.fn(*self.args, **self.kwargs)
        except Exception:
            write_outcome(outcome, "error", trace=traceback.format_exc(), started=started, stage=self.stage,
                          function=self.name())
            raise
        write_outcome(outcome, "success", value=value, started=started, stage=self.stage, function=self.name())
        return value

    def name(self) -> str:
        return f"{getattr(self.fn, '__module__', '')}:{getattr(self.fn, '__qualname__', repr(self.fn))}"

    def describe(self) -> str:
        return f"{self.name().replace(':', '.')}{reprlib.repr(self.args)}"


class ResumableCall(Call, submitit.helpers.Checkpointable):
    """A :class:`Call` that SLURM requeues on timeout or preemption, keeping its progress.

    Progress lives on disk (stage functions write resumable partial outputs), so the
    checkpoint only has to resubmit the same call: the rerun continues where it stopped.
    """

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        print(f"[fmb] {self.stage or 'job'}: time limit or preemption; requeueing {self.describe()} "
              f"(start {self.starts}); it resumes from its partial outputs", flush=True)
        return DelayedSubmission(self)


def make_call(fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any] | None, stage: str,
              checkpointable: bool = True) -> Call:
    return (ResumableCall if checkpointable else Call)(fn, args, kwargs, stage)


# --- the JSON form ----------------------------------------------------------------------------


class NotRecordable(ValueError):
    """An argument or function that the JSON form cannot hold (the run is then not resubmittable)."""


def rebuild_resolved(section: str, values: dict[str, Any], sources: dict[str, str]) -> Resolved:
    """A resolved config section from its recorded values (validated again)."""
    from fmb_engine.config import SECTIONS

    if section not in SECTIONS:
        raise JobsError(f"recorded config section {section!r} is unknown to this FMB")
    return Resolved(section, SECTIONS[section].model_validate(values), dict(sources))


def encode(value: Any) -> Any:
    """``value`` as JSON; tagged objects for tuples, paths, workspaces and resolved sections."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, tuple):
        return {"tuple": [encode(v) for v in value]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: encode(v) for k, v in value.items()}}
    if isinstance(value, Path):
        return {"path": str(value)}
    if isinstance(value, Workspace):
        return {"workspace": str(value.root)}
    if isinstance(value, Resolved):
        return {"resolved": {"section": value.section, "values": value.values.model_dump(mode="json"),
                             "sources": dict(value.sources)}}
    raise NotRecordable(f"an argument of type {type(value).__name__}")


def decode(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict) and len(value) == 1:
        (tag, body), = value.items()
        if tag == "tuple" and isinstance(body, list):
            return tuple(decode(v) for v in body)
        if tag == "dict" and isinstance(body, dict):
            return {str(k): decode(v) for k, v in body.items()}
        if tag == "path" and isinstance(body, str):
            return Path(body)
        if tag == "workspace" and isinstance(body, str):
            return Workspace(Path(body))
        if tag == "resolved" and isinstance(body, dict):
            return rebuild_resolved(str(body.get("section")), dict(body.get("values") or {}),
                                    dict(body.get("sources") or {}))
    raise JobsError(f"recorded call argument {reprlib.repr(value)} is not understood")


def function_name(fn: Callable[..., Any]) -> str:
    module, qualname = getattr(fn, "__module__", "") or "", getattr(fn, "__qualname__", "") or ""
    if not module.startswith("fmb_engine.") or not qualname.isidentifier() or qualname.startswith("_"):
        raise NotRecordable(f"function {module}.{qualname} (only public module-level fmb_engine functions "
                            "are recorded)")
    return f"{module}:{qualname}"


def resolve_function(name: str) -> Callable[..., Any]:
    """The function a recorded ``module:name`` stands for: module-level, inside ``fmb_engine`` only."""
    module, _, qualname = str(name).partition(":")
    if not module.startswith("fmb_engine.") or not qualname.isidentifier() or qualname.startswith("_"):
        raise JobsError(f"recorded function {name!r} is not a module-level fmb_engine function; not rebuilt")
    try:
        fn = getattr(importlib.import_module(module), qualname)
    except (ImportError, AttributeError) as exc:
        raise JobsError(f"recorded function {name!r} does not exist in this FMB ({exc})") from None
    if not callable(fn) or getattr(fn, "__module__", None) != module or getattr(fn, "__qualname__", None) != qualname:
        raise JobsError(f"recorded function {name!r} is not a function defined in {module}; not rebuilt")
    return fn


def call_spec(call: Call) -> dict[str, Any]:
    """The JSON form of one call: ``{"function", "args", "kwargs", "checkpointable"}``.

    Raises :class:`NotRecordable` when the function or an argument has no JSON form.
    """
    return {"function": function_name(call.fn), "args": [encode(a) for a in call.args],
            "kwargs": {k: encode(v) for k, v in call.kwargs.items()},
            "checkpointable": isinstance(call, ResumableCall)}


def from_spec(spec: Any, stage: str) -> Call:
    """Rebuild a call from :func:`call_spec`'s record (a :class:`JobsError` says what is wrong)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("args"), list) or not isinstance(spec.get("kwargs"), dict):
        raise JobsError(f"recorded call {reprlib.repr(spec)} is not understood")
    fn = resolve_function(spec.get("function", ""))
    return make_call(fn, tuple(decode(a) for a in spec["args"]), {str(k): decode(v) for k, v in spec["kwargs"].items()},
                     stage, bool(spec.get("checkpointable", True)))


__all__ = ["Call", "NotRecordable", "ResumableCall", "call_spec", "from_spec", "make_call", "rebuild_resolved"]
