"""fmb-tui: the terminal explorer over an FMB workspace.

``fmb-tui [WORKSPACE]`` opens the workspace screen; ``W R J A C F`` switch between the
Workspace, Runs, Jobs, Anomalies, Compare and Figures screens (each keeps its own state),
``?`` shows every key, ``ctrl+p`` every action. Blocking work runs in worker threads;
labels are committed by one writer thread the moment their key is pressed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path

from textual.app import App, SystemCommand
from textual.command import CommandList, CommandPalette
from textual.message import Message
from textual.screen import Screen
from textual.worker import Worker, WorkerFailed, WorkerState

from fmb_engine.errors import FMBError
from fmb_engine.config.tui import TuiConfig
from fmb_engine.workspace import Workspace
from fmb_tui import actions
from fmb_tui.data import WorkspaceData, load_tui_config
from fmb_tui.error_log import ErrorLog, GuardedDispatch, error_log_path
from fmb_tui.label_writer import LabelOp, LabelWriter, replay_spool, spool_path
from fmb_tui.safe_text import escape
from fmb_tui.screens.anomalies import AnomaliesScreen
from fmb_tui.screens.compare import CompareScreen
from fmb_tui.screens.dialogs import HelpScreen
from fmb_tui.screens.figures import FiguresScreen
from fmb_tui.screens.jobs import JobsScreen
from fmb_tui.screens.runs import RunsScreen
from fmb_tui.screens.workspace import WorkspaceScreen

SCREENS = ("workspace", "runs", "jobs", "anomalies", "compare", "figures")


class LabelsReloaded(Message):
    def __init__(self, labels: dict[str, str], notes: dict[str, str], version: int, ticket: int) -> None:
        super().__init__()
        self.labels, self.notes, self.version, self.ticket = labels, notes, version, ticket


class Palette(CommandPalette):
    """Textual's command palette, except that paging before its list is laid out does nothing.

    (Textual 8.2.8 raises KeyError on page up / down pressed just as the list fills; the
    random explorer found it.)
    """

    def _action_command_list(self, action: str) -> None:
        if action in ("page_up", "page_down"):
            commands = self.query_one(CommandList)
            if (commands.highlighted or 0) not in commands._index_to_line:
                return
        super()._action_command_list(action)


class FMBApp(GuardedDispatch, App):
    """The explorer. ``workspace`` is opened as it is; ``config`` defaults to the workspace's ``tui`` section."""

    TITLE = "fmb-tui"
    CSS_PATH = "app.tcss"
    BINDINGS = actions.bindings("app")
    MODES = {
        "workspace": WorkspaceScreen,
        "runs": RunsScreen,
        "jobs": JobsScreen,
        "anomalies": AnomaliesScreen,
        "compare": CompareScreen,
        "figures": FiguresScreen,
    }
    #: seconds between checks for labels written by other sessions
    LABEL_SYNC_S = 3.0
    #: after a hang-up: seconds the label writer gets before what is left is spooled, then before a forced exit
    HANGUP_DRAIN_S = 2.0
    HANGUP_EXIT_S = 2.0
    #: tests set this: an internal error is then also re-raised by ``run_test`` (after being logged)
    strict_errors = False

    def __init__(self, workspace: Workspace, config: TuiConfig | None = None, *, start: str = "workspace",
                 system: str | None = None, root_label: str | None = None, watch_terminal: bool = True):
        super().__init__()
        if "TEXTUAL_ANIMATIONS" not in os.environ:
            self.animation_level = "none"  # over SSH every animation frame is a redraw sent down the wire
        self.workspace = workspace
        self.tui_config = config if config is not None else load_tui_config(workspace)
        actions.check_keymap(self.tui_config.keymap)
        if start not in SCREENS:
            raise FMBError(f"unknown screen {start!r}; screens: {', '.join(SCREENS)}")
        self.start_screen = start
        self.start_system = system
        self.root_label = root_label or str(workspace.root)
        self.sub_title = workspace.root.name
        self.data = WorkspaceData(workspace, self.tui_config)
        self.labels: dict[str, str] = {}
        self.notes: dict[str, str] = {}
        self.labels_loaded = False
        self.label_writer = LabelWriter(self.data.labels)
        self._label_version = -1
        self._label_ticket = 0
        self._watch_terminal = watch_terminal
        self._parent_pid = os.getppid()
        self._quitting = False
        self._hangup_sig: int | None = None
        self.error_log = ErrorLog(error_log_path(workspace.root))

    # --- start and stop ------------------------------------------------------------------

    def on_mount(self) -> None:
        if self.tui_config.keymap:
            self.set_keymap(self.tui_config.keymap)
        self._install_signal_handlers()
        self.switch_mode(self.start_screen)
        self.reload_labels()
        self.set_interval(self.LABEL_SYNC_S, self._check_labels, name="label-sync")
        if self._watch_terminal and not self.is_headless:
            self.set_interval(5.0, self._check_terminal, name="terminal-watch")

    def _install_signal_handlers(self) -> None:
        if self.is_headless:
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._hangup, sig)

    def _hangup(self, sig: int = signal.SIGHUP) -> None:
        """The terminal went away (SSH dropped, tmux killed) or we were asked to stop: keep the labels, exit in seconds.

        Never waits on the event loop: a helper thread gives the label writer
        :data:`HANGUP_DRAIN_S` to commit, spools whatever is still not committed (another
        user may hold the write lock for long), and ends the app; if the app has not
        ended :data:`HANGUP_EXIT_S` later (a dead terminal can block output), the process
        ends itself. A second signal skips the wait.
        """
        if self._hangup_sig is not None:
            self._spool_labels()
            os._exit(128 + int(sig))
        self._hangup_sig = int(sig)
        self._quitting = True
        threading.Thread(target=self._finish_hangup, name="fmb-hangup", daemon=True).start()

    def _finish_hangup(self) -> None:
        code = 128 + int(self._hangup_sig or signal.SIGHUP)
        if not self.label_writer.close(timeout=self.HANGUP_DRAIN_S):
            self._spool_labels()
        with contextlib.suppress(Exception):  # the app may already be gone
            self.call_from_thread(self.exit, return_code=code)
        time.sleep(self.HANGUP_EXIT_S)
        os._exit(code)

    def _spool_labels(self) -> None:
        from fmb_engine.triage.labels import labels_path

        path = spool_path(labels_path(self.workspace))
        n = self.label_writer.spool(path)
        if n:
            with contextlib.suppress(OSError):
                self.error_log.note(f"hang-up: {n} label change(s) not committed yet were spooled to {path}; "
                                    "the next fmb-tui start commits them")

    def _check_terminal(self) -> None:
        """Orphaned (re-parented since start) or no terminal any more: exit instead of spinning on a dead TTY."""
        try:
            gone = os.getppid() != self._parent_pid or not os.isatty(sys.__stdin__.fileno())
        except (OSError, ValueError, AttributeError):
            gone = True
        if gone:
            self._hangup(signal.SIGHUP)

    def action_quit(self) -> None:
        """Quit once every queued label is committed.

        The queue is almost always empty (a label commits in milliseconds), so this is
        immediate; it blocks only while another user holds the database's write lock.
        """
        if self._quitting:
            return
        self._quitting = True
        self.label_writer.close(timeout=35.0)
        self.exit()

    def on_unmount(self) -> None:
        # however the app ends (quit, exit from a test harness, an error): commit what is queued
        # (after a hang-up the helper thread has already committed or spooled it)
        if self._hangup_sig is None:
            self.label_writer.close(timeout=35.0)
        self.data.close()

    # --- navigation ------------------------------------------------------------------------

    def action_show_screen(self, name: str) -> None:
        # never switch under an open palette: it would stay on this screen's stack and, closed
        # later, pop a screen of the other one (Textual raises ScreenStackError)
        if self.current_mode != name and not CommandPalette.is_open(self):
            self.switch_mode(name)

    def action_command_palette(self) -> None:
        if self.use_command_palette and not CommandPalette.is_open(self):
            self.push_screen(Palette(id="--command-palette"))

    def action_help(self) -> None:
        scopes = list(actions.SCREEN_SCOPES.get(getattr(self.screen, "NAME", ""), ()))
        self.push_screen(HelpScreen(self.effective_keymap(), self.tui_config.labels, scopes + ["app"]))

    def effective_keymap(self) -> dict[str, str]:
        return dict(self.tui_config.keymap)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        keymap = self.effective_keymap()
        labels = list(self.tui_config.labels)
        current = getattr(screen, "NAME", "")
        for _scope, keys, action_id, text in actions.rows(keymap, labels):
            action = actions.BY_ID[action_id]
            label = actions.label_of(action, labels)
            if label is not None:
                title = f"triage: label {label}"
            elif action.scope == "app":
                title = action.description
            else:
                where = {"triage": "anomalies"}.get(action.scope, action.scope)
                title = f"{where}: {action.description}"
            # the palette parses help as markup: label names and key names ("[") are escaped
            yield SystemCommand(escape(title), escape(f"{text} [{keys}]"), partial(self._palette_run, action, current))

    async def _palette_run(self, action: actions.Action, current: str) -> None:
        if CommandPalette.is_open(self):  # reopened (fast keys) before the chosen command ran: close it first
            await self.pop_screen()
        scopes = actions.SCREEN_SCOPES.get(current, ())
        if action.scope != "app" and action.scope not in scopes:
            target = "anomalies" if action.scope == "triage" else action.scope
            if target == "object":
                self.notify("open an object first (Anomalies, enter)", severity="warning")
                return
            await self.switch_mode(target)
        await self.screen.run_action(action.action)

    # --- labels ----------------------------------------------------------------------------

    def change_label(self, op: LabelOp, reply_to) -> None:
        """Show the change at once and queue it for the writer thread (committed within milliseconds)."""
        if op.kind == "label":
            if op.value is None:
                self.labels.pop(op.object_id, None)
            else:
                self.labels[op.object_id] = op.value
        elif op.kind == "note":
            if op.value is None:
                self.notes.pop(op.object_id, None)
            else:
                self.notes[op.object_id] = op.value
        self._label_ticket += 1
        self.label_writer.submit(op, reply_to)

    def apply_event(self, event) -> None:
        """A committed change (an undo) whose value the screen did not set itself."""
        target = self.labels if event.field == "label" else self.notes
        if event.value is None:
            target.pop(event.object_id, None)
        else:
            target[event.object_id] = event.value

    def reload_labels(self) -> None:
        ticket = self._label_ticket

        def load() -> None:
            from fmb_engine.triage.labels import labels_path

            spooled = spool_path(labels_path(self.workspace))
            if spooled.is_file():
                n = replay_spool(spooled, self.data.labels())
                if n:
                    self.call_from_thread(self.notify, f"{n} label change(s) left by a hung-up session saved",
                                          title="labels")
            if not labels_path(self.workspace).is_file():
                self.post_message(LabelsReloaded({}, {}, 0, ticket))
                return
            store = self.data.labels()
            version = store.data_version()
            self.post_message(LabelsReloaded(store.labels(), store.notes(), version, ticket))

        self.run_worker(load, name="labels", group="labels", thread=True, exclusive=True, exit_on_error=False)

    def on_labels_reloaded(self, message: LabelsReloaded) -> None:
        if message.ticket != self._label_ticket or self.label_writer.pending():
            return  # a local change happened meanwhile; the next sync picks everything up
        self.labels, self.notes = message.labels, message.notes
        self._label_version = message.version
        self.labels_loaded = True
        if not self.screen_stack:  # the sync answered while the app was closing
            return
        triage_changed = getattr(self.screen, "triage_changed", None)
        if triage_changed is not None:
            triage_changed()

    def _check_labels(self) -> None:
        if self.label_writer.pending():
            return
        ticket = self._label_ticket

        def check() -> None:
            from fmb_engine.triage.labels import labels_path

            if not labels_path(self.workspace).is_file():
                return
            version = self.data.labels().data_version()
            if version != self._label_version:
                store = self.data.labels()
                self.post_message(LabelsReloaded(store.labels(), store.notes(), version, ticket))

        self.run_worker(check, name="labels", group="labels", thread=True, exclusive=True, exit_on_error=False)

    # --- errors ----------------------------------------------------------------------------

    def notify(self, message: str, *, title: str = "", severity="information", timeout: float | None = None,
               markup: bool = False) -> None:
        """Notifications are plain text unless asked otherwise (messages quote paths, ids, exception text)."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def report_error(self, exc: BaseException, context: str = "") -> None:
        """An engine error shows its message; anything else goes to the error log and a one-line notification."""
        if isinstance(exc, WorkerFailed) and isinstance(exc.error, BaseException):
            exc = exc.error
        if isinstance(exc, FMBError):
            self.notify(str(exc), title="error", severity="error", timeout=10)
            return
        if self.strict_errors and self._exception is None:
            self._exception = exc  # type: ignore[assignment]
            self._exception_event.set()
        if self.error_log.write(exc, context):
            self.notify(f"{type(exc).__name__}: {exc} (traceback in {self.error_log.path})",
                        title="internal error", severity="error", timeout=12)

    def _handle_exception(self, error: Exception) -> None:
        """Textual calls this for an exception no handler caught (worker, timer, render): log and notify, keep running.

        Before the first screen is up there is nothing to notify on: Textual's own handling
        (exit with the traceback) applies.
        """
        if not self.is_running or self._exit or not self.screen_stack:
            super()._handle_exception(error)
            return
        try:
            self.report_error(error, context="uncaught")
        except Exception:  # noqa: BLE001 - reporting itself failed: fall back to Textual's exit with traceback
            super()._handle_exception(error)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.report_error(event.worker.error, context=f"worker {event.worker.name}")


# --- command line ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fmb-tui", description="The FMB terminal explorer (keyboard only; ? for help).")
    p.add_argument("workspace", nargs="?", help="workspace folder (default: $FMB_WORKSPACE, else the current folder upwards)")
    p.add_argument("--screen", choices=SCREENS, default="workspace", help="screen to open first")
    p.add_argument("--system", help="ranking to open first (model/modality/method)")
    p.add_argument("--keys", action="store_true", help="print every action id and its default key, then exit")
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.keys:
        for _scope, keys, action_id, text in actions.rows():
            print(f"{action_id:28} {keys:18} {text}")
        return
    try:
        ws = Workspace.find(Path(args.workspace) if args.workspace else None)
        config = load_tui_config(ws)
        app = FMBApp(ws, config, start=args.screen, system=args.system)
    except FMBError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    app.run()
    sys.exit(app.return_code or 0)


if __name__ == "__main__":
    main()
