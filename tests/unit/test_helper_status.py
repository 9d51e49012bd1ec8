"""`cniplug helper --status` reads every helper-*.sock.json in the run directory: a record that is not what a
helper writes (edited by hand, another tool's) is skipped, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cniplug import helper


def test_records_that_are_not_a_helpers_are_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "helper-list.sock.json").write_text("[1, 2]")
    (tmp_path / "helper-text.sock.json").write_text(json.dumps(
        {"pid": "abc", "socket": 5, "started": "x", "last_call": "y", "calls": 1}))
    good = {"pid": 999999999, "socket": str(tmp_path / "helper-ok.sock"), "started": 1.0, "last_call": 0.0,
            "calls": 0, "idle_exit": 600, "version": "0.1.0"}
    (tmp_path / "helper-ok.sock.json").write_text(json.dumps(good))
    assert helper.print_status(str(tmp_path)) == 3  # none alive
    out = capsys.readouterr().out
    assert str(tmp_path / "helper-ok.sock") in out and "NOT RUNNING" in out
    assert len(out.strip().splitlines()) == 1
