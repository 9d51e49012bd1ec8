"""GC removes the lock files of bridges that are gone, without racing an ADD (issue #12, item 7).

Runs against a private run directory under tmp_path (rundir.RUN_DIR patched); bridge names `tep...`
that exist nowhere, plus `lo`, which always exists.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cniplug import rundir, skel
from cniplug.plugins import bridge, common


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "run"
    monkeypatch.setattr(rundir, "RUN_DIR", str(path))
    rundir.ensure()
    yield path


def locked_elsewhere(path: str) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_gc_verb_removes_locks_of_gone_bridges_only(run_dir: Path, tmp_path: Path) -> None:
    for name in ("tepgone0", "tepgone1", "tepbusy", "lo"):
        Path(bridge.lock_path(name)).touch()
    busy = os.open(bridge.lock_path("tepbusy"), os.O_RDWR)
    fcntl.flock(busy, fcntl.LOCK_EX)  # an ADD creating bridge tepbusy right now
    (run_dir / "jinja").mkdir()
    config = {"cniVersion": "1.1.0", "name": "tepnet", "type": "cniplug-bridge", "bridge": "tepbr0",
              "ipam": {"type": "cniplug-host-local", "subnet": "10.248.7.0/24", "dataDir": str(tmp_path / "ipam")}}
    handlers, about = bridge.HANDLERS, bridge.ABOUT
    out = io.StringIO()
    try:
        rc = skel.run(handlers, about, argv=[], environ={"CNI_COMMAND": "GC", "CNI_PATH": "/usr/lib/cni"},
                      stdin=io.BytesIO(json.dumps(config).encode()), stdout=out)
    finally:
        os.close(busy)
    assert rc == 0, out.getvalue()
    assert sorted(p.name for p in run_dir.iterdir()) == ["bridge-lo.lock", "bridge-tepbusy.lock", "jinja"]


def test_add_that_locked_an_unlinked_lock_file_retries(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GC unlinks the file between the ADD's open and its flock: the ADD must end up holding the lock at the path."""
    real = common.flock_with_timeout
    calls = []

    def gc_strikes_first(fd: int, timeout: float, busy: str) -> None:
        calls.append(fd)
        if len(calls) == 1:
            assert bridge.remove_stale_locks() == ["tepbr0"]
        real(fd, timeout, busy)

    monkeypatch.setattr(common, "flock_with_timeout", gc_strikes_first)
    path = bridge.lock_path("tepbr0")
    with bridge.bridge_lock("tepbr0"):
        assert os.path.exists(path)
        assert locked_elsewhere(path)
        assert bridge.remove_stale_locks() == []  # held: GC skips it
    assert len(calls) == 2
    assert bridge.remove_stale_locks() == ["tepbr0"]


def test_dry_run_gc_removes_nothing(run_dir: Path, tmp_path: Path) -> None:
    Path(bridge.lock_path("tepgone0")).touch()
    config = {"cniVersion": "1.1.0", "name": "tepnet", "type": "cniplug-bridge", "bridge": "tepbr0",
              "ipam": {"type": "cniplug-host-local", "subnet": "10.248.7.0/24", "dataDir": str(tmp_path / "ipam")}}
    out = io.StringIO()
    rc = skel.run(bridge.HANDLERS, bridge.ABOUT, argv=["--dry-run"],
                  environ={"CNI_COMMAND": "GC", "CNI_PATH": "/usr/lib/cni"},
                  stdin=io.BytesIO(json.dumps(config).encode()), stdout=out)
    assert rc == 0, out.getvalue()
    assert Path(bridge.lock_path("tepgone0")).exists()
