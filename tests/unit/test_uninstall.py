"""`cniplug bundle` and `cniplug install --uninstall`. The latter, of a bin dir of wrappers, leaves a
self-contained runtime that another bin dir's executables still link to (the runtime dir defaults to
/opt/cniplug, where a node's DaemonSet install lives)."""

from __future__ import annotations

import os
from pathlib import Path

from cniplug import bundle, cli
from cniplug.plugins import PLUGINS


def test_uninstalling_wrappers_leaves_the_runtime_other_executables_use(tmp_path: Path) -> None:
    runtime, wrappers, links = tmp_path / "rt", tmp_path / "wrappers", tmp_path / "links"
    (runtime / "0.1.0-qa2").mkdir(parents=True)
    (runtime / "0.1.0-qa2" / bundle.EXE).write_text("#!/bin/sh\n")
    (runtime / "current").symlink_to("0.1.0-qa2")
    links.mkdir()
    for name in PLUGINS:
        (links / name).symlink_to(runtime / "current" / bundle.EXE)
    assert cli.install(str(wrappers), auto_helper=False) == 0
    assert bundle.uninstall(str(wrappers), str(runtime), PLUGINS) == 0
    assert not any(wrappers.iterdir())
    assert os.path.exists(links / "cniplug-bridge"), "the other bin dir's executables lost their runtime"
    assert bundle.uninstall(str(links), str(runtime), PLUGINS) == 0  # that bin dir's own uninstall removes it
    assert not runtime.exists() and not any(links.iterdir())


def test_bundle_into_a_directory_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    """Said before PyInstaller runs (~20 s), in one line, not PyInstaller's traceback."""
    import subprocess
    import sys

    (tmp_path / "file").write_text("")
    proc = subprocess.run([sys.executable, "-m", "cniplug", "bundle", "--out", str(tmp_path / "file" / "dist")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert str(tmp_path / "file") in proc.stderr and "Traceback" not in proc.stderr
