"""User-facing errors.

Anything a user can cause (bad config, missing file, malformed input) raises a
subclass of :class:`FMBError`. Front ends print its message without a traceback
and exit non-zero; anything else is a bug and keeps its traceback.
"""


class FMBError(Exception):
    """An error the user can fix; its message says what and where."""

    exit_code = 2


class ConfigError(FMBError):
    """Invalid configuration: unknown key, wrong type or range, missing file."""


class WorkspaceError(FMBError):
    """No workspace found, or a workspace layout problem."""


class DataError(FMBError):
    """Malformed, incomplete or inconsistent input data."""
