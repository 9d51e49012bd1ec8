"""The bash CNI plugin of docs/writing-a-plugin.md (docs/examples/mini-bridge, chained with docs/examples/show-prev),
run as the doc runs it: by hand with CNI_* variables and a config on stdin, then under libcni's `cnitool`.

Checks what the doc claims: the result's shape and cniVersion, eth0 with its address and default route inside the
namespace and its peer on the bridge, CHECK against prevResult (silent when true, a CNI error when not), DEL
idempotent (twice, and with an empty CNI_NETNS) and complete, VERSION's answer, a version it does not speak, and
what the chained plugin receives as prevResult. Names: namespaces `tdoc-t<N>`, bridge `tdoct0`, network
`tdoctnet`, subnet 10.245.2.0/24, IPAM dataDir under tmp_path; all removed afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"
BRIDGE, NET, SUBNET = "tdoct0", "tdoctnet", "10.245.2"
REFERENCE = Path("/usr/lib/cni")
LIBCNI_CACHE = Path("/var/lib/cni/results")


def missing(what: str) -> None:
    if os.environ.get("CNIPLUG_REQUIRE_ROOT_TESTS"):
        pytest.fail(what, pytrace=False)
    pytest.skip(what)


def run(argv: list[str], env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    return subprocess.run(argv, input=stdin, env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def netns() -> Iterator[str]:
    for tool in ("jq", "nsenter"):
        if run(["which", tool]).returncode:
            missing(f"{tool} not installed (contrib/setup.sh installs it)")
    if not (REFERENCE / "host-local").is_file():
        missing("reference host-local not in /usr/lib/cni: apt-get install containernetworking-plugins")
    name = f"tdoc-t{os.getpid() % 1000}"
    run(["ip", "netns", "delete", name])
    assert run(["ip", "netns", "add", name]).returncode == 0
    yield f"/run/netns/{name}"
    run(["ip", "netns", "delete", name])
    run(["ip", "link", "delete", BRIDGE])
    for cache in LIBCNI_CACHE.glob(f"{NET}-*"):
        cache.unlink()


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": NET, "type": "mini-bridge", "bridge": BRIDGE,
            "ipam": {"type": "host-local", "subnet": f"{SUBNET}.0/24", "dataDir": str(tmp_path / "ipam")}}


def plugin(command: str, conf: dict[str, Any] | str, netns: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {"CNI_COMMAND": command, "CNI_CONTAINERID": "tdoc-ctr", "CNI_NETNS": netns, "CNI_IFNAME": "eth0",
               "CNI_PATH": str(REFERENCE), **env}
    stdin = conf if isinstance(conf, str) else json.dumps(conf)
    return run([str(EXAMPLES / "mini-bridge")], environ, stdin)


def in_ns(netns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return run(["nsenter", f"--net={netns}", *argv])


def test_by_hand_add_check_del(netns: str, config: dict[str, Any], tmp_path: Path) -> None:
    add = plugin("ADD", config, netns)
    assert add.returncode == 0, add.stdout + add.stderr
    result = json.loads(add.stdout)
    host = result["interfaces"][0]["name"]
    assert result == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": host}, {"name": "eth0", "sandbox": netns}],
        "ips": [{"address": f"{SUBNET}.2/24", "gateway": f"{SUBNET}.1", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": f"{SUBNET}.1"}],
    }
    # eth0 was created inside the namespace, with its address and default route; its peer is on the bridge
    addrs = json.loads(in_ns(netns, "ip", "-j", "addr", "show", "dev", "eth0").stdout)
    assert f"{SUBNET}.2" in [a["local"] for a in addrs[0]["addr_info"]]
    assert f"default via {SUBNET}.1 dev eth0" in in_ns(netns, "ip", "route").stdout
    assert [link["ifname"] for link in json.loads(run(["ip", "-j", "link", "show", "master", BRIDGE]).stdout)] == [host]
    assert in_ns(netns, "ping", "-c", "1", "-W", "2", f"{SUBNET}.1").returncode == 0

    checked = {**config, "prevResult": result}
    check = plugin("CHECK", checked, netns)
    assert (check.returncode, check.stdout) == (0, "")
    in_ns(netns, "ip", "addr", "flush", "dev", "eth0")
    check = plugin("CHECK", checked, netns)
    assert check.returncode == 1
    assert json.loads(check.stdout) == {"cniVersion": "1.0.0", "code": 100,
                                        "msg": f"eth0 has no address {SUBNET}.2/24", "details": ""}

    for env in ({}, {}, {"CNI_NETNS": ""}):  # DEL twice, then without a namespace: always success, no output
        delete = plugin("DEL", config, netns, **env)
        assert (delete.returncode, delete.stdout) == (0, ""), delete.stderr
    assert in_ns(netns, "ip", "link", "show", "dev", "eth0").returncode != 0
    assert run(["ip", "link", "show", "dev", host]).returncode != 0
    assert not (tmp_path / "ipam" / NET / f"{SUBNET}.2").exists()


def test_version_and_errors(netns: str, config: dict[str, Any]) -> None:
    version = run([str(EXAMPLES / "mini-bridge")], {"CNI_COMMAND": "VERSION"}, '{"cniVersion": "1.0.0"}')
    assert version.returncode == 0
    assert json.loads(version.stdout) == {"cniVersion": "1.0.0", "supportedVersions": ["1.0.0"]}
    old = plugin("ADD", {**config, "cniVersion": "0.4.0"}, netns)
    assert old.returncode == 1
    assert json.loads(old.stdout)["code"] == 1
    unknown = plugin("FOO", config, netns)
    assert (unknown.returncode, json.loads(unknown.stdout)["code"]) == (1, 4)


def test_under_cnitool_with_a_chained_plugin(netns: str, config: dict[str, Any], tmp_path: Path) -> None:
    tool = REPO / ".cache" / "cnitool" / "cnitool"
    if not os.access(tool, os.X_OK):
        missing(f"cnitool not found at {tool}: run contrib/build-cnitool.sh")
    netd = tmp_path / "net.d"
    netd.mkdir()
    plugins = [{k: v for k, v in config.items() if k not in ("cniVersion", "name")}, {"type": "show-prev"}]
    (netd / "10-tdoct.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": NET, "plugins": plugins}))
    env = {"NETCONFPATH": str(netd), "CNI_PATH": f"{EXAMPLES}:{REFERENCE}"}

    add = run([str(tool), "add", NET, netns], env)
    assert add.returncode == 0, add.stdout + add.stderr
    result = json.loads(add.stdout)
    assert result["cniVersion"] == "1.0.0"
    assert result["ips"] == [{"interface": 1, "address": f"{SUBNET}.2/24", "gateway": f"{SUBNET}.1"}]
    # show-prev got mini-bridge's result as prevResult, and passed it on unchanged as the final result
    received = json.loads(add.stderr.strip().splitlines()[-1])
    assert received["type"] == "show-prev" and received["name"] == NET
    assert received["prevResult"] == result
    assert (LIBCNI_CACHE / f"{NET}-cnitool-{_cnitool_id(netns)}-eth0").is_file()

    check = run([str(tool), "check", NET, netns], env)
    assert (check.returncode, check.stdout) == (0, ""), check.stderr
    for _ in range(2):
        delete = run([str(tool), "del", NET, netns], env)
        assert delete.returncode == 0, delete.stdout + delete.stderr
    assert in_ns(netns, "ip", "link", "show", "dev", "eth0").returncode != 0
    assert not list(LIBCNI_CACHE.glob(f"{NET}-*"))


def _cnitool_id(netns: str) -> str:
    """cnitool's container id is "cnitool-" + the first 10 bytes of sha512(netns path), in hex."""
    return hashlib.sha512(os.path.abspath(netns).encode()).digest()[:10].hex()
