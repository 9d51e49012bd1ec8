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


def test_a_pruned_runtime_takes_its_compiled_templates_out_of_the_cache(tmp_path: Path) -> None:
    """Every self-contained install compiles its runtime's templates into /run/cniplug/jinja (a tmpfs, memory) under
    keys naming that runtime's directory; a runtime an upgrade removes would leave ~24 files there until reboot."""
    import shutil

    from jinja2 import FileSystemLoader

    from cniplug import render

    cache = render.bytecode_cache()
    assert cache is not None  # root
    root = tmp_path / "rt"
    dirs = {}
    for name in ("0.1.0-qa2a", "0.1.0-qa2b", "0.1.0-qa2c"):
        (root / name).mkdir(parents=True)
        (root / name / bundle.EXE).write_text("")
        dirs[name] = root / name / "_internal" / "cniplug" / "templates"
        shutil.copytree(render.templates_dir(), dirs[name])
    (root / "current").symlink_to("0.1.0-qa2c")
    (root / "previous").symlink_to("0.1.0-qa2b")

    def cached(templates: Path) -> set[Path]:
        env = render.environment().overlay(loader=FileSystemLoader(str(templates)))
        names = sorted(p.relative_to(templates).as_posix() for p in templates.rglob("*.j2"))
        keys = {cache.get_cache_key(n, env.loader.get_source(env, n)[1]) for n in names}  # type: ignore[union-attr]
        for n in names:
            env.get_template(n)  # compiled into the cache, as `cniplug install` does
        return {Path(cache.directory) / (cache.pattern % k) for k in keys}

    pruned, kept = cached(dirs["0.1.0-qa2a"]), cached(dirs["0.1.0-qa2b"])
    assert pruned and all(p.exists() for p in pruned | kept)
    try:
        bundle.prune(root)
        assert not (root / "0.1.0-qa2a").exists()
        assert not any(p.exists() for p in pruned), "the pruned runtime's compiled templates stayed in the cache"
        assert all(p.exists() for p in kept)
    finally:
        for p in pruned | kept:
            p.unlink(missing_ok=True)
