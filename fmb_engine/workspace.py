"""Where things live inside a workspace, how to find one, and how to write safely.

A workspace is a folder holding ``fmb.yaml`` and one sub-folder per kind of
artifact. Every file the engine writes goes through :func:`atomic_write` (temp
file in the same folder + ``os.replace``) so an interrupted write never leaves a
truncated artifact under its final name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fmb_engine.errors import ENVIRONMENT_ERRNOS, EnvironmentFault, WorkspaceError, environment_fault

WORKSPACE_FILE = "fmb.yaml"
ENV_VAR = "FMB_WORKSPACE"

#: Sub-folders created by ``fmb-engine init``; one per kind of artifact.
FOLDERS = ("survey", "embeddings", "scores", "analysis", "figures", "runs", "jobs", "checkpoints", "triage")

#: Files are readable by the group, never by everyone; in a group-shared folder (setgid bit,
#: ``fmb-engine init --shared``) they are writable by the group too, and new folders keep the bit.
FILE_MODE = 0o640
DIR_MODE = 0o750
SHARED_FILE_MODE = 0o660
SHARED_DIR_MODE = 0o2770


def is_group_shared(folder: str | os.PathLike[str]) -> bool:
    """A folder with the setgid bit is group-shared: what is made in it belongs to its group, writable by it."""
    try:
        return bool(os.stat(folder).st_mode & stat.S_ISGID)
    except OSError:
        return False


def file_mode_for(folder: str | os.PathLike[str]) -> int:
    """The mode of a new file in ``folder`` (the one rule every writer follows; see README "Group workspaces")."""
    return SHARED_FILE_MODE if is_group_shared(folder) else FILE_MODE


def make_dirs(path: str | os.PathLike[str]) -> Path:
    """``mkdir -p`` whose new folders get the mode of the rule, whatever the umask.

    A folder made inside a group-shared one is group-shared too (2770), else 0750.
    """
    path = Path(path)
    missing = []
    for folder in (path, *path.parents):
        if folder.is_dir():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:  # made meanwhile by another process
            continue
        os.chmod(folder, SHARED_DIR_MODE if is_group_shared(folder.parent) else DIR_MODE)
    return path

_INIT_TEMPLATE = """\
# FMB workspace configuration.
# Values here override the built-in defaults; a task config (--config FILE) and
# command-line flags override these. `fmb-engine config show` prints the
# effective value of every key and the layer it came from.
general:
  # The active survey every command works on: a name under survey/ or a path to an
  # .h5 file. `data mock` and `data import` set it to the survey they wrote;
  # --survey NAME overrides it for one command.
  survey: mock
