"""cniplug show on recorded probes (no root): veth pairing across namespaces, filters, NAT, IPAM, text and SVG.

show_probe.json is show.probe() of a real host, trimmed: bridge tshbr0 with containers tsh-c1, tsh-c2
(cniplug-bridge), tsh-c3 (cniplug-ptp), and the tutorial's example 1 (veth tsh-va in tsh-a <-> tsh-vb in tsh-b).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from cniplug import runner
from cniplug.lab import show
from cniplug.spec import ERR_INTERNAL, CNIError

RAW: dict[str, Any] = json.loads((Path(__file__).parent / "show_probe.json").read_text())
HOST_VETH = {"tsh-c1": "vethb0febd41", "tsh-c2": "vethb1b52830", "tsh-c3": "veth19895992"}
PAIRS = {frozenset({("", veth), (ns, "eth0")}) for ns, veth in HOST_VETH.items()} | \
    {frozenset({("tsh-a", "tsh-va"), ("tsh-b", "tsh-vb")})}
SVG = "{http://www.w3.org/2000/svg}"


def pairs(topo: show.Topology) -> set[frozenset[tuple[str, str]]]:
    return {frozenset({a.key, b.key}) for a, b in topo.veth_pairs()}


def raw_without_names(which: set[str]) -> dict[str, Any]:
    """The recording with the nsid -> name maps of these namespaces removed (as if their peers were unnamed)."""
    raw = copy.deepcopy(RAW)
    for ns in raw["namespaces"]:
        if ns["name"] in which:
            ns["ids"] = [{"nsid": i["nsid"]} for i in ns["ids"]]
    return raw


def test_every_veth_is_paired_with_its_other_end_across_namespaces() -> None:
    topo = show.assemble(RAW)
    assert pairs(topo) == PAIRS
    assert topo.link(("tsh-c1", "eth0")).peer == ("", "vethb0febd41")  # type: ignore[union-attr]
    assert topo.link(("", "veth19895992")).peer == ("tsh-c3", "eth0")  # type: ignore[union-attr]
    assert topo.link(("tsh-b", "tsh-vb")).peer == ("tsh-a", "tsh-va")  # type: ignore[union-attr]
    assert {(p.name, b.name) for p, b in topo.ports()} == {("vethb0febd41", "tshbr0"), ("vethb1b52830", "tshbr0")}


@pytest.mark.parametrize("unnamed", [{""}, {"tsh-a"}, {"", "tsh-a", "tsh-b"}])
def test_pairing_without_nsid_names_matches_mirrored_ifindexes(unnamed: set[str]) -> None:
    """The host as a container sees it has no name; nor do podman's namespaces: the ends are matched by
    ifindex <-> link_index. tsh-va and tsh-vb are both ifindex 2 with link_index 2, as are the containers' eth0."""
    assert pairs(show.assemble(raw_without_names(unnamed))) == PAIRS


def test_same_ifindexes_in_two_pairs_are_told_apart_by_nsid_names() -> None:
    """A second example-1 pair (tsh-d <-> tsh-e) has the very ifindexes of tsh-a <-> tsh-b: only the nsid -> name
    maps tell the four ends apart; without them the ends stay unpaired rather than paired wrongly."""
    raw = copy.deepcopy(RAW)
    for old, new, other in (("tsh-a", "tsh-d", "tsh-e"), ("tsh-b", "tsh-e", "tsh-d")):
        ns = copy.deepcopy(next(n for n in raw["namespaces"] if n["name"] == old))
        ns["name"], ns["ids"] = new, [{"nsid": 0, "name": other}]
        raw["namespaces"].append(ns)
    got = pairs(show.assemble(raw))
    assert got == PAIRS | {frozenset({("tsh-d", "tsh-va"), ("tsh-e", "tsh-vb")})}
    for ns in raw["namespaces"]:
        ns["ids"] = [{"nsid": i["nsid"]} for i in ns["ids"]]
    assert pairs(show.assemble(raw)) == {p for p in PAIRS if not any(k[0] in ("tsh-a", "tsh-b") for k in p)}


def test_an_end_whose_peer_is_not_probed_stays_unpaired() -> None:
    raw = copy.deepcopy(RAW)
    raw["namespaces"] = [ns for ns in raw["namespaces"] if ns["name"] != "tsh-c2"]
    topo = show.assemble(raw)
    assert pairs(topo) == {p for p in PAIRS if ("tsh-c2", "eth0") not in p}
    assert topo.link(("", "vethb1b52830")).peer is None  # type: ignore[union-attr]


