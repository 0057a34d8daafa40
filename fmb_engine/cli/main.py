"""`fmb-engine`: one Typer app, one module per command group."""

from __future__ import annotations

import os
import signal
import sys


def _stop_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM during the imports: nothing is written yet; stop without a traceback."""
    code, word = (143, "terminated") if signum == signal.SIGTERM else (130, "interrupted")
    os.write(2, f"{word} while starting: nothing was written\n".encode())
    os._exit(code)


if os.path.basename(sys.argv[0]) == "fmb-engine":  # the console script only; never a test's in-process import
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where it is ignored (nohup, &)
        signal.signal(signal.SIGINT, _stop_while_starting)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _stop_while_starting)

import typer  # noqa: E402
from rich.markup import escape  # noqa: E402

from fmb_engine.cli import analyze as analyze_cli  # noqa: E402
from fmb_engine.cli import config as config_cli  # noqa: E402
from fmb_engine.cli import data as data_cli  # noqa: E402
from fmb_engine.cli import detect as detect_cli  # noqa: E402
from fmb_engine.cli import discover as discover_cli  # noqa: E402
from fmb_engine.cli import embed as embed_cli  # noqa: E402
from fmb_engine.cli import figures as figures_cli  # noqa: E402
from fmb_engine.cli import jobs as jobs_cli  # noqa: E402
from fmb_engine.cli import models as models_cli  # noqa: E402
from fmb_engine.cli import retrain as retrain_cli  # noqa: E402
from fmb_engine.cli import triage as triage_cli  # noqa: E402
from fmb_engine.cli.common import Typer, console, err_console  # noqa: E402
from fmb_engine.cli.demo import demo  # noqa: E402
from fmb_engine.errors import FMBError  # noqa: E402
from fmb_engine.workspace import Workspace, fault_of  # noqa: E402

app = Typer(
    name="fmb-engine",
    help="Foundation-model anomaly discovery: survey data, embeddings, retraining, detection, analysis, jobs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
)
app.add_typer(config_cli.app, name="config")
app.add_typer(data_cli.app, name="data")
app.add_typer(embed_cli.app, name="embed")
app.add_typer(models_cli.app, name="models")
app.add_typer(retrain_cli.app, name="retrain")
app.add_typer(detect_cli.app, name="detect")
app.add_typer(analyze_cli.app, name="analyze")
app.add_typer(discover_cli.app, name="discover")
app.add_typer(figures_cli.app, name="figures")
app.add_typer(jobs_cli.app, name="jobs")
app.add_typer(triage_cli.app, name="triage")
app.command()(detect_cli.evaluate)
app.command()(demo)


@app.command()
def init(
    directory: str = typer.Argument(..., help="Folder to create (or complete) as a workspace."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Complete an existing workspace instead of failing."),
    shared: bool = typer.Option(False, "--shared", help="Group-shared workspace: folders 2770 (setgid), files 0660."),
) -> None:
    """Create a workspace: fmb.yaml plus survey/, embeddings/, scores/, analysis/, figures/, runs/, jobs/, checkpoints/, triage/."""
    ws = Workspace.init(directory, exist_ok=exist_ok, shared=shared)
    console.print(f"workspace ready: [bold]{escape(str(ws.root))}[/]")
    console.print(f"next: cd {escape(str(ws.root))} && fmb-engine data mock")


_TERMINATED: list[int] = []


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    """SIGTERM (scancel, kill, a closing session) unwinds like Ctrl-C: temp files go, manifests say so."""
    _TERMINATED.append(signum)
    raise KeyboardInterrupt


_SWALLOWED: list[BaseException] = []


def _unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """A Ctrl-C or SIGTERM that lands in a finalizer or weakref callback is swallowed by Python, with a
    traceback; the run then goes on to the end. Keep stderr to one line about it (see main)."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        _SWALLOWED.append(unraisable.exc_value)
        return
    sys.__unraisablehook__(unraisable)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors print one clear message and exit with the code of errors.EXIT_CODES."""
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    sys.unraisablehook = _unraisable
    if signal.getsignal(signal.SIGINT) is _stop_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = app(args=argv, standalone_mode=False)  # Typer returns 130 for a KeyboardInterrupt in a command
    except typer.TyperException as exc:  # usage errors (Typer's bundled Click): its message and code (2)
        exc.show()  # type: ignore[attr-defined]
        sys.exit(getattr(exc, "exit_code", 2))
    except FMBError as exc:
        _fail(str(exc), exc.exit_code)
    except (OSError, RuntimeError) as exc:  # h5py reports some failed writes as RuntimeError
        fault = fault_of(exc)
        if fault is None:
            raise
        _fail(str(fault), fault.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        _interrupted()
    if code == 130 or _TERMINATED:  # Typer turns a KeyboardInterrupt inside a command into Exit(130), silently
        _interrupted()
    if _SWALLOWED:
        err_console.print("[yellow]note:[/] the Ctrl-C came where Python cannot stop (a finalizer); "
                          "the command ran to its end")
    sys.exit(code if isinstance(code, int) else 0)


def _interrupted() -> None:
    """Ctrl-C (130) or SIGTERM (143): one line, and the code that says which."""
    terminated = bool(_TERMINATED)
    err_console.print(f"[yellow]{'terminated' if terminated else 'interrupted'}[/]: "
                      "partial outputs are kept and resume on the next run")
    sys.exit(143 if terminated else 130)


def _fail(message: str, code: int) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    sys.exit(code)


if __name__ == "__main__":
    main()
