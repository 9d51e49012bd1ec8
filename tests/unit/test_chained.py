"""Pure pieces of cniplug-firewall and cniplug-tuning: key lookup, sysctl paths, the allowlist, config
refusals, the tuning backup format, firewall GC bookkeeping. No root."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from cniplug import rundir, skel
from cniplug.plugins import chained, firewall, tuning
from cniplug.spec import CNIError


def test_keys_match_case_insensitively_exact_first() -> None:
    assert chained.get({"IngressPolicy": "same-bridge"}, "ingressPolicy") == "same-bridge"
    assert chained.get({"ingresspolicy": "a", "ingressPolicy": "b"}, "ingressPolicy") == "b"
    assert chained.get({}, "mtu", 0) == 0


@pytest.mark.parametrize("key, want", [
    ("net.core.somaxconn", "net/core/somaxconn"),
    ("net.ipv4.conf.IFNAME.arp_filter", "net/ipv4/conf/eth0/arp_filter"),
    ("net/ipv4/conf/eth0.100/arp_filter", "net/ipv4/conf/eth0.100/arp_filter"),
])
def test_sysctl_path(key: str, want: str) -> None:
    assert tuning.sysctl_path(key, "eth0") == want


@pytest.mark.parametrize("key", ["kernel.hostname", "net", "net/../kernel/hostname", "net..core", "/net/core/x",
                                 "net.core.x y", "net/core/*", "vm/swappiness", "net.ipv4.conf.IFNAME/../x", ""])
def test_sysctl_path_refused(key: str) -> None:
    with pytest.raises(CNIError) as err:
        tuning.sysctl_path(key, "eth0")
    assert err.value.code == 7 and repr(key) in err.value.msg


def test_allowlist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning, "ALLOWLIST", str(tmp_path / "absent.conf"))
    assert tuning.allowlist() is None
    tuning.check_allowed("net.core.somaxconn", None)
    allow = tmp_path / "allowlist.conf"
    allow.write_text("^net\\.core\\.somaxconn$\n\n^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]*$\n")
    monkeypatch.setattr(tuning, "ALLOWLIST", str(allow))
    patterns = tuning.allowlist()
    tuning.check_allowed("net.core.somaxconn", patterns)
    tuning.check_allowed("net.ipv4.conf.IFNAME.arp_filter", patterns)
    with pytest.raises(CNIError) as err:
        tuning.check_allowed("net.ipv4.ip_forward", patterns)
    assert err.value.code == 7 and "net.ipv4.ip_forward" in err.value.msg


def test_backup_text_is_the_reference_format() -> None:
    # Observed from the reference 1.1.1: Go MarshalIndent with one space, keys in struct order.
    text = tuning.backup_text({"mtu": 1500, "mac": "fe:4e:df:75:c3:25", "allmulti": False, "promisc": False})
    assert text == '{\n "mac": "fe:4e:df:75:c3:25",\n "promisc": false,\n "mtu": 1500,\n "allmulti": false\n}'


def test_read_backup_ignores_malformed_values(tmp_path: Path) -> None:
    p = tmp_path / "b.json"
    p.write_text(json.dumps({"mac": "02:00:00:00:00:01 mtu 9", "mtu": 1400, "promisc": "yes", "txQLen": -1}))
    assert tuning.read_backup(str(p)) == {"mtu": 1400}
    p.write_text("[")
    assert tuning.read_backup(str(p)) == {}


def run(plugin: str, config: dict[str, Any], command: str = "ADD") -> dict[str, Any]:
    from cniplug.cli import plugin_handlers

    handlers, _ = plugin_handlers(plugin)
    out = io.StringIO()
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/absent", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/opt/cni/bin"}
    skel.run(handlers, "t", argv=[], environ=env, stdin=io.BytesIO(json.dumps(config).encode()), stdout=out)
    return dict(json.loads(out.getvalue()))


PREV = {"cniVersion": "1.0.0", "interfaces": [{"name": "br0"}], "ips": [{"address": "10.232.0.2/24"}]}


def test_firewalld_backend_refused_with_code_2() -> None:
    err = run("cniplug-firewall", {"cniVersion": "1.0.0", "name": "n", "type": "cniplug-firewall",
                                   "backend": "firewalld", "prevResult": PREV})
    assert err["code"] == 2 and "'backend'" in err["msg"] and "firewalld" in err["msg"]


def test_firewall_addresses_per_family() -> None:
    prev = {"ips": [{"address": "10.1.2.3/24"}, {"address": "fd00::3/64"}, {"address": "10.1.2.3/24"}]}
    assert firewall.addresses(prev) == {4: ["10.1.2.3/32"], 6: ["fd00::3/128"]}


def test_firewall_records_roundtrip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rundir, "RUN_DIR", str(tmp_path))
    req = skel.Request(command="ADD", config={"name": "net1"}, raw_config=b"", container_id="c1", ifname="eth0")
    firewall.write_record(req, {"ips": [{"address": "10.1.2.3/24"}]})
    (tmp_path / "firewall" / "fw-garbage.json").write_text("{")
    records = firewall.read_records()
    assert records == [(firewall.record_path("net1", "c1", "eth0"),
                        {"network": "net1", "containerID": "c1", "ifname": "eth0", "ips": ["10.1.2.3/32"]})]
    assert oct(Path(records[0][0]).stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("plugin, key, value", [
    ("cniplug-firewall", "ingressPolicy", False), ("cniplug-firewall", "ingressPolicy", 0),
    ("cniplug-firewall", "ingressPolicy", []), ("cniplug-firewall", "iptablesAdminChainName", False),
    ("cniplug-firewall", "iptablesAdminChainName", {}), ("cniplug-tuning", "sysctl", False),
    ("cniplug-tuning", "sysctl", []), ("cniplug-tuning", "sysctl", 0),
])
def test_a_value_of_the_wrong_type_is_refused_not_taken_for_the_default(plugin: str, key: str, value: Any) -> None:
    """A falsy value of the wrong type (false, 0, [], {}) was silently read as "not set" (ingressPolicy open, the
    default admin chain, no sysctls); the reference refuses it ("cannot unmarshal bool into ... of type string").
    CHECK: read-only even where the value would be taken (this runs in the test's own namespace)."""
    err = run(plugin, {"cniVersion": "1.0.0", "name": "n", "type": plugin, key: value, "prevResult": PREV}, "CHECK")
    assert err.get("code") == 7 and repr(key) in err["msg"] and repr(value) in err["msg"], err


@pytest.mark.parametrize("config", [{"mac": ""}, {"args": {"cni": {"mac": ""}}}])
def test_tuning_empty_mac_is_unset_as_in_the_reference(config: dict[str, Any]) -> None:
    """The reference changes the MAC only when the value is not "" (as it treats the capability's mac): ours
    refused "mac": "" with "invalid MAC address"."""
    req = skel.parse_request({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/absent",
                              "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"},
                             json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "cniplug-tuning", "mtu": 1400,
                                         **config, "prevResult": PREV}).encode())
    assert tuning.parse_config(req)["link"] == {"mtu": 1400}


