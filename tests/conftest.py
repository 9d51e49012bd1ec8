"""Shared test helpers: run a plugin as a runtime does, and throwaway namespaces that are always removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cniplug.cli import plugin_argv
from cniplug.plugins.bridge import lock_path

IS_ROOT = os.geteuid() == 0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/expected from the code")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Root tests skip off-root, except in CI (CNIPLUG_REQUIRE_ROOT_TESTS=1) where they must run."""
    if IS_ROOT:
        return
    if os.environ.get("CNIPLUG_REQUIRE_ROOT_TESTS"):
        raise pytest.UsageError("CNIPLUG_REQUIRE_ROOT_TESTS is set but the tests are not running as root")
    skip = pytest.mark.skip(reason="needs root: creates network namespaces")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


REQUIRED = bool(os.environ.get("CNIPLUG_REQUIRE_ROOT_TESTS"))


@pytest.fixture(autouse=True, scope="session")
def no_helper_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A helper that a test's install started by itself (autostart.py) is a process this session started:
    at the end every helper whose executable lives in this session's temporary directory is ended by its pid.
    Tests that are not about it install with --no-auto-helper; this catches one that forgot."""
    yield
    if not IS_ROOT:
        return
    from cniplug import helper

    base = str(tmp_path_factory.getbasetemp()) + "/"  # this session's, not another pytest's running beside it
    for info in helper.status():
        watch, pid = str(info.get("watch", "")), info.get("pid")
        if watch.startswith(base) and isinstance(pid, int) and info.get("alive"):
            helper.stop(pid, str(info.get("socket")))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI (CNIPLUG_REQUIRE_ROOT_TESTS) a skipped test is a failure: nothing may skip itself there, e.g. for
    a missing reference binary or tool that .ci/run was supposed to install."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if REQUIRED and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped while CNIPLUG_REQUIRE_ROOT_TESTS is set: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """The same for a whole module that skips itself at import (pytest.skip(allow_module_level=True))."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if REQUIRED and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"module skipped while CNIPLUG_REQUIRE_ROOT_TESTS is set: {report.longrepr}"


@dataclass
class PluginRun:
    rc: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def run_plugin(plugin: str, command: str, config: dict[str, Any] | bytes, *, netns: str = "",
               container_id: str = "c1", ifname: str = "eth0", args: str = "", dry_run: bool = False,
               env: dict[str, str] | None = None, cni_path: str = "/usr/lib/cni") -> PluginRun:
    """Exec the plugin as a runtime does: CNI_* env + config on stdin."""
    raw = config if isinstance(config, bytes) else json.dumps(config).encode()
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_PATH": cni_path,
        "CNI_ARGS": args,
        "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    }
    environ.update(env or {})
    argv = plugin_argv(plugin) if plugin.startswith("cniplug-") else [plugin]
    proc = subprocess.run(argv + (["--dry-run"] if dry_run else []), input=raw, env=environ,
                          capture_output=True, timeout=60)
    return PluginRun(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def install_wrappers(path: Path) -> Path:
    """`cniplug install --no-auto-helper` of this checkout into `path`, a test's own bin dir; returns `path`."""
    subprocess.run([sys.executable, "-m", "cniplug", "install", "--bin-dir", str(path), "--no-auto-helper"], check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    return path


def sh(*argv: str, check: bool = True) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {proc.stderr}")
    return proc.stdout


@pytest.fixture
def make_netns(request: pytest.FixtureRequest) -> Iterator[Callable[[str], str]]:
    """make_netns(tag) -> '/run/netns/<name>'; names are 'tcp-' + a per-test tag, or the tag itself with
    prefix="" (a test whose names must share its own prefix); removed afterwards."""
    created: list[str] = []

    def make(tag: str, prefix: str = "tcp-") -> str:
        name = f"{prefix}{tag}"
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        sh("ip", "netns", "add", name)
        created.append(name)
        return f"/run/netns/{name}"

    yield make
    for name in created:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


@pytest.fixture
def cleanup_links() -> Iterator[list[str]]:
    """Host links a test names here are deleted afterwards (bridges the plugin created), with the lock file
    cniplug-bridge keeps for each bridge name in /run/cniplug."""
    links: list[str] = []
    yield links
    for link in links:
        subprocess.run(["ip", "link", "delete", link], capture_output=True)
        Path(lock_path(link)).unlink(missing_ok=True)


@pytest.fixture
def cleanup_chains() -> Iterator[list[str]]:
    """NAT chains (and jumps to them) a test names here are removed afterwards, even on failure."""
    chains: list[str] = []
    yield chains
    for tool in ("iptables", "ip6tables"):
        rules = subprocess.run([tool, "-w", "-t", "nat", "-S"], capture_output=True, text=True).stdout
        for chain in chains:
            for line in rules.splitlines():
                if line.startswith("-A POSTROUTING") and line.endswith(f"-j {chain}"):
                    import shlex

                    subprocess.run([tool, "-w", "-t", "nat", "-D", *shlex.split(line)[1:]], capture_output=True)
            subprocess.run([tool, "-w", "-t", "nat", "-F", chain], capture_output=True)
            subprocess.run([tool, "-w", "-t", "nat", "-X", chain], capture_output=True)


@pytest.fixture(scope="module", autouse=True)
def restore_forwarding() -> Iterator[None]:
    """The plugins turn IP forwarding on (and, like the reference, never off): put it back after each module."""
    keys = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")
    saved = {k: Path(k).read_text() for k in keys if Path(k).exists()}
    yield
    for key, value in saved.items():
        if Path(key).read_text() != value:
            Path(key).write_text(value)
