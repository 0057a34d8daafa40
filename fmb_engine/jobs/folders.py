"""Job folders: the modes of what jobs write, and the checks on a folder before FMB reads it.

Modes follow the workspace rule (:func:`fmb_engine.workspace.file_mode_for`): 0640
files and 0750 folders, or 0660/2770 in a group-shared (setgid) folder. submitit,
SLURM and the job process create files with the process umask, so submission runs
under :func:`creation_umask` (``sbatch`` passes it on to the job as ``SLURM_UMASK``,
local jobs inherit it), the job process sets it again for itself, and
:func:`apply_modes` fixes what already exists.

:func:`verify_folder` is what ``jobs attach`` asks of a folder made elsewhere: yours (or
the workspace group's in a group-shared workspace), writable by nobody else beyond
that rule, and a submitit folder.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from fmb_engine.jobs import JobsError
from fmb_engine.workspace import DIR_MODE, SHARED_DIR_MODE, Workspace, file_mode_for, is_group_shared

PRIVATE_UMASK = 0o027
SHARED_UMASK = 0o007


def umask_for(folder: str | os.PathLike[str]) -> int:
    """The umask that gives new files in ``folder`` the rule's mode (group-shared: 0660, else 0640)."""
    return SHARED_UMASK if is_group_shared(folder) else PRIVATE_UMASK


@contextlib.contextmanager
def creation_umask(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Run a block (a submission: sbatch or the local job's processes start here) under :func:`umask_for`.

    The umask belongs to the whole process; the block is short, and the mask is never
    looser than the workspace rule for anything made meanwhile.
    """
    old = os.umask(umask_for(folder))
    try:
        yield
    finally:
        os.umask(old)


def apply_modes(folder: str | os.PathLike[str]) -> None:
    """Give ``folder`` and everything in it that this user owns the rule's modes (others' files are left)."""
    root = Path(folder)
    dir_mode = SHARED_DIR_MODE if is_group_shared(root.parent) or is_group_shared(root) else DIR_MODE
    me = os.geteuid()
    for path in (root, *sorted(root.rglob("*"))):
        with contextlib.suppress(OSError):
            st = path.lstat()
            if st.st_uid != me or stat.S_ISLNK(st.st_mode):
                continue
            if stat.S_ISDIR(st.st_mode):
                os.chmod(path, dir_mode)
            elif stat.S_ISREG(st.st_mode):
                os.chmod(path, file_mode_for(path.parent))


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


def _problems(path: Path, st: os.stat_result, me: int, shared_gid: int | None) -> list[str]:
    kind = "folder" if stat.S_ISDIR(st.st_mode) else "file"
    mode = f"mode {stat.S_IMODE(st.st_mode):04o}"
    group_ok = shared_gid is not None and st.st_gid == shared_gid
    out = []
    if st.st_uid != me and not group_ok:
        whose = f"nor in the workspace group {_group(shared_gid)}" if shared_gid is not None else \
            "and the workspace is not group-shared"
        out.append(f"{kind} {path} belongs to {_user(st.st_uid)}, not to you ({_user(me)}), {whose}")
    if st.st_mode & stat.S_IWOTH:
        out.append(f"{kind} {path} is writable by everyone ({mode})")
    elif st.st_mode & stat.S_IWGRP and not group_ok:
        out.append(f"{kind} {path} is writable by its group {_group(st.st_gid)} ({mode}), which is not "
                   + ("the workspace group" if shared_gid is not None else "allowed: the workspace is not group-shared"))
    return out


def verify_folder(ws: Workspace, folder: Path, files: Iterable[Path]) -> None:
    """Refuse a folder (and the job files in it) that someone else could have written; say what is wrong.

    Allowed: owned by you; or, in a group-shared workspace (setgid root), belonging to the
    workspace's group. Never writable by everyone; group-writable only in that shared case.
    Symbolic links and non-regular job files are refused: FMB reads these files.
    """
    me = os.geteuid()
    shared_gid = os.stat(ws.root).st_gid if is_group_shared(ws.root) else None
    problems: list[str] = []
    st = folder.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        problems.append(f"{folder} is not a plain folder")
    else:
        problems += _problems(folder, st, me, shared_gid)
    for path in files:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            problems.append(f"{path} is not a regular file ({'a symbolic link' if stat.S_ISLNK(st.st_mode) else 'special'})")
            continue
        problems += _problems(path, st, me, shared_gid)
    if problems:
        raise JobsError(f"refusing to attach {folder}: someone other than you could have written it; FMB reads "
                        "only job folders that you (or your workspace's group) control:\n  " + "\n  ".join(problems))


__all__ = ["apply_modes", "creation_umask", "umask_for", "verify_folder", "PRIVATE_UMASK", "SHARED_UMASK"]
