"""User-facing errors and the exit codes they map to.

Anything a user can cause (bad config, missing file, malformed input, a busy or
read-only workspace) raises a subclass of :class:`FMBError`. Front ends print its
message without a traceback and exit with its ``exit_code``; anything else is a
bug and keeps its traceback. The table of codes is :data:`EXIT_CODES` (README,
"Exit codes"); a test keeps the two equal.
"""

from __future__ import annotations

import errno

#: Every exit code of ``fmb-engine``: code -> meaning. Click's own usage errors are 2.
EXIT_CODES = {
    0: "success",
    1: "user error: bad input, config or data (the message says which file, key or object)",
    2: "usage error: unknown command or option, bad option value",
    3: "busy: another process is writing the same store or stage output",
    4: "stale or foreign inputs: an input was made from other data than the one given with it",
    5: "environment: a read-only path, a full disk or quota, a permission refused",
    130: "interrupted (Ctrl-C, SIGINT); partial outputs are kept and resume on the next run",
    143: "terminated (SIGTERM); as 130",
}


class FMBError(Exception):
    """An error the user can fix; its message says what and where."""

    exit_code = 1


class ConfigError(FMBError):
    """Invalid configuration: unknown key, wrong type or range, missing file."""


class WorkspaceError(FMBError):
    """No workspace found, or a workspace layout problem."""


class DataError(FMBError):
    """Malformed, incomplete or inconsistent input data."""


class BusyError(FMBError):
    """Another process holds the lock of a store or stage output."""

    exit_code = 3


class StaleError(FMBError):
    """An input does not belong with the others (made from another survey, embedding or run)."""

    exit_code = 4


class EnvironmentFault(FMBError):
    """The machine refused a write or read: read-only file system, disk full, permission denied."""

    exit_code = 5


#: errno values that are the environment's doing, not a bug, each with the advice shown.
ENVIRONMENT_ERRNOS = {
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device; free space or point the workspace elsewhere",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied; check the owner, group and mode of the folder",
    errno.EPERM: "operation not permitted; check the owner, group and mode of the folder",
}


def environment_fault(exc: OSError, doing: str = "") -> EnvironmentFault | None:
    """The :class:`EnvironmentFault` an ``OSError`` stands for (naming its path), or None for other errors."""
    advice = ENVIRONMENT_ERRNOS.get(exc.errno or -1)
    if advice is None:
        return None
    where = exc.filename or "(path unknown)"
    verb = f"{doing} " if doing else ""
    return EnvironmentFault(f"cannot {verb}{where}: {advice} ({exc.strerror or exc})")
