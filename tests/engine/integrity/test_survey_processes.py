"""data mock / data verify as real processes: kills, Ctrl-C, two writers, a full disk, flipped bytes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import pytest

from fmb_engine import locks
from fmb_engine.cli.main import main
from fmb_engine.config import load
from fmb_engine.survey.stages import make_mock
from fmb_engine.survey.store import SurveyReader, partial_path
from fmb_engine.workspace import Workspace

ENGINE = [str(Path(sys.executable).with_name("fmb-engine"))]
#: 10 chunks of 40 objects with one render worker: long enough to be caught in the middle.
SLOW_MOCK = "mock:\n  batch_size: 40\n  workers: 1\n"
ENV = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3]))


def children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from /proc; psutil is not a dependency)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_mock(ws: Path, *extra: str) -> subprocess.Popen:
    (ws / "slow.yaml").write_text(SLOW_MOCK)
    return subprocess.Popen([*ENGINE, "data", "mock", "-n", "400", "--image-size", "16", "-w", str(ws), "-c",
                             str(ws / "slow.yaml"), *extra], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def wait_for(condition, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def worker_started(proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"data mock ended early: {proc.communicate()}")
    return any("spawn_main" in Path(f"/proc/{c}/cmdline").read_text(errors="replace")
               for c in children(proc.pid) if Path(f"/proc/{c}/cmdline").exists())


def committed(ws: Path) -> int:
    try:
        with h5py.File(partial_path(ws / "survey" / "mock.h5"), "r", locking=False) as f:  # being written
            return int(f.attrs["n_objects"])
    except (OSError, KeyError, RuntimeError):
        return 0


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return Workspace.init(tmp_path / "ws").root


@pytest.mark.slow
@pytest.mark.parametrize("when", ["worker starting", "chunks written"])
def test_a_killed_data_mock_leaves_no_render_worker(ws, when):
    proc = start_mock(ws)
    wait_for(lambda: worker_started(proc))
    if when == "chunks written":
        wait_for(lambda: committed(ws) >= 40)
    kids = children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    wait_for(lambda: not any(alive(k) for k in kids), timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_ctrl_c_and_sigterm_end_with_one_line_and_the_partial_resumes(ws, sig, code, word):
    proc = start_mock(ws)
    wait_for(lambda: committed(ws) >= 40)
    kids = children(proc.pid)
    os.killpg(proc.pid, sig)  # as a terminal's Ctrl-C: the whole process group, the worker too
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == code, err
    assert out == "", out  # the message is on stderr; stdout holds results only
    assert "Traceback" not in err and "Error" not in err, err
    said = [line for line in err.splitlines() if word in line]
    assert said == [f"{word}: partial outputs are kept and resume on the next run"], err
    wait_for(lambda: not any(alive(k) for k in kids), timeout=30)  # the resource tracker ends on its pipe's EOF
    cfg = load("mock", Workspace.find(ws), cli={"objects": 400, "image_size": 16, "batch_size": 40, "workers": 1})
    result = make_mock(Workspace.find(ws), cfg)
    assert result.summary["objects"] == 400
    with SurveyReader(result.outputs["survey"]) as r:
        assert r.verify()["recomputed"]


@pytest.mark.slow
def test_two_data_mock_at_once_one_runs_the_other_is_busy(ws):
    first = start_mock(ws)
    target = ws / "survey" / "mock.h5"
    wait_for(lambda: locks.holder(target) is not None or first.poll() is not None)
    second = start_mock(ws)
    _, err = second.communicate(timeout=240)
    assert second.returncode == 3, err
    assert "busy:" in err and "survey store survey/mock.h5" in err and str(first.pid) in err
    _, err = first.communicate(timeout=240)
    assert first.returncode == 0, err
    with SurveyReader(target) as r:
        assert r.n_objects == 400 and r.verify()["recomputed"]


@pytest.fixture
def small_fs(tmp_path: Path, request: pytest.FixtureRequest):
    """A small tmpfs (root only; 8m unless parametrized indirectly); unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    size = getattr(request, "param", "8m")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_data_mock_on_a_full_disk_says_needed_and_free_and_writes_nothing(small_fs):
    ws = Workspace.init(small_fs / "ws").root
    done = subprocess.run([*ENGINE, "data", "mock", "-n", "200", "--image-size", "16", "-w", str(ws)],
                          env=ENV, capture_output=True, text=True, timeout=240)
    assert done.returncode == 5, done.stderr
    message = " ".join(done.stderr.split())
    assert f"cannot write {ws / 'survey' / 'mock.h5.partial'}" in message
    assert "MB needed" in message and "MB free" in message
    assert "Traceback" not in done.stderr
    assert not (ws / "survey" / "mock.h5").exists() and not (ws / "survey" / "mock.h5.partial").exists()


