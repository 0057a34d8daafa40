"""What every fmb-tui screen shares: background work that posts its result, and error display."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from textual.actions import SkipAction
from textual.binding import Binding
from textual.containers import ScrollableContainer
from textual.message import Message
from textual.screen import Screen
from textual.scroll_view import ScrollView
from textual.widgets import Input
from textual.worker import Worker, WorkerState, get_current_worker

from fmb_tui import actions
from fmb_tui.error_log import GuardedDispatch

if TYPE_CHECKING:
    from fmb_tui.app import FMBApp
    from fmb_tui.data import WorkspaceData

T = TypeVar("T")


class WorkDone(Message):
    """A background job of a screen finished: ``then`` takes its result on the event loop."""

    def __init__(self, then: Callable[[Any], None], value: Any) -> None:
        super().__init__()
        self.then, self.value = then, value


class WorkFailed(Message):
    """A background job of a screen raised: the app reports ``error``; ``failed`` (if any) updates the screen."""

    def __init__(self, job: str, error: Exception, failed: Callable[[Exception], None] | None) -> None:
        super().__init__()
        self.job, self.error, self.failed = job, error, failed


class FMBScreen(GuardedDispatch, Screen):
    """Base screen: ``background(fn, ..., then=handler)`` runs ``fn`` in a thread and hands its result to ``handler``."""

    NAME = ""
    # Esc in a text field leaves the field (every letter key types into it, so nothing else would);
    # anywhere else it falls through to the screen's own escape binding (e.g. Object: back).
    BINDINGS = [Binding("escape", "leave_field", "Leave field", show=False, priority=True)]

    def action_leave_field(self) -> None:
        if not isinstance(self.focused, Input):
            raise SkipAction()
        leave_field(self)

    @property
    def fmb(self) -> FMBApp:
        return self.app  # type: ignore[return-value]

    @property
    def data(self) -> WorkspaceData:
        return self.fmb.data

    def background(self, fn: Callable[..., T], *args: Any, then: Callable[[T], None],
                   failed: Callable[[Exception], None] | None = None, group: str | None = None,
                   exclusive: bool = True) -> Worker:
        """Run blocking ``fn(*args)`` in a worker thread; the event loop never waits on it.

        The worker never touches widgets: it posts its result, and ``then(result)`` runs on the
        event loop. Handlers are named by the caller, not looked up, so a result cannot miss
        its handler. A newer job of the same group (default: the qualified name of ``then``;
        give lambdas a group) supersedes an older one, whose result is dropped. An exception is always logged and
        notified (``FMBApp.report_error``); ``failed(error)`` then lets the screen show it in
        place, unless the job was superseded.
        """
        job_name = getattr(then, "__qualname__", None) or repr(then)
        app = self.fmb

        def job() -> None:
            try:
                value = fn(*args)
            except Exception as exc:  # noqa: BLE001 - handed to the event loop: reported, never lost
                hook = None if get_current_worker().is_cancelled else failed
                if not self.post_message(WorkFailed(job_name, exc, hook)):  # the screen is gone: the app reports it
                    app.call_from_thread(app.report_error, exc, f"worker {job_name}")
                return
            if not get_current_worker().is_cancelled:
                self.post_message(WorkDone(then, value))

        return self.run_worker(job, name=job_name, group=group or job_name, thread=True, exclusive=exclusive,
                               exit_on_error=False)

    def on_work_done(self, message: WorkDone) -> None:
        message.then(message.value)  # an exception here is logged and notified (GuardedDispatch)

    def on_work_failed(self, message: WorkFailed) -> None:
        self.fmb.report_error(message.error, context=f"worker {message.job}")
        if message.failed is not None:
            message.failed(message.error)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Workers started without :meth:`background` (``@work``): their errors are reported too."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.fmb.report_error(event.worker.error, context=f"worker {event.worker.name}")

    @classmethod
    def screen_bindings(cls, name: str):
        return actions.bindings(*actions.SCREEN_SCOPES[name], lead=actions.LEAD)


def leave_field(screen: Screen) -> None:
    """Move the focus out of a text field: to the screen's first focusable control that is not one
    (lists and tables are controls; a scrolling container of fields only when there is nothing else)."""
    others = [w for w in screen.focus_chain if not isinstance(w, Input)]
    controls = [w for w in others if not isinstance(w, ScrollableContainer) or isinstance(w, ScrollView)]
    screen.set_focus((controls or others or [None])[0])
