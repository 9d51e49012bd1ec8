"""Files the plugins write: the reference host-local's modes, private lock/cache dirs, a 0600 log, nothing written
outside the configured dataDir, and no network name that escapes it.

Names `tcr`; addresses 10.250.143.64/26 and fd10:250:140:30::/64; the bridge lives in a private host namespace.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_plugin
from tcr_netstate import LOCK_DIR, HelperHost, remove_lock_files, run_in_host, setup_host

pytestmark = pytest.mark.root


def ipam_config(data_dir: Path, name: str = "tcrnet40") -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": name, "type": "tcr",
            "ipam": {"type": "cniplug-host-local", "dataDir": str(data_dir),
                     "ranges": [[{"subnet": "10.250.143.64/26"}], [{"subnet": "fd10:250:140:30::/64"}]]}}


def modes(root: Path) -> dict[str, str]:
    """Relative path -> octal mode, with IP file names generalised (the two plugins may pick other addresses)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).parts
        kind = rel[-1]
        if ":" in kind:
            kind = "<ipv6>"
        elif kind[0].isdigit():
            kind = "<ipv4>"
        out["/".join((*rel[:-1], kind))] = oct(stat.S_IMODE(p.stat().st_mode))
    return out


def run_ipam(plugin: str, data_dir: Path, umask: int, command: str = "ADD") -> None:
    config = ipam_config(data_dir)
    config["ipam"]["type"] = plugin
    raw = json.dumps(config).encode()
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "tcrf1", "CNI_NETNS": "/run/netns/tcp-r-unused",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "PATH": os.environ["PATH"],
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    argv = ["/usr/lib/cni/host-local"] if plugin == "host-local" else None
    if argv is None:
        from cniplug.cli import plugin_argv

        argv = plugin_argv(plugin)
    proc = subprocess.run(argv, input=raw, env=env, capture_output=True, preexec_fn=lambda: os.umask(umask))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("umask", [0o022, 0o000, 0o077], ids=["umask022", "umask000", "umask077"])
def test_store_modes_match_the_reference_host_local(tmp_path: Path, umask: int) -> None:
    ours, ref = tmp_path / "ours", tmp_path / "ref"
    run_ipam("cniplug-host-local", ours, umask)
    run_ipam("host-local", ref, umask)
    got, want = modes(ours), modes(ref)
    print(f"\n[files] umask {umask:03o}: ours {got}\n[files]            reference {want}")
    assert got == want
    if umask == 0o022:
        assert got == {"tcrnet40": "0o755", "tcrnet40/<ipv4>": "0o644", "tcrnet40/<ipv6>": "0o644",
                       "tcrnet40/last_reserved_ip.0": "0o644", "tcrnet40/last_reserved_ip.1": "0o644",
                       "tcrnet40/lock": "0o750"}
    run_ipam("cniplug-host-local", ours, umask, "DEL")
    assert sorted(modes(ours)) == ["tcrnet40", "tcrnet40/last_reserved_ip.0", "tcrnet40/last_reserved_ip.1",
                                   "tcrnet40/lock"]


def tree(root: Path) -> set[str]:
    if not root.exists():
        return set()
    return {str(p) for p in root.rglob("*")}


@pytest.mark.parametrize("via", ["standalone", "helper"])
def test_bridge_writes_only_its_data_dir_lock_and_log(make_netns: Callable[[str], str], tmp_path: Path,
                                                      via: str) -> None:
    host = Path(make_netns("r-hfiles")).name
    setup_host(host)
    helper = HelperHost(host, tmp_path / "bin") if via == "helper" else None
    netns = make_netns("r-cfiles")
    data, log, cwd = tmp_path / "ipam", tmp_path / "tcr.log", tmp_path / "cwd"
    cwd.mkdir()
    config = {**ipam_config(data), "type": "cniplug-bridge", "bridge": "tcrbr40", "isGateway": True, "ipMasq": True,
              "logFile": str(log), "logLevel": "debug"}
    var_before, tmp_before, run_before = tree(Path("/var/lib/cni")), tree(tmp_path), tree(LOCK_DIR)
    old = os.getcwd()
    os.chdir(cwd)  # relative writes would land here
    try:
        for command in ("ADD", "DEL"):
            r = run_in_host(host, "cniplug-bridge", command, config, netns, "tcrf1")
            assert r.rc == 0, r.stdout + r.stderr
    finally:
        os.chdir(old)
    try:
        new_var = [p for p in tree(Path("/var/lib/cni")) - var_before if "tcr" in p]
        assert not new_var, new_var
        new_tmp = sorted(tree(tmp_path) - tmp_before)
        assert all(p.startswith(str(data)) or p == str(log) for p in new_tmp), new_tmp
        assert not list(cwd.iterdir())
        new_run = sorted(tree(LOCK_DIR) - run_before - {helper.socket if helper else ""})
        assert all(p == str(LOCK_DIR / "bridge-tcrbr40.lock") or p.startswith(str(LOCK_DIR / "jinja"))
                   for p in new_run), new_run
        assert stat.S_IMODE(LOCK_DIR.stat().st_mode) == 0o700
        assert stat.S_IMODE((LOCK_DIR / "bridge-tcrbr40.lock").stat().st_mode) == 0o600
        jinja = LOCK_DIR / "jinja"
        if jinja.exists():
            assert stat.S_IMODE(jinja.stat().st_mode) == 0o700 and jinja.stat().st_uid == 0
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert log.read_text(), "debug log is empty"
        print(f"\n[files] {via}: ADD+DEL wrote {len(new_tmp)} paths, all under dataDir or the logFile; "
              f"/run/cniplug 0700, lock 0600, log 0600")
        if helper is not None:
            assert helper.served == 2
    finally:
        if helper is not None:
            helper.close()
        remove_lock_files(["tcrbr40"])


@pytest.mark.parametrize("name", ["../tcrescape", "..", ".", "tcr/../../tcrescape", "./tcrescape", "/tmp/tcrescape",
                                  "tcr\x00x", "tcrnet/"])
@pytest.mark.parametrize("plugin", ["cniplug-host-local", "cniplug-bridge"])
def test_network_name_cannot_escape_data_dir(tmp_path: Path, name: str, plugin: str) -> None:
    data = tmp_path / "a" / "b"
    config = {**ipam_config(data, name), "type": plugin, "bridge": "tcrbr41"}
    r = run_plugin(plugin, "ADD", config, netns="/run/netns/tcp-r-none", container_id="tcrf2")
    assert r.rc == 1, r.stdout
    assert r.json["code"] in (6, 7), r.stdout
    assert not list(tmp_path.rglob("*")), sorted(tmp_path.rglob("*"))
    assert not Path("/tmp/tcrescape").exists()