def test_tuning_dry_run_assumes_only_an_interface_the_plugin_before_made() -> None:
    """A dry run before CNI_IFNAME exists takes a new veth's values only when prevResult lists CNI_IFNAME in the
    container (`cniplug net add --dry-run`); otherwise (a wrong CNI_IFNAME) the interface is not found, as in ADD."""
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/absent", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/opt/cni/bin"}

    def dry(prev: dict[str, Any]) -> Any:
        config = {"cniVersion": "1.0.0", "name": "n", "type": "cniplug-tuning", "mtu": 1400, "prevResult": prev}
        return tuning.add(skel.parse_request(env, json.dumps(config).encode(), dry_run=True))

    with pytest.raises(CNIError) as err:
        dry(PREV)
    assert err.value.code == 999 and "eth0" in err.value.msg
    made = {**PREV, "interfaces": [{"name": "veth1"}, {"name": "eth0", "mac": "02:00:00:00:e2:09", "mtu": 1450,
                                                       "sandbox": "/run/netns/absent"}]}
    script = dry(made)
    assert "link set dev eth0 mtu 1400" in script and '"mtu": 1450' in script, script


def test_record_and_backup_files_nested_too_deep_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file on disk is input too: one nested deeper than the recursion limit made firewall DEL/GC and tuning DEL
    fail with "internal error: RecursionError" instead of skipping it like any other malformed file."""
    monkeypatch.setattr(rundir, "RUN_DIR", str(tmp_path))
    (tmp_path / firewall.RECORD_SUBDIR).mkdir()
    (tmp_path / firewall.RECORD_SUBDIR / "fw-deep.json").write_text("[" * 100_000)
    assert firewall.read_records() == []
    (tmp_path / "backup.json").write_text("[" * 100_000)
    assert tuning.read_backup(str(tmp_path / "backup.json")) == {}
