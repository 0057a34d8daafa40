"""Each stage on a hostile machine: read-only workspace, full disk, no write permission, non-UTF-8 fmb.yaml.

Every case must end in one ``error:`` line naming a path, the exit code of the table
(errors.EXIT_CODES: 5 for the environment, 1 for a bad config), no traceback, and every file
that was there before byte for byte as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.faults import harness
from tests.faults.conftest import SELECTED

#: Known defects, (stage, fault) -> the defect: a case listed here is expected to fail until it is fixed.
KNOWN: dict[tuple[str, str], str] = {}


def _stage(name: str) -> harness.Stage:
    return harness.STAGES[harness.STAGE_NAMES.index(name)]


def _cases(fault: str) -> list:
    return [pytest.param(s, marks=pytest.mark.xfail(strict=False, reason=KNOWN[(s, fault)]))
            if (s, fault) in KNOWN else s for s in SELECTED]


def _copy(baseline: harness.Baseline, stage: str, into: Path) -> Path:
    shutil.copytree(baseline.before[stage], into, symlinks=True, dirs_exist_ok=True)
    return into


def _check(done, code: int, ws: Path, before: dict[str, str], after: dict[str, str]) -> None:
    problems = harness.refusal_problems(done, code, ws)
    changed = sorted(p for p in before if after.get(p) != before[p])
    if changed:
        problems.append(f"files changed or removed by the failed run: {changed}")
    assert not problems, "\n".join(problems)


@pytest.fixture
def mountpoint(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only or tiny file system needs root; not root here")
    point = tmp_path / "mnt"
    point.mkdir()
    yield point
    harness.unmount(point)


@pytest.mark.parametrize("stage", _cases("read-only"))
def test_read_only_workspace(baseline, mountpoint, stage):
    ws = _copy(baseline, stage, mountpoint)
    if (why := harness.mount("--bind", str(ws), str(ws))) or (why := harness.mount("-o", "remount,bind,ro", str(ws))):
        pytest.skip(f"cannot make a read-only bind mount: {why}")
    before = harness.raw_digests(ws)
    done = harness.run_stage(_stage(stage), ws)
    _check(done, 5, ws, before, harness.raw_digests(ws))
    assert "read-only" in done.stderr


@pytest.mark.parametrize("stage", _cases("full-disk"))
def test_full_disk(baseline, mountpoint, stage):
    """A tmpfs that holds the stage's inputs and 64 KiB more: the outputs do not fit."""
    size = harness.fs_bytes(baseline.before[stage]) + 64 * 1024
    if why := harness.mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)):
        pytest.skip(f"cannot mount a tmpfs: {why}")
    ws = _copy(baseline, stage, mountpoint)
    before = harness.raw_digests(ws)
    done = harness.run_stage(_stage(stage), ws)
    _check(done, 5, ws, before, harness.raw_digests(ws))
    said = " ".join(done.stderr.split())
    assert "no space left" in said or ("needed" in said and "free space" in said)  # refused before writing


@pytest.fixture(scope="session")
def unprivileged():
    found = harness.drop_privileges()
    if found is None:
        pytest.skip("needs root and setpriv to run a command as a user the folder refuses")
    return found


@pytest.fixture
def open_folder():
    """A folder any user can reach (pytest's own are 0700, closed to ``nobody``)."""
    folder = Path(tempfile.mkdtemp(prefix="fmb-faults-"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("stage", _cases("no-permission"))
def test_workspace_not_writable_for_the_user(baseline, open_folder, unprivileged, stage):
    """Owned by another user, mode 0755/0644: the command's user may read but not write."""
    prefix, who = unprivileged
    ws = _copy(baseline, stage, open_folder / "ws")
    for path in [ws, *ws.rglob("*")]:
        os.chown(path, 12345, 12345, follow_symlinks=False)
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    before = harness.raw_digests(ws)
    done = harness.run_stage(_stage(stage), ws, prefix)
    _check(done, 5, ws, before, harness.raw_digests(ws))
    assert "permission denied" in done.stderr, who


@pytest.mark.parametrize("stage", _cases("non-utf8-config"))
def test_non_utf8_workspace_config(baseline, tmp_path, stage):
    ws = _copy(baseline, stage, tmp_path / "ws")
    config = ws / "fmb.yaml"
    config.write_bytes(config.read_bytes() + "# caf\u00e9 in Latin-1\n".encode("latin-1"))
    before = harness.raw_digests(ws)
    done = harness.run_stage(_stage(stage), ws)
    _check(done, 1, ws, before, harness.raw_digests(ws))
    assert "fmb.yaml" in done.stderr and "UTF-8" in done.stderr
