"""The shared ground of integrity: exit codes, write locks, group-sharing modes."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fmb_engine import locks
from fmb_engine.errors import EXIT_CODES, BusyError, EnvironmentFault, environment_fault
from fmb_engine.workspace import Workspace, atomic_write_text, make_dirs

ROOT = Path(__file__).resolve().parents[3]


def test_readme_lists_every_exit_code():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = dict(re.findall(r"^\| (\d+) \| ([^|]+) \|$", readme, flags=re.M))
    assert {int(k) for k in table} == set(EXIT_CODES)


def test_environment_errnos_become_faults_naming_the_path(tmp_path):
    import errno

    fault = environment_fault(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.h5")), "write")
    assert isinstance(fault, EnvironmentFault) and fault.exit_code == 5
    assert str(fault).startswith(f"cannot write {tmp_path / 'x.h5'}: no space left")
    assert environment_fault(OSError(errno.ENOENT, "gone", "x")) is None  # not the environment's doing


def _holder_script(target: Path, ready: Path) -> str:
    return textwrap.dedent(f"""
        import time, pathlib
        from fmb_engine import locks
        with locks.hold({str(target)!r}, "the test output"):
            pathlib.Path({str(ready)!r}).write_text("held")
            time.sleep(60)
    """)


def test_a_second_writer_is_told_who_is_busy_and_a_dead_holders_lock_is_taken(tmp_path):
    target, ready = tmp_path / "out.h5", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", _holder_script(target, ready)])
    try:
        for _ in range(600):
            if ready.exists():
                break
            proc.poll()
            assert proc.returncode is None, "the holder died"
            import time

            time.sleep(0.05)
        record = locks.holder(target)
        assert record is not None and record["pid"] == proc.pid
        with pytest.raises(BusyError) as exc, locks.hold(target, "the test output"):
            pass
        assert f"busy: the test output is being written by PID {proc.pid}" in str(exc.value)
        assert exc.value.exit_code == 3
    finally:
        proc.kill()  # SIGKILL: no clean-up; the kernel drops the lock
        proc.wait()
    assert locks.holder(target) is None
    with locks.hold(target, "the test output") as stale:
        assert stale is not None and stale["pid"] == proc.pid  # the dead holder's record, for "resuming"
        with locks.hold(target, "the test output") as again:  # nested in one process: no self-deadlock
            assert again is None
        assert locks.holder(target)["pid"] == os.getpid()  # the inner exit kept the outer lock
    assert locks.holder(target) is None
    with locks.hold(target, "the test output") as stale:
        assert stale is None  # a clean release leaves no record


def test_group_shared_workspace_modes(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "umask", os.umask)  # restored by monkeypatch
    old = os.umask(0o077)  # a strict umask must not decide the modes
    try:
        shared = Workspace.init(tmp_path / "shared", shared=True)
        private = Workspace.init(tmp_path / "private")
    finally:
        os.umask(old)
    for ws, dir_mode, file_mode in ((shared, 0o2770, 0o660), (private, 0o750, 0o640)):
        assert stat.S_IMODE(ws.root.stat().st_mode) == dir_mode
        assert stat.S_IMODE(ws.folder("scores").stat().st_mode) == dir_mode
        assert stat.S_IMODE(ws.config_file.stat().st_mode) == file_mode
        nested = make_dirs(ws.folder("analysis") / "a" / "b")
        assert stat.S_IMODE(nested.stat().st_mode) == dir_mode
        written = atomic_write_text(nested / "t.txt", "x")
        assert stat.S_IMODE(written.stat().st_mode) == file_mode
        with locks.hold(ws.folder("scores"), "scores"):
            assert stat.S_IMODE(locks.lock_path(ws.folder("scores")).stat().st_mode) == file_mode
