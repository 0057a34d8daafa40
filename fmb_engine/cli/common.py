"""Options and helpers shared by every command group.

Commands parse flags, build the effective config (defaults < fmb.yaml <
--config < flags) and call one stage function. No science lives here.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperCommand

from fmb_engine.cli import complete
from fmb_engine.progress import RichReporter
from fmb_engine.workspace import Workspace

if TYPE_CHECKING:
    from fmb_engine.config import Resolved

#: Width of the console off a terminal: wide enough that no table column is ever cut ("CO…").
UNLIMITED = 1_000_000


def _console(stderr: bool) -> Console:
    """Rich's console (colour off a terminal, NO_COLOR and FORCE_COLOR as rich reads them); off a terminal
    nothing is wrapped or truncated at 80 columns: a script reading a table or "manifest: <path>" gets it whole."""
    off_terminal = not (sys.stderr if stderr else sys.stdout).isatty()
    return Console(stderr=stderr, soft_wrap=off_terminal, width=UNLIMITED if off_terminal else None)


console = _console(stderr=False)
err_console = _console(stderr=True)

#: A token that starts like a negative number: an object id such as Euclid's negative MER ids, never an option.
NEGATIVE = re.compile(r"-\d")


class Command(TyperCommand):
    """Every fmb-engine command: a negative number (an object id) is an argument, not an unknown option.

    Click reads an argument ``-1000`` as option ``-1`` ("no such option"); the parser
    of each command gets a step before Click's option matching that keeps such a
    token as an argument unless a short option of that name exists. (An option's
    value, ``--id -1000``, is taken by Click before this step and needs nothing.)
    The step wraps the parser's ``_process_opts``, private to Typer's bundled Click:
    tests/engine/test_active_survey.py fails loudly if an upgrade changes it.
    """

    def make_parser(self, ctx):
        parser = super().make_parser(ctx)
        process_opts = parser._process_opts

        def keep_numbers(arg: str, state) -> None:
            if NEGATIVE.match(arg) and arg not in parser._short_opt:
                state.largs.append(arg)
            else:
                process_opts(arg, state)

        parser._process_opts = keep_numbers
        return parser


class Typer(typer.Typer):
    """typer.Typer whose commands use :class:`Command` (each command group builds its app with it)."""

    def command(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("cls", Command)
        return super().command(*args, **kwargs)


WorkspaceOpt = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", help="Workspace folder (default: $FMB_WORKSPACE, else the current folder upwards)."),
]
SurveyOpt = Annotated[
    str | None,
    typer.Option("--survey", "-s", autocompletion=complete.surveys,
                 help="Survey name under survey/ or an .h5 path (default: general.survey)."),
]
#: ``--model`` where it names embedding runs of the workspace (embeddings/<run>.h5), repeatable.
RunsOpt = Annotated[
    list[str] | None,
    typer.Option("--model", "-m", autocompletion=complete.embedding_runs,
                 help="Embedding run(s) under embeddings/ (default: all)."),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Task config YAML; overrides the workspace fmb.yaml, flags override it."),
]


def find_workspace(path: Path | None) -> Workspace:
    return Workspace.find(path)


def section(name: str, ws: Workspace | None, config: Path | None, /, **flags: Any) -> Resolved:
    """Effective config of section ``name``; ``flags`` left at None were not given."""
    from fmb_engine.config import load

    return load(name, ws, config, {k: v for k, v in flags.items() if v is not None})


def reporter() -> RichReporter:
    return RichReporter(err_console)


def survey_file(ws: Workspace, config: Path | None, survey: str | None) -> Path:
    """The active survey (fmb_engine.survey.active): --survey, else general.survey; an error when its file is missing."""
    from fmb_engine.survey.active import resolve_survey

    general = section("general", ws, config, survey=survey)
    origin = "--survey" if survey is not None else f"general.survey from {general.sources['survey']}"
    return resolve_survey(ws, general.values.survey, origin)  # type: ignore[attr-defined]
