"""Ctrl-C and SIGTERM during a survey write take effect between chunks, never inside one.

Why: Python raises ``KeyboardInterrupt`` wherever the main thread happens to be. Inside
an HDF5 call sequence it tears the chunk being written; inside a finaliser or weakref
callback (h5py has many) Python prints "Exception ignored" and the interrupt is lost, so
the command runs on. While a writer holds :func:`deferred`, a signal is only recorded; the
loop calls ``check()`` after each committed chunk, and that raises through the handler that
was installed before (``KeyboardInterrupt`` for SIGINT; the CLI's SIGTERM handler, exit 143).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def deferred() -> Iterator[Callable[[], None]]:
    """Hold SIGINT/SIGTERM until ``check()`` (or the end of the block) delivers them.

    Outside the main thread signal handlers cannot change; ``check`` is then a no-op and
    signals behave as usual.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    pending: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}

    def record(signum: int, frame: object) -> None:
        pending.append(signum)

    def check() -> None:
        if pending:
            signum = pending[0]
            pending.clear()
            _deliver(signum, previous[signum])

    for sig in _SIGNALS:
        signal.signal(sig, record)
    try:
        yield check
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    check()


def _deliver(signum: int, handler: object) -> None:
    """Run the handler that was in place before; the defaults end the command as they would have."""
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.raise_signal(signum)  # SIGTERM's default: the process ends
