import os
import stat

import pytest

from fmb_engine.errors import WorkspaceError
from fmb_engine.workspace import ENV_VAR, FOLDERS, Workspace, atomic_path, atomic_write_text


def test_init_creates_layout_and_refuses_to_overwrite(tmp_path):
    ws = Workspace.init(tmp_path / "w")
    assert ws.config_file.is_file()
    assert all((ws.root / name).is_dir() for name in FOLDERS)
    with pytest.raises(WorkspaceError, match="already a workspace"):
        Workspace.init(tmp_path / "w")
    ws.config_file.write_text("general: {survey: x}\n")
    Workspace.init(tmp_path / "w", exist_ok=True)
    assert "survey: x" in ws.config_file.read_text()


def test_find_prefers_flag_then_env_then_cwd_upwards(tmp_path, monkeypatch):
    a, b = Workspace.init(tmp_path / "a"), Workspace.init(tmp_path / "b")
    deep = a.root / "survey" / "x"
    deep.mkdir()
    monkeypatch.chdir(deep)
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert Workspace.find().root == a.root
    monkeypatch.setenv(ENV_VAR, str(b.root))
    assert Workspace.find().root == b.root
    assert Workspace.find(a.root).root == a.root


def test_find_errors_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WorkspaceError, match="fmb-engine init"):
        Workspace.find()
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(WorkspaceError, match=rf"from \${ENV_VAR}"):
        Workspace.find()


def test_atomic_write_keeps_old_content_on_failure_and_sets_mode(tmp_path):
    target = atomic_write_text(tmp_path / "f.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
