"""The engine never imports the UI toolkit, directly or indirectly."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import fmb_engine


def test_engine_never_imports_textual():
    modules = [m.name for m in pkgutil.walk_packages(fmb_engine.__path__, "fmb_engine.")]
    assert "fmb_engine.cli.main" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'textual' or m.startswith(('textual.', 'fmb_tui')))\n"
        "print(','.join(leaked))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "", f"fmb_engine pulled in: {proc.stdout}"


def test_import_linter_contracts_hold():
    root = Path(__file__).resolve().parents[1]
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--config", str(root / "pyproject.toml")], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