def test_addresses_routes_nat_and_reservations() -> None:
    topo = show.assemble(RAW)
    assert topo.link(("", "tshbr0")).addrs == ["10.247.1.1/24"]  # type: ignore[union-attr]
    assert topo.link(("tsh-c3", "eth0")).addrs == ["10.247.2.2/24"]  # link-local fe80:: left out  # type: ignore[union-attr]
    assert "default via 10.247.1.1 dev eth0" in [str(r) for r in topo.routes if r.netns == "tsh-c1"]
    assert "10.247.2.2 dev veth19895992 scope host" in [str(r) for r in topo.routes if r.netns == ""]
    nat = {c.container_id: c for c in topo.nat}
    assert set(nat) == {"tsh-c1", "tsh-c2", "tsh-c3"}
    assert (nat["tsh-c3"].network, nat["tsh-c3"].sources) == ("tsh-ptpnet", ["10.247.2.2/32"])
    assert nat["tsh-c1"].chain == "CNI-824f008cc2217be2ffd6715d"
    assert nat["tsh-c1"].rules == ["-d 10.247.1.0/24 -j ACCEPT", "! -d 224.0.0.0/4 -j MASQUERADE"]
    assert [(r.network, r.ip, r.container_id, r.ifname) for r in topo.reservations] == [
        ("tsh-brnet", "10.247.1.2", "tsh-c1", "eth0"), ("tsh-brnet", "10.247.1.3", "tsh-c2", "eth0"),
        ("tsh-ptpnet", "10.247.2.2", "tsh-c3", "eth0")]


def test_parse_nat_ignores_rules_that_are_not_cni_jumps() -> None:
    lines = ["-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
             "-A POSTROUTING -s 10.1.0.5/32 -j CNI-abc",
             '-A POSTROUTING -s 10.9.0.0/16 -m comment --comment "name: \\"n\\" id: \\"c\\"" -j KUBE-X',
             '-A POSTROUTING -s 10.2.0.5/32 -s 10.2 -m comment --comment "unbalanced \\"',
             "-A CNI-abc -j MASQUERADE"]
    chains = show.parse_nat(lines)
    assert [(c.chain, c.network, c.container_id, c.sources, c.rules) for c in chains] == [
        ("CNI-abc", "", "", ["10.1.0.5/32"], ["-j MASQUERADE"])]


def keys(topo: show.Topology) -> set[tuple[str, str]]:
    return {link.key for link in topo.links}


def test_prefix_keeps_matching_namespaces_and_what_they_connect_to() -> None:
    topo = show.assemble(RAW, prefix="tsh-c1")
    assert topo.namespaces == ["", "tsh-c1"]
    assert keys(topo) == {("tsh-c1", "lo"), ("tsh-c1", "eth0"), ("", "vethb0febd41"), ("", "tshbr0")}
    assert [c.container_id for c in topo.nat] == ["tsh-c1"]
    assert [r.ip for r in topo.reservations] == ["10.247.1.2"]
    assert {r.dev for r in topo.routes if r.netns == ""} == {"tshbr0"}  # not the ptp veth's /32
    # a bridge matched by name brings its ports and what they lead to
    topo = show.assemble(RAW, prefix="tshbr")
    assert keys(topo) == {("", "tshbr0"), ("", "vethb0febd41"), ("", "vethb1b52830"),
                          ("tsh-c1", "eth0"), ("tsh-c2", "eth0")}
    assert [r.ip for r in topo.reservations] == ["10.247.1.2", "10.247.1.3"]
    # the whole recording is tsh-*: every object stays
    everything = show.assemble(RAW)
    assert keys(show.assemble(RAW, prefix="tsh")) == keys(everything) - {("", "lo"), ("", "eth0")}


def test_netns_keeps_one_namespace_and_its_peers() -> None:
    topo = show.assemble(RAW, netns="tsh-c3")
    assert topo.namespaces == ["", "tsh-c3"]
    assert keys(topo) == {("tsh-c3", "lo"), ("tsh-c3", "eth0"), ("", "veth19895992")}
    assert [c.container_id for c in topo.nat] == ["tsh-c3"]  # by its source address
    assert [r.ip for r in topo.reservations] == ["10.247.2.2"]
    topo = show.assemble(RAW, netns="host", prefix="tshbr")
    assert keys(topo) == {("", "tshbr0"), ("", "vethb0febd41"), ("", "vethb1b52830"),
                          ("tsh-c1", "eth0"), ("tsh-c2", "eth0")}
    assert show.assemble(RAW, netns="nope").links == []


