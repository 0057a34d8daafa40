"""The fmb-tui command line."""

import os

import pytest

from fmb_tui.app import main


def test_keys_listing(capsys):
    main(["--keys"])
    out = capsys.readouterr().out
    assert "triage.label_1" in out and "anomalies.jump" in out


def test_bad_workspace_is_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path)])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err and "fmb-engine init" in err
    assert os.environ.get("FMB_WORKSPACE") is None
