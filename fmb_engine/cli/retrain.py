"""`fmb-engine retrain TASK`: the adaptation loops (AION adapters, AstroCLIP heads, AstroPT)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from fmb_engine.cli.common import ConfigOpt, SurveyOpt, Typer, WorkspaceOpt, console, find_workspace, reporter, section, survey_file
from fmb_engine.cli.jobs import ExecutorOpt
from fmb_engine.retrain.tasks import TASKS, section_of

app = Typer(help="Adapt the foundation models on the survey: AION adapters, AstroCLIP heads, AstroPT.",
                  no_args_is_help=True)

StepsOpt = Annotated[int | None, typer.Option("--steps", min=1, help="Optimiser steps in total (retrain.<task>.steps).")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", min=1, help="Objects per micro-batch.")]
LrOpt = Annotated[float | None, typer.Option("--lr", min=0.0, help="Peak learning rate.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
WeightsOpt = Annotated[str | None, typer.Option("--weights", help="Starting weights (see `config template retrain.<task>`).")]
OutputOpt = Annotated[str | None, typer.Option("--output", help="Output folder (default: checkpoints/<task>).")]
SeedOpt = Annotated[int | None, typer.Option("--seed", min=0, help="Seed of initialisation, batch order and dropout.")]
FreshOpt = Annotated[bool, typer.Option("--fresh", help="Start over: delete this task's resumable checkpoints first.")]


def _make_command(task: str):
    doc = TASKS[task].summary

    def command(
        workspace: WorkspaceOpt = None,
        config: ConfigOpt = None,
        survey: SurveyOpt = None,
        steps: StepsOpt = None,
        batch_size: BatchOpt = None,
        lr: LrOpt = None,
        device: DeviceOpt = None,
        weights: WeightsOpt = None,
        output: OutputOpt = None,
        seed: SeedOpt = None,
        fresh: FreshOpt = False,
        executor: ExecutorOpt = None,
    ) -> None:
        from fmb_engine.retrain.run import retrain

        ws = find_workspace(workspace)
        resolved = section(section_of(task), ws, config, steps=steps, batch_size=batch_size, lr=lr, device=device,
                           weights=weights, output=output, seed=seed)
        path = survey_file(ws, config, survey)
        if executor is not None:
            from fmb_engine.cli.jobs import print_submission
            from fmb_engine.jobs.stages import submit_retrain

            print_submission(submit_retrain(ws, path, task, resolved, not fresh, executor, section("jobs", ws, config)))
            return
        result = retrain(ws, path, task, resolved, reporter(), resume=not fresh)
        last = result.history[-1] if result.history else {}
        val = f", validation loss {last['val_loss']:.4g}" if "val_loss" in last else ""
        early = " (stopped early: no improvement)" if result.stopped_early else ""
        console.print(f"[green]done[/]: {result.steps} steps{early}, train loss {last.get('train_loss', float('nan')):.4g}{val}")
        for key, value in result.outputs.items():
            console.print(f"  {key}: {escape(str(value))}")
        if result.manifest:
            console.print(f"manifest: {escape(str(result.manifest))}")

    command.__doc__ = f"{doc} Resumes from the newest checkpoint unless --fresh."
    return command


for _task in TASKS:
    app.command(_task)(_make_command(_task))
