"""/run/cniplug is 0700 whichever path creates it first, and a looser mode is repaired (issue #12, item 6).

Runs against a private directory under tmp_path (rundir.RUN_DIR patched), never the real /run/cniplug.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cniplug import render, rundir
from cniplug.plugins import bridge

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the Jinja cache is used only as root")


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "run"
    monkeypatch.setattr(rundir, "RUN_DIR", str(path))
    old = os.umask(0o022)  # the usual umask: plain os.makedirs would give 0755
    yield path
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@needs_root
def test_jinja_cache_creates_run_dir_0700(run_dir: Path) -> None:
    assert render.bytecode_cache() is not None
    assert mode(run_dir) == 0o700
    assert mode(run_dir / "jinja") == 0o700


def test_bridge_lock_creates_run_dir_0700(run_dir: Path) -> None:
    with bridge.bridge_lock("tepbr0"):
        assert mode(run_dir) == 0o700
        assert mode(Path(bridge.lock_path("tepbr0"))) == 0o600


@pytest.mark.parametrize("creator", ["bridge_lock", "jinja_cache"])
def test_looser_run_dir_is_repaired(run_dir: Path, creator: str) -> None:
    if creator == "jinja_cache" and os.geteuid() != 0:
        pytest.skip("the Jinja cache is used only as root")
    run_dir.mkdir(mode=0o755)
    os.chmod(run_dir, 0o755)
    if creator == "bridge_lock":
        with bridge.bridge_lock("tepbr0"):
            pass
    else:
        assert render.bytecode_cache() is not None
    assert mode(run_dir) == 0o700


def test_symlink_or_file_is_refused_and_left_alone(run_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o755)
    os.chmod(target, 0o755)
    run_dir.symlink_to(target)
    with pytest.raises(PermissionError, match="not a directory owned"):
        rundir.ensure()
    assert mode(target) == 0o755
