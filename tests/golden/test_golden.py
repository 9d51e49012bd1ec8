"""Golden transcripts: (plugin, verb, config, env, facts) -> the exact script, compared with tests/golden/expected.

Facts (the read-only probes) and the random names are faked, so these run without root. Regenerate
after an intended change with `pytest tests/golden --update-golden` and review the diff like code.
"""

from __future__ import annotations

import inspect
import io
import json
from pathlib import Path
from typing import Any

import pytest

from cniplug import facts, nft, skel
from cniplug.cli import plugin_handlers
from cniplug.plugins import common

HERE = Path(__file__).parent
CASES = sorted((HERE / "cases").glob("*.json"))


class FakeFacts:
    """What the probes would have seen on the host, from the case's "facts" object."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.links: dict[str, dict[str, Any]] = data.get("links", {})
        self.sysctls: dict[str, str] = {"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "0",
                                        **data.get("sysctls", {})}
        self.iptables: dict[str, list[str]] = data.get("iptables", {})
        self.netns_alive: bool = data.get("netns_alive", True)
        self.ipv6: bool = data.get("ipv6", True)
        # nftables: "tools" installed (default: all), "nft" = {"family name": [objects of `nft -j list table`]}
        self.tools: list[str] | None = data.get("tools")
        self.nft: dict[str, list[dict[str, Any]]] = data.get("nft", {})
        self.ip_json: dict[str, list[Any]] = data.get("ip_json", {})  # "ARGS joined by spaces" -> ip -j output
        self.ns_sysctls: dict[str, str] = data.get("ns_sysctls", {})  # path below /proc/sys -> value
        self.peer_ifindex: int = data.get("peer_ifindex", -1)
        self.tc: dict[str, list[dict[str, Any]]] = data.get("tc", {})

    def iptables_rules(self, family: int, table: str, chain: str) -> list[str]:
        """`iptables -S CHAIN` of the case's nat table: nothing for a chain that is not there."""
        lines = self.iptables.get(str(family), [])
        if chain != "POSTROUTING" and f"-N {chain}" not in lines and not any(
                line.startswith(f"-P {chain} ") for line in lines):
            return []
        return [line for line in lines if line.split()[1] == chain]

    def link(self, name: str, key: str, default: Any) -> Any:
        return self.links.get(name, {}).get(key, default)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every probe in facts (PROBES) is replaced: the script depends on the case, never on this machine."""
        monkeypatch.setattr(facts, "link_exists", lambda name: name in self.links)
        monkeypatch.setattr(facts, "is_bridge", lambda name: self.links.get(name, {}).get("kind") == "bridge")
        monkeypatch.setattr(facts, "link_flags", lambda name: int(self.links.get(name, {}).get("flags", "0"), 16))
        monkeypatch.setattr(facts, "sysctl", lambda key: self.sysctls.get(key))
        monkeypatch.setattr(facts, "addresses", lambda prefix, dev: self.links.get(dev, {}).get("addrs", []))
        monkeypatch.setattr(facts, "iptables_rules", self.iptables_rules)
        monkeypatch.setattr(facts, "netns_alive", lambda path: bool(path) and self.netns_alive)
        monkeypatch.setattr(facts, "ip_json", lambda prefix, *args: self.ip_json.get(" ".join(args), []))
        monkeypatch.setattr(facts, "ns_sysctls", lambda netns, keys: {k: self.ns_sysctls.get(k) for k in keys})
        monkeypatch.setattr(facts, "mac_of", lambda name: self.link(name, "mac", ""))
        monkeypatch.setattr(facts, "addr_assign_type", lambda name: self.link(name, "addr_assign_type", -1))
        monkeypatch.setattr(facts, "ifindex_of", lambda name: self.link(name, "ifindex", -1))
        monkeypatch.setattr(facts, "master_of", lambda name: self.link(name, "master", ""))
        monkeypatch.setattr(facts, "host_addresses", lambda dev: self.link(dev, "addrs", []))
        monkeypatch.setattr(facts, "has_ipv6", lambda: self.ipv6)
        monkeypatch.setattr(facts, "check_netns", lambda path: None)
        monkeypatch.setattr(nft, "installed", lambda tool: self.tools is None or tool in self.tools)
        monkeypatch.setattr(nft, "table", lambda family, name: self.nft.get(f"{family} {name}", []))
        # bandwidth: the container link's veth peer, host link names by ifindex, MTUs, `tc -j` answers.
        monkeypatch.setattr(facts, "veth_peer_ifindex", lambda prefix, ifname: self.peer_ifindex)
        monkeypatch.setattr(facts, "link_name", lambda index: next(
            (name for name, link in self.links.items() if link.get("ifindex") == index), ""))
        monkeypatch.setattr(facts, "link_mtu", lambda name: self.link(name, "mtu", -1))
        monkeypatch.setattr(facts, "tc_json", lambda *args: self.tc.get(" ".join(args), []))
        monkeypatch.setattr(common, "host_veth_name", lambda: "veth0a1b2c3d")
        monkeypatch.setattr(common, "random_mac", lambda: "02:00:00:00:00:aa")


def render_case(case: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    FakeFacts(case.get("facts", {})).install(monkeypatch)
    config = json.loads(json.dumps(case["config"]).replace("@TMP@", str(tmp_path)))
    env = {"CNI_COMMAND": case["command"], "CNI_CONTAINERID": "c0ffee", "CNI_NETNS": "/run/netns/golden",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin", **case.get("env", {})}
    handlers, _ = plugin_handlers(case["plugin"])
    out = io.StringIO()
    rc = skel.run(handlers, "golden", argv=["--dry-run"], environ=env,
                  stdin=io.BytesIO(json.dumps(config).encode()), stdout=out)
    assert rc == 0, out.getvalue()
    return out.getvalue().replace(str(tmp_path), "@TMP@")


# The functions of cniplug.facts that read the machine; FakeFacts replaces each one.
PROBES = {"link_exists", "is_bridge", "link_flags", "sysctl", "addresses", "iptables_rules", "netns_alive", "ip_json",
          "mac_of", "addr_assign_type", "ifindex_of", "master_of", "host_addresses", "has_ipv6", "check_netns",
          "ns_sysctls", "veth_peer_ifindex", "link_name", "link_mtu", "tc_json"}
PURE = {"ns_ip", "ns_exec", "probe_error", "iptables_words"}  # no probe: computed from their arguments


def test_fake_facts_replace_every_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    public = {name for name, value in vars(facts).items() if inspect.isfunction(value)
              and value.__module__ == facts.__name__ and not name.startswith("_")}
    assert public == PROBES | PURE, "a new probe in cniplug.facts: fake it in FakeFacts and list it in PROBES"
    FakeFacts({}).install(monkeypatch)
    assert all(getattr(facts, name).__module__ != facts.__name__ for name in PROBES)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    case = json.loads(path.read_text())
    text = render_case(case, monkeypatch, tmp_path)
    expected = HERE / "expected" / f"{path.stem}.sh"
    if request.config.getoption("--update-golden"):
        expected.write_text(text)
    assert expected.exists(), f"no golden file {expected}: run pytest tests/golden --update-golden"
    assert text == expected.read_text(), f"{path.stem}: script differs from {expected}"
    assert not list(tmp_path.iterdir()), "a dry run wrote files"


def test_every_plugin_has_a_golden_case() -> None:
    plugins = {json.loads(p.read_text())["plugin"] for p in CASES}
    assert {"cniplug-bridge", "cniplug-ptp", "cniplug-loopback"} <= plugins


def has_chinese(text: str) -> bool:
    return any("\u4e00" <= c <= "\u9fff" for c in text)


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_every_step_is_explained(path: Path, lang: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each command of a plugin script has an explanation right above it, in the language asked for; a step
    that follows the tutorial names its example and step."""
    from cniplug import script

    case = json.loads(path.read_text())
    case["env"] = {**case.get("env", {}), "CNIPLUG_LANG": lang}
    text = render_case(case, monkeypatch, tmp_path)
    assert text.startswith(script.header(lang))
    steps = script.parse(text[len(script.header(lang)):]).steps
    assert steps or case["command"] == "DEL", "no step at all"
    for step in steps:
        assert step.note, f"{path.stem} ({lang}): no explanation above {step.line!r}"
        if lang == "zh":
            assert has_chinese(step.note), f"{path.stem}: explanation of {step.line!r} is not in Chinese: {step.note}"
    tutorial_refs = [s.note for s in steps if "example" in s.note or "示例" in s.note]
    if case["plugin"] in ("cniplug-bridge", "cniplug-ptp") and case["command"] == "ADD":
        assert tutorial_refs, "no step names the tutorial"
        # ptp is the tutorial's example 3 (a router), bridge its example 2; only NAT, which example 3 has not,
        # may point from ptp to example 2.
        wrong = "2" if case["plugin"] == "cniplug-ptp" else "3"
        assert not [s.line for s in steps if (f"example {wrong}," in s.note or f"示例{wrong}" in s.note)
                    and not s.argv[0].startswith(("iptables", "ip6tables", "nft"))], \
            "a step points to the wrong example"