def test_text_names_every_object_and_edge() -> None:
    text = show.render_text(show.assemble(RAW))
    for ns, veth in HOST_VETH.items():
        assert f"namespace {ns}\n" in text
        assert f"host/{veth} <-> {ns}/eth0" in text
    assert "host/vethb0febd41 -> tshbr0" in text and "host/vethb1b52830 -> tshbr0" in text
    assert "tsh-a/tsh-va <-> tsh-b/tsh-vb" in text
    assert "10.247.1.1/24" in text and "10.247.2.1/32" in text and "10.247.3.2/24" in text
    assert "CNI-0301f43f802a830db74fa715  net tsh-ptpnet  container tsh-c3  -s 10.247.2.2/32" in text
    assert "tsh-brnet            10.247.1.3       container tsh-c2  eth0" in text
    zh = show.render_text(show.assemble(RAW), lang="zh")
    assert zh.startswith("主机\n") and "命名空间 tsh-c1" in zh and "主机/vethb0febd41 <-> tsh-c1/eth0" in zh


def test_svg_parses_and_names_every_object() -> None:
    topo = show.assemble(RAW)
    root = ET.fromstring(show.render_svg(topo))
    assert root.tag == f"{SVG}svg"
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    for name in ["tsh-a", "tsh-b", "tsh-c1", "tsh-c2", "tsh-c3", "tshbr0", *HOST_VETH.values(), "tsh-va", "tsh-vb",
                 "eth0", "10.247.1.1/24", "10.247.1.2/24", "10.247.2.1/32", "10.247.3.1/24",
                 "CNI-824f008cc2217be2ffd6715d", "tsh-ptpnet", "10.247.1.3", "default via 10.247.2.1 dev eth0"]:
        assert name in texts, name
    drawn = {frozenset({p.get("data-a"), p.get("data-b")}) for p in root.iter(f"{SVG}path")
             if p.get("class") == "veth-pair"}
    assert drawn == {frozenset(show.end_label(k) for k in pair) for pair in PAIRS}
    ports = {(x.get("data-port"), x.get("data-bridge")) for x in root.iter(f"{SVG}line") if x.get("class") == "port"}
    assert ports == {("host/vethb0febd41", "tshbr0"), ("host/vethb1b52830", "tshbr0")}
    boxes = {r.get("data-name") for r in root.iter(f"{SVG}rect") if r.get("class") in ("netns", "link", "bridge")}
    assert {"host", "tsh-c1", "host/tshbr0", "tsh-c1/eth0", "host/veth19895992"} <= boxes
    assert ET.fromstring(show.render_svg(topo, lang="zh")).tag == f"{SVG}svg"
    assert ET.fromstring(show.render_svg(show.assemble(RAW, netns="nope"))).tag == f"{SVG}svg"


def test_names_with_markup_are_escaped() -> None:
    raw = copy.deepcopy(RAW)
    raw["reservations"].append({"network": "a<b&\"c'", "ip": "10.0.0.9", "owner": "<x>\r\neth0"})
    root = ET.fromstring(show.render_svg(show.assemble(raw)))
    assert "a<b&\"c'" in " ".join(t.text or "" for t in root.iter(f"{SVG}text"))


def test_main_fails_with_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(show.os, "geteuid", lambda: 1000)
    assert show.main("", None, show.DEFAULT_DATA_DIR, "", "en") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs root" in err

    def missing(program: str) -> str:
        raise CNIError(ERR_INTERNAL, f"command not found: {program}")

    monkeypatch.setattr(show.os, "geteuid", lambda: 0)
    monkeypatch.setattr(runner, "which", missing)
    assert show.main("", None, show.DEFAULT_DATA_DIR, "", "en") == 1
    assert capsys.readouterr().err == "cniplug show: command not found: ip\n"


def test_unknown_option_exits_2_with_usage() -> None:
    proc = subprocess.run([sys.executable, "-m", "cniplug", "show", "--bogus"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage:" in proc.stderr and "Traceback" not in proc.stderr
