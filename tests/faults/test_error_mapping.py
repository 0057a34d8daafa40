"""The generic mapping of environment errors: the file named is the one the user knows, on one line."""

from __future__ import annotations

import errno

import pytest

from fmb_engine.errors import EnvironmentFault
from fmb_engine.workspace import atomic_path, fault_of, final_name

H5PY_ENOSPC = (
    "Can't close file (file write failed: time = Fri Dec  4 03:03:53 2026\n, filename = "
    "'/ws/embeddings/pca.shards/.state.h5.ie3hikim.tmp', file descriptor = 4, errno = 28, "
    "error message = 'No space left on device', buf = 0x560b304f8690, total write size = 2048)"
)


def test_h5py_errno_in_the_text_becomes_a_one_line_fault_naming_the_final_file():
    fault = fault_of(RuntimeError(H5PY_ENOSPC))
    assert isinstance(fault, EnvironmentFault) and fault.exit_code == 5
    assert str(fault).startswith("cannot write /ws/embeddings/pca.shards/state.h5: no space left")
    assert "\n" not in str(fault)


def test_h5py_create_names_the_file_as_name():
    refused = PermissionError(13, "Unable to synchronously create file (unable to open file: name = "
                                  "'/ws/survey/mock.h5.partial', errno = 13, error message = 'Permission denied')")
    assert str(fault_of(refused)).startswith("cannot access /ws/survey/mock.h5.partial: permission denied")


def test_other_errors_are_not_the_environments():
    assert fault_of(RuntimeError("Unable to open object (object 'x' doesn't exist)")) is None
    assert fault_of(OSError(errno.ENOENT, "No such file or directory", "/ws/x")) is None


def test_permission_is_access_and_read_only_is_write():
    assert str(fault_of(OSError(errno.EACCES, "Permission denied", "/ws/a"))).startswith("cannot access /ws/a:")
    assert str(fault_of(OSError(errno.EROFS, "Read-only file system", "/ws/a"))).startswith("cannot write /ws/a:")


def test_final_name_of_a_temp_name():
    assert str(final_name("/ws/runs/.20261204T030217-embed.pca-0398d5.json.qwanuztd.tmp")) == \
        "/ws/runs/20261204T030217-embed.pca-0398d5.json"
    assert str(final_name("/ws/survey/mock.h5.partial")) == "/ws/survey/mock.h5.partial"


def test_a_failed_write_inside_atomic_path_names_the_final_file(tmp_path):
    final = tmp_path / "scores.csv"
    final.write_text("old\n")
    with pytest.raises(EnvironmentFault) as exc, atomic_path(final) as tmp, open(tmp, "wb"):
        raise OSError(errno.ENOSPC, "No space left on device")  # what a full disk gives a plain write()
    assert str(exc.value).startswith(f"cannot write {final}: no space left")
    assert final.read_text() == "old\n" and list(tmp_path.iterdir()) == [final]


def test_an_interrupt_swallowed_in_a_finalizer_leaves_no_traceback(monkeypatch, capsys):
    """Found by bench/faults.py (seed 5, mock, SIGTERM): Python printed 'Exception ignored ... KeyboardInterrupt'."""
    import sys
    import weakref

    from fmb_engine.cli import main as cli_main

    monkeypatch.setattr(sys, "unraisablehook", cli_main._unraisable)
    monkeypatch.setattr(cli_main, "_SWALLOWED", [])

    class Thing:
        pass

    def interrupted(_ref):
        raise KeyboardInterrupt

    thing = Thing()
    ref = weakref.ref(thing, interrupted)
    del thing
    assert ref() is None and len(cli_main._SWALLOWED) == 1
    assert "Traceback" not in capsys.readouterr().err
