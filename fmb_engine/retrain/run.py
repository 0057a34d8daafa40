"""The retrain front door: one call that builds and runs a task.

The task names live in :mod:`fmb_engine.retrain.tasks`, their schemas in :mod:`fmb_engine.retrain.config`;
task modules import torch, model packages (``aion``, ``astropt``) are imported when a task
is built.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from fmb_engine.config import Resolved
from fmb_engine.devices import resolve_device
from fmb_engine.progress import Reporter
from fmb_engine.retrain.config import TrainConfig, config_model
from fmb_engine.retrain.loop import TrainResult, TrainTask, train
from fmb_engine.retrain.tasks import TASKS
from fmb_engine.workspace import Workspace


def _module(task: str):
    config_model(task)  # ConfigError naming the tasks for an unknown one
    return importlib.import_module(TASKS[task].module)


def output_folder(ws: Workspace, task: str, config: TrainConfig) -> Path:
    if config.output:
        out = Path(config.output).expanduser()
        return out if out.is_absolute() else ws.root / out
    return ws.folder("checkpoints") / task


def build_task(task: str, config: TrainConfig) -> TrainTask:
    """Seed, thread count and device first, then the task (its model initialisation is seeded)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    return _module(task).Task(config, resolve_device(config.device))


def retrain(ws: Workspace, survey: Path, task: str, resolved: Resolved, reporter: Reporter | None = None,
            resume: bool = True) -> TrainResult:
    """Run (or resume) ``task`` on ``survey`` with the resolved ``retrain.<task>`` section."""
    from fmb_engine.stage_run import config_record

    config: TrainConfig = resolved.values
    built = build_task(task, config)
    return train(built, ws, survey, output_folder(ws, task, config), resume=resume, reporter=reporter,
                 config_record=config_record(resolved))