@pytest.mark.parametrize("small_fs", ["32m"], indirect=True)  # room for a first chunk: a new file takes ~10 MB
def test_space_running_out_between_chunks_is_an_error_naming_the_file_and_the_partial_resumes(small_fs):
    """Another writer fills the disk between two chunks: a clean EnvironmentFault before the chunk is
    written, the earlier store untouched, the partial intact; the process exits normally (no segfault)."""
    script = textwrap.dedent(f"""
        import os
        import numpy as np
        from pathlib import Path
        from fmb_engine.errors import EnvironmentFault
        from fmb_engine.survey.bands import wavelength_grid
        from fmb_engine.survey.store import SurveyWriter
        from tests.engine.survey.test_store import chunk
        root = Path({str(small_fs)!r})
        (root / "s.h5").write_bytes(b"the existing store")
        def writer():
            return SurveyWriter(root / "s.h5", image_size=8, wavelength=wavelength_grid(), rgb=True, generator="t",
                                params={{}})
        w = writer()
        rng = np.random.default_rng(0)
        w.append(*chunk(0, 4, rng))
        with open(root / "filler", "wb") as f:  # nearly full: 1 MB left, less than the next chunk
            free = os.statvfs(root).f_bavail * os.statvfs(root).f_frsize
            f.write(b"x" * (free - (1 << 20)))
        try:
            w.append(*chunk(4, 60, rng))
        except EnvironmentFault as exc:
            print("FAULT", exc)
            w.abort()
        (root / "filler").unlink()
        print("RESUMED", writer().resumed_from)
    """)
    done = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=240,
                          cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr[-2000:]
    out = " ".join(done.stdout.split())
    assert f"FAULT cannot write {small_fs / 's.h5.partial'}: about" in out and "MB needed" in out, out
    assert "RESUMED 4" in out
    assert (small_fs / "s.h5").read_bytes() == b"the existing store"


def flip_byte(path: Path, dataset: str, row: int = 5) -> None:
    """Flip one stored bit of ``dataset``: mid-chunk when compressed, inside ``row`` when not."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        info = ds.id.get_chunk_info(0)
        row_bytes = ds.dtype.itemsize * int(ds[0].size)
        offset = info.byte_offset + (info.size // 2 if ds.compression else row * row_bytes)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ 0x01]))


def test_data_verify_passes_a_clean_store_and_names_a_flipped_byte(tmp_path, capsys):
    ws = Workspace.init(tmp_path / "ws")
    survey = make_mock(ws, load("mock", ws, cli={"objects": 60, "image_size": 16, "workers": -1})).outputs["survey"]
    clean = survey.read_bytes()
    with pytest.raises(SystemExit) as exit_:
        main(["data", "verify", "-w", str(ws.root)])
    assert exit_.value.code == 0
    assert "OK:" in capsys.readouterr().out
    for dataset in ("images/rgb", "images/bands", "objects/ra"):
        survey.write_bytes(clean)
        flip_byte(survey, dataset)
        with pytest.raises(SystemExit) as exit_:
            main(["data", "verify", "--survey", "mock", "-w", str(ws.root)])
        err = " ".join(capsys.readouterr().err.split())
        assert exit_.value.code == 1, err
        assert f"error: {survey}: chunk 0 (rows 0-59): {dataset} does not match the recorded digest" in err
