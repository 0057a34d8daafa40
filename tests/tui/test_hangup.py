"""A hung-up terminal ends fmb-tui within seconds and keeps the label just pressed (real process in a pty)."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from fmb_engine.triage.labels import LabelStore, labels_path
from fmb_tui.label_writer import replay_spool, spool_path

pytestmark = pytest.mark.slow


class TuiProcess:
    """``fmb-tui`` on the Anomalies screen in its own session, with a pty as its terminal."""

    def __init__(self, root: Path) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        env = dict(os.environ, TERM="xterm-256color", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        self.proc = subprocess.Popen([sys.executable, "-m", "fmb_tui", str(root), "--screen", "anomalies"],
                                     stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        self.master, self.output = master, bytearray()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.output.extend(chunk)

    def wait_for(self, text: bytes, timeout: float = 90.0) -> None:
        end = time.monotonic() + timeout
        while text not in self.output:
            assert self.proc.poll() is None, f"fmb-tui ended early: {bytes(self.output[-2000:])!r}"
            assert time.monotonic() < end, f"no {text!r} on screen after {timeout}s"
            time.sleep(0.1)

    def ready(self) -> None:
        """The triage bar is drawn and the ranking's rows are on screen (keys act on a row)."""
        self.wait_for(b"labelled")
        self.wait_for(b"    1 ")  # rank 1's row

    def press(self, key: str) -> None:
        os.write(self.master, key.encode())

    def exit_seconds(self, sig: int, limit: float = 15.0) -> float:
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(limit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"fmb-tui still running {limit}s after signal {sig}") from None
        finally:
            os.close(self.master)
        return time.monotonic() - t0


def _labels(root: Path) -> dict[str, str]:
    from fmb_engine.workspace import Workspace

    with LabelStore(labels_path(Workspace(root))) as store:
        return store.labels()


def test_sighup_exits_promptly_and_keeps_the_label(tui_ws):
    tui = TuiProcess(tui_ws.root)
    tui.ready()  # the triage bar: the ranking is on screen
    tui.press("3")  # AGN on the first candidate ...
    tui.wait_for(b": 1/")  # ... shown as labelled, and at once the terminal goes away
    seconds = tui.exit_seconds(signal.SIGHUP)
    assert seconds < 5.0
    assert tui.proc.returncode == 128 + signal.SIGHUP
    assert list(_labels(tui_ws.root).values()) == ["AGN"]


def test_sigterm_while_another_user_holds_the_write_lock(tui_ws):
    """The label cannot be committed before the exit: it is spooled and committed by the next start."""
    tui = TuiProcess(tui_ws.root)
    tui.ready()
    tui.press("2")
    deadline = time.monotonic() + 20
    while not labels_path(tui_ws).is_file() or not _labels(tui_ws.root):
        assert time.monotonic() < deadline, "the first label was never committed"
        time.sleep(0.1)
    holder = sqlite3.connect(labels_path(tui_ws), isolation_level=None, timeout=30)
    holder.execute("BEGIN IMMEDIATE")  # someone else's long transaction
    try:
        tui.press("4")
        time.sleep(0.5)  # shown at once, its commit waits for the lock
        seconds = tui.exit_seconds(signal.SIGTERM)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert seconds < 8.0
    assert list(_labels(tui_ws.root).values()) == ["interesting"]  # not committed ...
    spooled = spool_path(labels_path(tui_ws))
    assert spooled.is_file()  # ... but kept, and committed by the next start
    with LabelStore(labels_path(tui_ws)) as store:
        assert replay_spool(spooled, store) == 1
        assert replay_spool(spooled, store) == 0  # gone once applied
    assert list(_labels(tui_ws.root).values()) == ["lens"]
