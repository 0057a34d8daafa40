"""One writer per store and per stage output: lock files with their owner.

A writer takes ``<folder>/.<name>.lock`` for what it writes (a survey store, an
embedding run, the detect outputs...). The lock is a POSIX record lock
(``fcntl.lockf``, honoured over NFS through the lock manager) on that file, and
the file names its holder (PID, host, user, command, since when) so that a second
writer is told who is busy instead of racing it. The kernel drops the lock when
its process dies, however it dies: a lock file left by a killed process is stale
by construction and the next writer simply takes it (and says so), no PID
guessing needed. The file itself is left in place; an empty or unreadable one
is only a stale record.

Within one process the same lock may be taken again (a stage calling another
stage that locks the same output): POSIX locks belong to the process, and closing
a second descriptor of the file would drop the first one's lock, so a process
keeps one descriptor per lock and counts nested holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from fmb_engine.errors import BusyError
from fmb_engine.workspace import file_mode_for, make_dirs

#: path of a lock file -> [open descriptor, nested holds] for the locks this process holds.
_HELD: dict[Path, list[int]] = {}


def lock_path(target: str | os.PathLike[str]) -> Path:
    """The lock file guarding ``target`` (a file or a folder): a hidden file beside it."""
    target = Path(target).absolute()
    return target.with_name(f".{target.name}.lock")


def holder(target: str | os.PathLike[str]) -> dict[str, object] | None:
    """Who holds the lock of ``target`` now, or None when nobody does (a left-over file is no holder)."""
    path = lock_path(target)
    if path in _HELD:
        return _record("this process")
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return _read(fd) or {"pid": "?", "host": "?", "user": "?", "since": "?", "command": "?"}
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold(target: str | os.PathLike[str], what: str) -> Iterator[dict[str, object] | None]:
    """Hold the write lock of ``target`` for the block; :class:`BusyError` when another process holds it.

    ``what`` names the output for the message ("survey store survey/mock.h5"). The
    block gets the record of a previous holder that died holding it (its work may
    need resuming; callers may say so), else None.
    """
    path = lock_path(target)
    if path in _HELD:
        _HELD[path][1] += 1
        try:
            yield None
        finally:
            _HELD[path][1] -= 1
        return
    make_dirs(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode_for(path.parent))
    with contextlib.suppress(OSError):  # whatever the umask; another member's file stays theirs
        os.fchmod(fd, file_mode_for(path.parent))
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        record = _read(fd)
        os.close(fd)
        raise BusyError(_busy_message(what, record, path)) from None
    try:
        stale = _read(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(_record(" ".join(sys.argv))) + "\n").encode(), 0)
        _HELD[path] = [fd, 1]
        yield stale
    finally:
        _HELD.pop(path, None)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # a lock file left behind names no holder
        os.close(fd)  # releases the lock


def _record(command: str) -> dict[str, object]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "user": _user(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command}


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return str(os.getuid())


def _read(fd: int) -> dict[str, object] | None:
    try:
        data = os.pread(fd, 4096, 0)
        record = json.loads(data.decode("utf-8")) if data.strip() else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _busy_message(what: str, record: dict[str, object] | None, path: Path) -> str:
    if record is None:
        who = "another process (it has not written its name yet)"
    else:
        who = (f"PID {record.get('pid', '?')} on {record.get('host', '?')} (user {record.get('user', '?')}) "
               f"since {record.get('since', '?')}: {record.get('command', '?')}")
    return (f"busy: {what} is being written by {who}. Wait for it to finish, or stop it; "
            f"the lock ({path}) goes with its process.")
