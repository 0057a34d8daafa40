"""Progress reporting that stages can call without knowing who listens.

Stages take a :class:`Reporter`; the CLI passes a rich progress bar, the TUI a
reporter that posts messages, tests the silent default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol


class Task(Protocol):
    def advance(self, n: int = 1) -> None: ...


class Reporter(Protocol):
    def task(self, description: str, total: int | None) -> contextlib.AbstractContextManager[Task]: ...

    def log(self, message: str) -> None: ...


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass


class Silent:
    """Reports nothing."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Task]:
        yield _NullTask()

    def log(self, message: str) -> None:
        pass


class RichReporter:
    """A rich progress bar per task, on stderr, plus log lines."""

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True)

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Task]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=self.console, transient=False) as progress:
            task_id = progress.add_task(description, total=total)

            class _Task:
                def advance(self, n: int = 1) -> None:
                    progress.advance(task_id, n)

            yield _Task()

    def log(self, message: str) -> None:
        self.console.print(message)
