"""Fixtures of the TUI tests: a small mock workspace with synthetic detection outputs."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from fmb_engine.config.tui import TuiConfig
from fmb_engine.workspace import Workspace
from fmb_tui.synthetic import populate


@pytest.fixture(autouse=True)
def _no_ambient_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FMB_WORKSPACE", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)


@pytest.fixture(autouse=True)
def _strict_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """An internal error the app logs and survives still fails the test that caused it (run_test re-raises it)."""
    from fmb_tui.app import FMBApp

    monkeypatch.setattr(FMBApp, "strict_errors", True)


@pytest.fixture(scope="session")
def tui_template(small_survey: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Survey (a link to the shared one) + rankings, comparisons and neighbours; copied per test."""
    root = tmp_path_factory.mktemp("tui-template") / "ws"
    ws = Workspace.init(root)
    os.symlink(small_survey, ws.folder("survey") / "mock.h5")
    populate(ws, ws.folder("survey") / "mock.h5")
    return root


#: the systems of the discovery workspace: one embedding run (cca) the re-rank can learn on
DISCOVER_SYSTEMS = ("cca/image/flow", "cca/spectrum/flow", "cca/cross/mismatch", "cca/fused/geo")


@pytest.fixture(scope="session")
def discover_template(small_survey: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small survey, its cca embeddings (the weight-free baseline) and rankings of cca systems: re-rankable."""
    from fmb_engine.config import load
    from fmb_engine.embed.run import embed_survey

    root = tmp_path_factory.mktemp("discover-template") / "ws"
    ws = Workspace.init(root)
    survey = ws.folder("survey") / "mock.h5"
    os.symlink(small_survey, survey)
    embed_survey(ws, survey, "cca", load("embed.cca", ws))
    populate(ws, survey, systems=DISCOVER_SYSTEMS)
    return root


@pytest.fixture
def discover_ws(discover_template: Path, tmp_path: Path) -> Workspace:
    dst = tmp_path / "ws"
    shutil.copytree(discover_template, dst, symlinks=True)
    return Workspace(dst)


@pytest.fixture
def tui_ws(tui_template: Path, tmp_path: Path) -> Iterator[Workspace]:
    dst = tmp_path / "ws"
    shutil.copytree(tui_template, dst, symlinks=True)
    ws = Workspace(dst)
    yield ws
    _cancel_submitted(ws)


def _cancel_submitted(ws: Workspace) -> None:
    """A run a test submitted from a form (ctrl+s; the fuzzer too) must not outlive the test: a local
    retrain job went on for an hour in the background, with 8 GB, after the test had passed.

    The submission runs in a worker thread that may still be registering the run when the app has
    exited, so while a run folder in jobs/ is not in the registry yet, look again (at most 30 s)."""
    import time
    import warnings

    from fmb_engine.jobs import JobsError
    from fmb_engine.jobs.registry import open_registry
    from fmb_engine.jobs.submission import cancel

    folder = ws.folder("jobs")
    deadline = time.monotonic() + 30
    while True:
        folders = {p.name for p in folder.glob("*T*-*") if p.is_dir()} if folder.is_dir() else set()
        if not folders:
            return
        reg = open_registry(ws)
        try:
            runs = reg.runs()
            for run in runs:
                if any(job.active for job in reg.jobs(run.run_id)):
                    try:
                        cancel(ws, run.run_id, registry=reg)
                    except JobsError as exc:  # e.g. a SLURM controller gone: nothing more a test can do
                        warnings.warn(f"could not cancel {run.run_id}: {exc}", stacklevel=1)
        finally:
            reg.close()
        if folders <= {run.run_id for run in runs} or time.monotonic() > deadline:
            return
        time.sleep(0.5)


@pytest.fixture
def config() -> TuiConfig:
    return TuiConfig()


async def settle(pilot, rounds: int = 3) -> None:
    """Wait until background work is done and its messages are handled (no sleeps).

    The Anomalies screen loads the other systems' columns shortly after its first rows: wait
    for those too, so every test (and snapshot) sees the complete table.
    """
    app = pilot.app
    for _ in range(rounds):
        try:
            await app.workers.wait_for_complete()
        except Exception:  # noqa: BLE001 - a failed worker is reported by the app; tests check that
            pass
        await pilot.pause()
    for screen in app.screen_stack:
        for _ in range(200):
            if not getattr(screen, "_more_pending", False) and not _loading(screen):
                break
            await pilot.pause(0.02)
            try:
                await app.workers.wait_for_complete()
            except Exception:  # noqa: BLE001
                pass
        await pilot.pause()


def _loading(screen) -> bool:
    data = getattr(screen, "rdata", None)
    return data is not None and not all(data.loaded(s) for s in data.systems)


async def saved(pilot) -> None:
    """Wait until the label writer has committed everything queued."""
    await asyncio.to_thread(pilot.app.label_writer.drain, 10.0)
    await settle(pilot, 1)


async def quit_and_wait(app, timeout: float = 20.0) -> None:
    """Run the app's quit action and let its message loop finish before the test harness tears it down."""
    app.action_quit()
    for _ in range(int(timeout / 0.01)):
        if app._task is not None and app._task.done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the app did not exit")
