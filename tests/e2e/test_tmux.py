"""End to end in a real terminal: fmb-tui in tmux, real key presses, quit, check the database.

Needs tmux (CI: `apt-get install tmux`); skipped where it is missing. Each test uses its own
tmux server socket, so a developer's tmux is never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fmb_engine.rankings import systems_path
from fmb_engine.triage.labels import LabelStore
from fmb_engine.workspace import Workspace
from fmb_tui.synthetic import populate

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

FMB_TUI = Path(sys.executable).with_name("fmb-tui")


class Tmux:
    def __init__(self, socket: Path, session: str = "e2e"):
        self.socket, self.session = socket, session

    def __call__(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(["tmux", "-S", str(self.socket), *args], capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout

    def screen(self, escapes: bool = False) -> str:
        return self("capture-pane", "-p", *(["-e"] if escapes else []), "-t", self.session, check=False)

    def wait_for(self, predicate, what: str, timeout: float = 20.0) -> str:
        end = time.monotonic() + timeout
        text = ""
        while time.monotonic() < end:
            text = self.screen()
            if predicate(text):
                return text
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; screen:\n{text}")

    def keys(self, *keys: str) -> None:
        self("send-keys", "-t", self.session, *keys)

    def start(self, command: str, width: int = 100, height: int = 30) -> None:
        self("new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height), command)
        self("set-option", "-t", self.session, "remain-on-exit", "on")

    def dead(self) -> bool:
        out = self("display-message", "-p", "-t", self.session, "#{pane_dead}", check=False).strip()
        return out == "1"

    def kill_server(self) -> None:
        self("kill-server", check=False)


@pytest.fixture
def mock_ws(tmp_path: Path, small_survey: Path, monkeypatch) -> Workspace:
    monkeypatch.delenv("FMB_WORKSPACE", raising=False)
    ws = Workspace.init(tmp_path / "ws")
    os.symlink(small_survey, ws.folder("survey") / "mock.h5")
    populate(ws, ws.folder("survey") / "mock.h5", neighbours=False)
    return ws


@pytest.fixture
def tmux(tmp_path: Path):
    t = Tmux(tmp_path / "tmux.sock")
    yield t
    t.kill_server()


def top_ids(ws: Workspace, system: str = "astropt/fused/geo", n: int = 3) -> list[str]:
    table = pq.read_table(systems_path(ws), columns=["object_id", f"rank:{system}"]).to_pandas()
    return table.sort_values(f"rank:{system}")["object_id"].head(n).tolist()


def command(ws: Workspace) -> str:
    # a 256-colour terminal without truecolor (no COLORTERM), as on many login nodes
    return f"env -u COLORTERM TERM=xterm-256color LANG=C.UTF-8 {FMB_TUI} {ws.root} --screen anomalies"


def test_triage_three_objects_with_real_keys(mock_ws, tmux):
    # the shell reports the exit status (tmux's pane_dead_status is not reliable across versions)
    tmux.start(f"sh -c '{command(mock_ws)}; echo fmb-tui exited with $?; sleep 60'")
    tmux.wait_for(lambda s: "top-100: 0/100 labelled" in s and "mock42-" in s, "the ranking")
    tmux.keys("1")
    tmux.wait_for(lambda s: "top-100: 1/100" in s, "the first label")
    tmux.keys("j", "2")
    tmux.wait_for(lambda s: "top-100: 2/100" in s, "the second label")
    tmux.keys("j", "4")
    screen = tmux.wait_for(lambda s: "top-100: 3/100" in s, "the third label")
    assert "artefact" in screen and "interesting" in screen and "lens" in screen
    coloured = tmux.screen(escapes=True)
    assert "\x1b[38;5;" in coloured or "\x1b[48;5;" in coloured  # 256-colour sequences ...
    assert "38;2;" not in coloured and "48;2;" not in coloured  # ... and no truecolor ones
    tmux.keys("q")
    tmux.wait_for(lambda s: "fmb-tui exited with" in s, "fmb-tui to exit")
    assert "fmb-tui exited with 0" in tmux.screen()
    first, second, third = top_ids(mock_ws)
    with LabelStore.for_workspace(mock_ws, user="checker") as db:
        assert db.labels() == {first: "artefact", second: "interesting", third: "lens"}
        hist = db.history()
        assert [e.rank for e in hist] == [1, 2, 3] and all(e.user and e.time for e in hist)


def test_hangup_exits_cleanly_and_keeps_labels(mock_ws, tmux):
    """The SSH connection drops: the TUI gets SIGHUP, saves, restores the terminal and exits."""
    tmux.start(f"sh -c '{command(mock_ws)}; echo fmb-tui exited with $?; sleep 60'")
    tmux.wait_for(lambda s: "top-100: 0/100 labelled" in s and "mock42-" in s, "the ranking")
    shell = int(tmux("display-message", "-p", "-t", tmux.session, "#{pane_pid}").strip())
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(shell)], capture_output=True, text=True).stdout.split()
    assert len(children) == 1
    tmux.keys("5")
    tmux.wait_for(lambda s: "top-100: 1/100" in s, "the label")
    os.kill(int(children[0]), signal.SIGHUP)
    screen = tmux.wait_for(lambda s: "fmb-tui exited with" in s, "fmb-tui to exit", timeout=15)
    assert "fmb-tui exited with 129" in screen  # 128 + SIGHUP, returned by the app itself ...
    assert "top-100" not in screen  # ... after leaving the alternate screen: a clean exit, not a kill
    with LabelStore.for_workspace(mock_ws) as db:
        assert db.labels() == {top_ids(mock_ws, n=1)[0]: "merger"}