"""


@dataclass(frozen=True)
class Workspace:
    """A workspace root and the conventional paths inside it."""

    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / WORKSPACE_FILE

    def folder(self, name: str) -> Path:
        if name not in FOLDERS:
            raise ValueError(f"unknown workspace folder {name!r}; expected one of {FOLDERS}")
        return self.root / name

    def survey_path(self, name: str) -> Path:
        """Survey file for ``name``: a bare name lives in ``survey/<name>.h5``."""
        candidate = Path(name)
        if candidate.suffix in (".h5", ".hdf5") or candidate.is_absolute() or len(candidate.parts) > 1:
            return candidate if candidate.is_absolute() else (Path.cwd() / candidate)
        return self.folder("survey") / f"{name}.h5"

    def surveys(self) -> list[Path]:
        return sorted(self.folder("survey").glob("*.h5"))

    @classmethod
    def init(cls, root: str | os.PathLike[str], exist_ok: bool = False, shared: bool = False) -> Workspace:
        """Create the folder layout and a commented ``fmb.yaml``.

        Re-running on an existing workspace with ``exist_ok`` only adds missing
        folders and never overwrites ``fmb.yaml``. ``shared`` makes the root and its
        folders group-shared (setgid, 2770: see :func:`file_mode_for`).
        """
        ws = cls(Path(root).expanduser().resolve())
        if ws.config_file.exists() and not exist_ok:
            raise WorkspaceError(
                f"{ws.root} is already a workspace ({WORKSPACE_FILE} exists); "
                "use it as it is, or pass --exist-ok to add missing folders"
            )
        make_dirs(ws.root)
        if shared:
            os.chmod(ws.root, SHARED_DIR_MODE)
        for name in FOLDERS:
            folder = make_dirs(ws.root / name)
            if shared:
                os.chmod(folder, SHARED_DIR_MODE)
        if not ws.config_file.exists():
            atomic_write_text(ws.config_file, _INIT_TEMPLATE)
        return ws

    @classmethod
    def find(cls, explicit: str | os.PathLike[str] | None = None, start: Path | None = None) -> Workspace:
        """Locate the workspace: ``--workspace``, then ``$FMB_WORKSPACE``, then cwd upwards."""
        if explicit is not None:
            return cls._checked(Path(explicit), "--workspace")
        env = os.environ.get(ENV_VAR)
        if env:
            return cls._checked(Path(env), f"${ENV_VAR}")
        here = (start or Path.cwd()).resolve()
        for folder in (here, *here.parents):
            if (folder / WORKSPACE_FILE).is_file():
                return cls(folder)
        raise WorkspaceError(
            f"no workspace found: no {WORKSPACE_FILE} in {here} or any parent folder. "
            f"Create one with `fmb-engine init DIR`, or point to one with --workspace or ${ENV_VAR}."
        )

    @classmethod
    def _checked(cls, path: Path, origin: str) -> Workspace:
        root = path.expanduser().resolve()
        if not (root / WORKSPACE_FILE).is_file():
            raise WorkspaceError(
                f"{root} (from {origin}) is not a workspace: {WORKSPACE_FILE} is missing. "
                "Create one with `fmb-engine init DIR`."
            )
        return cls(root)


#: h5py reports a failed write as a RuntimeError or an OSError whose errno and file are only in the text.
_H5_ERRNO = re.compile(r"errno = (\d+)")
_H5_FILE = re.compile(r"\b(?:file)?name = '([^']+)'")
#: The temporary name :func:`atomic_path` writes under: ``.NAME.XXXXXXXX.tmp`` beside ``NAME``.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")


def final_name(path: str | os.PathLike[str]) -> Path:
    """The file a temporary write path stands for (the path itself when it is not a temporary one)."""
    path = Path(path)
    match = _TEMP_NAME.match(path.name)
    return path.with_name(match["name"]) if match else path


def fault_of(exc: BaseException, final: str | os.PathLike[str] | None = None) -> EnvironmentFault | None:
    """The :class:`EnvironmentFault` behind a failed read or write, or None when the environment is not to blame.

    Reads the errno and file from an ``OSError``, or from the text where h5py only puts them
    there; names ``final`` (or the final name of a temporary file) rather than a hidden temp path.
    """
    code = getattr(exc, "errno", None)
    filename = getattr(exc, "filename", None)
    text = str(exc)
    if code not in ENVIRONMENT_ERRNOS and (found := _H5_ERRNO.search(text)):
        code = int(found[1])
    if code not in ENVIRONMENT_ERRNOS:
        return None
    if filename is None and (found := _H5_FILE.search(text)):
        filename = found[1]
    where = final if final is not None else (final_name(filename) if filename else None)
    doing = "write" if code in (errno.EROFS, errno.ENOSPC, errno.EDQUOT) else "access"
    return environment_fault(OSError(code, os.strerror(code), None if where is None else str(where)), doing)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it over ``final`` on success.

    On any exception the temporary file is removed and ``final`` is untouched. The
    file gets ``mode``, by default the folder's rule (:func:`file_mode_for`). A read-only,
    full or forbidden folder is an :class:`EnvironmentFault` naming ``final``.
    """
    final = Path(final)
    make_dirs(final.parent)
    mode = file_mode_for(final.parent) if mode is None else mode
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as exc:
        raise (fault_of(exc, final) or exc) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        named = getattr(exc, "filename", None)
        if isinstance(exc, (OSError, RuntimeError)) and named in (None, tmp_name, str(final)):
            fault = fault_of(exc, final)  # the write of this file failed: name it, not its temp name
            if fault is not None:
                raise fault from exc
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
