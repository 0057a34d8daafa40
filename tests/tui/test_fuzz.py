"""The random explorer, short form: a few seeded sessions over every screen; FMB_FUZZ_SEED replays one seed."""

from __future__ import annotations

import os
import shutil

import pytest

from fmb_engine.workspace import Workspace

from .fuzz_explorer import add_odd_records, explore

pytestmark = pytest.mark.asyncio

SEEDS = [int(os.environ["FMB_FUZZ_SEED"])] if os.environ.get("FMB_FUZZ_SEED") else [1, 2, 3]
STEPS = int(os.environ.get("FMB_FUZZ_STEPS", "150"))


@pytest.fixture(scope="module")
def odd_template(tui_template, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz") / "ws"
    shutil.copytree(tui_template, root, symlinks=True)
    add_odd_records(Workspace(root))
    return root


@pytest.mark.parametrize("seed", SEEDS)
async def test_random_keys_never_raise(odd_template, tmp_path, monkeypatch, seed):
    root = tmp_path / "ws"
    shutil.copytree(odd_template, root, symlinks=True)
    monkeypatch.chdir(tmp_path)  # a palette "save screenshot" lands here
    finding = await explore(root, seed, STEPS)
    assert finding is None, str(finding)
