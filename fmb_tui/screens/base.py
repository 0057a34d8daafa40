"""What every fmb-tui screen shares: background work that posts its result, and error display."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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


class WorkDone(Message):
    """A background job of a screen finished; ``tag`` names the handler ``_done_<tag>``."""

    def __init__(self, tag: str, value: Any) -> None:
        super().__init__()
        self.tag, self.value = tag, value


class FMBScreen(GuardedDispatch, Screen):
    """Base screen: ``background(tag, fn, ...)`` runs ``fn`` in a thread and calls ``_done_<tag>(result)``."""

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

    def background(self, tag: str, fn: Callable[..., Any], *args: Any, group: str | None = None,
                   exclusive: bool = True, **kwargs: Any) -> Worker:
        """Run blocking ``fn`` in a worker thread; the event loop never waits on it.

        The worker never touches widgets: it posts :class:`WorkDone`, whose handler runs on
        the event loop. A newer job of the same group supersedes an older one (its result
        is dropped). Exceptions become readable notifications (see ``FMBApp.report_error``).
        """

        def job() -> None:
            value = fn(*args, **kwargs)
            if not get_current_worker().is_cancelled:
                self.post_message(WorkDone(tag, value))

        return self.run_worker(job, name=tag, group=group or tag, thread=True, exclusive=exclusive,
                               exit_on_error=False)

    def on_work_done(self, message: WorkDone) -> None:
        handler = getattr(self, f"_done_{message.tag}", None)
        if handler is not None:
            handler(message.value)  # an exception here is logged and notified (GuardedDispatch)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.fmb.report_error(event.worker.error, context=f"worker {event.worker.name}")
            self.work_failed(event.worker.name, event.worker.error)

    def work_failed(self, tag: str, error: BaseException) -> None:
        """Hook: a background job failed (the error is already shown)."""

    @classmethod
    def screen_bindings(cls, name: str):
        return actions.bindings(*actions.SCREEN_SCOPES[name], lead=actions.LEAD)


def leave_field(screen: Screen) -> None:
    """Move the focus out of a text field: to the screen's first focusable control that is not one
    (lists and tables are controls; a scrolling container of fields only when there is nothing else)."""
    others = [w for w in screen.focus_chain if not isinstance(w, Input)]
    controls = [w for w in others if not isinstance(w, ScrollableContainer) or isinstance(w, ScrollView)]
    screen.set_focus((controls or others or [None])[0])
