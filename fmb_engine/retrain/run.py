"""The retrain front door: task registry, config sections, and one call that runs a task.

Task modules import torch only; model packages (``aion``, ``astropt``) are imported when a
task is built, so registering the sections stays cheap.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from fmb_engine.config import SECTIONS, Resolved, register_section
from fmb_engine.embed.base import resolve_device
from fmb_engine.progress import Reporter
from fmb_engine.retrain.config import TrainConfig
from fmb_engine.retrain.loop import TrainResult, TrainTask, train
from fmb_engine.workspace import Workspace

#: task name -> module defining ``Config`` (a TrainConfig) and ``Task`` (a TrainTask).
TASKS: dict[str, str] = {
    "aion-adapter": "fmb_engine.retrain.aion_adapter",
    "astroclip-heads": "fmb_engine.retrain.astroclip_heads",
    "astropt": "fmb_engine.retrain.astropt",
}


def section_of(task: str) -> str:
    """Config section of a task: ``retrain.aion_adapter`` for ``aion-adapter``."""
    return "retrain." + task.replace("-", "_")


def _module(task: str):
    if task not in TASKS:
        from fmb_engine.errors import ConfigError

        raise ConfigError(f"unknown retrain task {task!r}; expected one of {', '.join(TASKS)}")
    return importlib.import_module(TASKS[task])


def config_model(task: str) -> type[TrainConfig]:
    return _module(task).Config


def register_retrain_sections() -> None:
    for task in TASKS:
        if section_of(task) not in SECTIONS:
            register_section(section_of(task), config_model(task))


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
