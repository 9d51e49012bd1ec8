"""Hostile input (tests/hostile/cases.json) through the real plugin processes: a CNI error, never a change.

Each case runs as a runtime runs the plugin (env + stdin) with a directory of wrappers first in PATH that
records every `ip`/`iptables`/`ip6tables`/`*-restore`/`sysctl`/`nsenter` invocation and refuses the mutating
ones (read-only probes such as `ip -j ... show` pass and are recorded as probes). Asserted per case: exit 1,
error JSON with the expected code, the bad field or value named in msg or details, no traceback on stdout, no
mutating command, no file written (the case's tmp dir holds only the wrappers; the IPAM dataDir is under it).

Cases marked "root" need a real network namespace (their error comes after the netns check); they skip
off-root. Everything else runs as any user.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any

import pytest
from conftest import IS_ROOT, PluginRun, run_plugin
from integration.tcr_netstate import FakePath

from cniplug.plugins.bridge import lock_path

CASES_FILE = Path(__file__).resolve().parents[1] / "hostile" / "cases.json"
CASES: list[dict[str, Any]] = json.loads(CASES_FILE.read_text())["cases"]
NETNS_NAME = "tcp-r-hostile"
PWNED = Path("/tmp/tcrpwn")


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    if not IS_ROOT:
        yield f"/run/netns/{NETNS_NAME}-absent"
        return
    subprocess.run(["ip", "netns", "delete", NETNS_NAME], capture_output=True)
    subprocess.run(["ip", "netns", "add", NETNS_NAME], check=True)
    yield f"/run/netns/{NETNS_NAME}"
    subprocess.run(["ip", "netns", "delete", NETNS_NAME], capture_output=True)
    Path(lock_path("tcrbr30")).unlink(missing_ok=True)  # cases that got as far as the bridge lock


def run_case(case: dict[str, Any], tmp: Path, netns: str) -> tuple[PluginRun, FakePath]:
    fake = FakePath(tmp / "bin")
    fake.reset(mode="deny")

    def fill(text: str) -> str:
        return text.replace("@TMP@", str(tmp)).replace("@NETNS@", netns)

    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "tcrh1", "CNI_IFNAME": "eth0", "CNI_NETNS": netns,
           "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": ""}
    env.update({k: fill(v) for k, v in case["env"].items()})
    env["PATH"] = f"{fake.dir}:{os.environ.get('PATH', '')}"
    stdin = case["stdin"]
    raw = fill(stdin if isinstance(stdin, str) else json.dumps(stdin)).encode()
    return run_plugin(case["plugin"], env["CNI_COMMAND"], raw, env=env), fake


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory, netns: str) -> dict[str, tuple[PluginRun, FakePath, Path]]:
    """All cases, four plugin processes at a time (about 4x faster than one by one)."""
    todo = [c for c in CASES if IS_ROOT or not c.get("root")]
    base = tmp_path_factory.mktemp("hostile")

    def one(case: dict[str, Any]) -> tuple[str, tuple[PluginRun, FakePath, Path]]:
        tmp = base / case["id"]
        tmp.mkdir()
        run, fake = run_case(case, tmp, netns)
        return case["id"], (run, fake, tmp)

    with ThreadPool(4) as pool:
        done = dict(pool.map(one, todo))
    print(f"\n[hostile] {len(done)} cases run ({len(CASES)} in {CASES_FILE.name})")
    return done


def test_corpus_is_big_and_well_formed() -> None:
    ids = [c["id"] for c in CASES]
    assert len(ids) >= 100 and len(set(ids)) == len(ids)
    for c in CASES:
        assert set(c) <= {"id", "plugin", "env", "stdin", "code", "contains", "root"}, c["id"]
        assert c["contains"] and isinstance(c["code"], int)
    print(f"\n[hostile] {len(CASES)} cases, {sum(1 for c in CASES if c.get('root'))} need root")


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_hostile_case(case: dict[str, Any], outcomes: dict[str, tuple[PluginRun, FakePath, Path]]) -> None:
    if case["id"] not in outcomes:
        pytest.skip("needs root: a real network namespace")
    run, fake, tmp = outcomes[case["id"]]
    assert "Traceback" not in run.stdout, run.stdout
    assert run.rc == 1, f"exit {run.rc}: {run.stdout} {run.stderr[-800:]}"
    body = json.loads(run.stdout)
    text = f"{body.get('msg', '')} {body.get('details', '')}"
    assert body.get("code") == case["code"], f"code {body.get('code')}, want {case['code']}: {text}"
    assert case["contains"] in text, f"{case['contains']!r} not named in: {text}"
    mutating = [cmd for kind, cmd in fake.log() if kind.startswith("M")]
    assert not mutating, f"mutating commands run: {mutating}"
    written = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.parts[len(tmp.parts)] != "bin")
    assert not written, f"files written: {written}"
    assert not PWNED.exists(), "a container id was executed by a shell"
