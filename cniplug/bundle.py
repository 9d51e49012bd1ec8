"""The self-contained runtime: cniplug, jinja2 and a Python interpreter in one directory (PyInstaller),
for nodes that have no Python (issue #14 item 4; what the DaemonSet's init container copies).

Layout after `cniplug install --self-contained --bin-dir BIN --runtime-dir RDIR`:

    RDIR/<version>-<install id>/cniplug        the executable (frozen.py), with _internal/ beside it
    RDIR/<version>-<install id>/install.conf   this install's helper socket and idle time
    RDIR/current -> <version>-<install id>     the one in use; the one before stays, for --rollback
    BIN/cniplug-bridge -> RDIR/current/cniplug  (one symlink per plugin type)

Every step that a runtime could observe is one rename: a new version directory is complete before its
name appears, `current` is switched by renaming a new symlink over it, and the symlinks in BIN never
change on upgrade. So a call that arrives during an install runs the old version or the new one, whole.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cniplug import __version__, rundir

RUNTIME_DIR = "/opt/cniplug"
EXE = "cniplug"


def frozen() -> bool:
    """True inside the self-contained runtime (PyInstaller sets sys.frozen)."""
    return bool(getattr(sys, "frozen", False))


def build(out_dir: str) -> Path:
    """Build the runtime with PyInstaller into `out_dir`/cniplug (a directory); its path.

    Needs the `pyinstaller` package (`pip install 'cniplug[bundle]'`) and binutils' objdump. Raises
    RuntimeError with PyInstaller's last lines when the build fails, OSError when it cannot start.
    """
    from cniplug.render import templates_dir

    try:
        import PyInstaller  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        raise RuntimeError("building the self-contained runtime needs PyInstaller: pip install 'cniplug[bundle]'") \
            from None
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)  # OSError now, not PyInstaller's traceback after its ~20 s of work
    work = Path(tempfile.mkdtemp(prefix="cniplug-bundle-"))
    try:
        entry = Path(__file__).resolve().parent / "frozen.py"
        cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN", "--onedir",
               "--name", EXE, "--distpath", str(out), "--workpath", str(work / "build"), "--specpath", str(work),
               "--collect-submodules", "cniplug", "--collect-submodules", "prometheus_client",
               "--add-data", f"{templates_dir()}{os.pathsep}cniplug/templates"]
        if importlib.util.find_spec("kubernetes") is not None:  # `cniplug node --source kubernetes` (DaemonSet)
            cmd += ["--hidden-import", "kubernetes.client", "--hidden-import", "kubernetes.config",
                    "--hidden-import", "kubernetes.watch"]
        cmd.append(str(entry))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise RuntimeError(f"PyInstaller failed ({proc.returncode}): {tail}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out / EXE


def source_dir(bundle: str) -> tuple[Path, Path | None]:
    """The runtime to install: `bundle` if given, this one when running frozen, else a fresh build.
    Returns (directory, temporary directory to remove afterwards or None)."""
    if bundle:
        path = Path(bundle).resolve()
        if not (path / EXE).is_file():
            raise FileNotFoundError(f"--bundle {bundle}: no {EXE} executable in it (build one with `cniplug bundle`)")
        return path, None
    if frozen():
        return Path(sys.executable).resolve().parent, None
    tmp = Path(tempfile.mkdtemp(prefix="cniplug-build-"))
    return build(str(tmp)), tmp


def replace_symlink(link: Path, target: str) -> None:
    """Point `link` at `target` atomically (a new symlink renamed over the old name)."""
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def install(bin_dir: str, runtime_dir: str, plugins: dict[str, str], auto_helper: bool, idle: int,
            bundle: str = "", metrics: str = "") -> int:
    """`cniplug install --self-contained`: copy the runtime into `runtime_dir`/<version>-<id>, switch
    `current` to it, keep the one before (for --rollback) and remove older ones, and link every plugin
    type in `bin_dir` to `runtime_dir`/current/cniplug. 0; OSError/RuntimeError when it cannot."""
    src, tmp = source_dir(bundle)
    try:
        root = Path(runtime_dir)
        root.mkdir(mode=0o755, parents=True, exist_ok=True)
        install_id = secrets.token_hex(4)
        name = f"{__version__}-{install_id}"
        staging = root / f".{name}.tmp"
        shutil.copytree(src, staging, symlinks=True)
        conf = f"socket={rundir.RUN_DIR}/helper-3-{install_id}.sock\nidle={idle}\nmetrics={metrics}\n" \
            if auto_helper else ""
        (staging / "install.conf").write_text(conf)
        os.rename(staging, root / name)  # complete before its name appears
        previous = os.readlink(root / "current") if (root / "current").is_symlink() else ""
        replace_symlink(root / "current", name)
        if previous and previous != name:
            replace_symlink(root / "previous", previous)
        prune(root)
        Path(bin_dir).mkdir(mode=0o755, parents=True, exist_ok=True)
        exe = str(root.resolve() / "current" / EXE)
        for plugin in plugins:
            replace_symlink(Path(bin_dir) / plugin, exe)
            print(f"installed {Path(bin_dir) / plugin} -> {exe}")
        print(f"runtime {root / name} (current; `cniplug install --self-contained --rollback` goes back)")
        # Its own templates, by its own code: the cache is keyed by the templates' paths in the runtime.
        subprocess.run([str(root / name / EXE), "install", "--compile-templates"], check=False)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def kept(root: Path) -> set[str]:
    return {os.readlink(root / link) for link in ("current", "previous") if (root / link).is_symlink()}


def running_from(root: Path) -> set[str]:
    """Names of the directories under `root` that a running process was started from (its /proc/PID/exe).

    A call exec'd from `current` just before an install switched it still reads its directory after
    the switch (PyInstaller's bootloader reopens its own executable; modules load lazily), and a helper
    runs from it until it sees the upgrade. Processes we may not inspect are skipped."""
    prefix = str(root.resolve()) + "/"
    names = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if exe.startswith(prefix):
            names.add(exe[len(prefix):].split("/", 1)[0])
    return names


def prune(root: Path) -> None:
    """Remove version directories that neither `current` nor `previous` names and no running process
    was started from; a later install removes those once their processes have ended."""
    keep = kept(root) | running_from(root)
    for entry in root.iterdir():
        if entry.is_dir() and not entry.is_symlink() and entry.name not in keep and (entry / EXE).exists():
            forget_compiled(entry)
            shutil.rmtree(entry, ignore_errors=True)


def forget_compiled(runtime: Path) -> None:
    """The runtime's compiled templates out of /run/cniplug/jinja before the runtime goes (never raises)."""
    from cniplug import render

    for templates in (runtime / "_internal" / "cniplug" / "templates", runtime / "cniplug" / "templates"):
        try:
            render.forget_compiled(templates)
        except Exception:  # noqa: BLE001 -- a cache entry left behind is no reason to fail an install
            pass


def rollback(runtime_dir: str) -> int:
    """Switch `current` back to `previous` (and `previous` to what was current); 0, 1 if there is none."""
    root = Path(runtime_dir)
    if not (root / "previous").is_symlink() or not (root / os.readlink(root / "previous") / EXE).exists():
        print(f"cniplug install: no previous runtime in {root} to go back to", file=sys.stderr)
        return 1
    current, previous = os.readlink(root / "current"), os.readlink(root / "previous")
    replace_symlink(root / "current", previous)
    replace_symlink(root / "previous", current)
    print(f"runtime {root / previous} is current again")
    return 0


def uninstall(bin_dir: str, runtime_dir: str, plugins: dict[str, str]) -> int:
    """Remove what the installs made: plugin executables in `bin_dir` that are ours (symlinks into
    `runtime_dir`, or wrappers `cniplug install` wrote), the helpers they started (ended by the pid in
    their status record) and their files, and `runtime_dir`'s runtimes, unless the executables removed were
    all wrappers (then another bin dir's install may still link into it). Anything else is left. 0."""
    from cniplug import helper

    root = Path(runtime_dir).resolve()
    removed = []
    linked = False  # a symlink into runtime_dir was removed: bin_dir was installed from it
    for plugin in plugins:
        path = Path(bin_dir) / plugin
        ours = False
        if path.is_symlink():
            ours = os.readlink(path).startswith(str(root) + "/")
            linked = linked or ours
        elif path.is_file():
            with open(path, "rb") as f:
                ours = b"installed by `cniplug install`" in f.read(512)
        if ours:
            path.unlink()
            removed.append(str(path))
    for info in helper.status():
        watch = str(info.get("watch", ""))
        if watch in removed and info.get("alive") and isinstance(info.get("pid"), int):
            helper.stop(int(str(info["pid"])), str(info.get("socket")))
            for suffix in (".lock", ".log"):
                Path(str(info.get("socket")) + suffix).unlink(missing_ok=True)
    for name in removed:
        print(f"removed {name}")
    if removed and not linked:  # wrappers only: the runtimes belong to another bin dir's install
        if root.is_dir():
            print(f"left the runtimes in {root}: {bin_dir}'s executables were not installed from it")
    elif root.is_dir():
        for link in ("current", "previous"):
            if (root / link).is_symlink():
                (root / link).unlink()
        prune_all(root)
        print(f"removed the runtimes in {root}")
    return 0


def prune_all(root: Path) -> None:
    """Remove every runtime directory (one holding our executable) under `root`, then `root` if empty."""
    for entry in root.iterdir():
        if entry.is_dir() and not entry.is_symlink() and (entry / EXE).exists():
            forget_compiled(entry)
            shutil.rmtree(entry, ignore_errors=True)
    try:
        root.rmdir()
    except OSError:
        pass
