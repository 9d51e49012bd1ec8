"""The etcd source's allocation logic against a fake etcdctl (no etcd, no root): put-if-absent races,
renewal, a restarted agent keeping its subnet, expiry, release. The real etcd is in
tests/integration/test_node_cluster.py."""

from __future__ import annotations

import base64
import ipaddress
import json
import re

import pytest

from cniplug.node import etcd
from cniplug.node.etcd import EtcdSource, candidates, parse_records, subnet_key, txn_put_if_absent
from cniplug.node.model import NodeInfo, SourceError
from cniplug.runner import Completed

P = etcd.DEFAULT_PREFIX


class FakeEtcd:
    """Just enough of `etcdctl ... -w json` for the source: get --prefix, put, txn (create == 0 -> put),
    lease grant / keep-alive --once / revoke. `steal`: a key another node puts just before our next txn."""

    def __init__(self) -> None:
        self.kv: dict[str, tuple[str, int]] = {}
        self.leases: set[int] = set()
        self.next_lease = 0x100
        self.steal: tuple[str, str] | None = None
        self.calls: list[list[str]] = []

    def expire(self, lease: int) -> None:
        self.leases.discard(lease)
        self.kv = {k: v for k, v in self.kv.items() if v[1] != lease}

    def run(self, argv: list[str], stdin: str | None) -> Completed:
        self.calls.append(argv)
        assert argv[0] == "etcdctl" and argv[-2:] == ["-w", "json"]
        args = argv[4:-2]
        ok = lambda data: Completed(argv, 0, json.dumps(data))  # noqa: E731
        if args[0] == "get":
            kvs = [{"key": base64.b64encode(k.encode()).decode(), "value": base64.b64encode(v.encode()).decode(),
                    "lease": lease} for k, (v, lease) in sorted(self.kv.items()) if k.startswith(args[1])]
            return ok({"kvs": kvs} if kvs else {})
        if args[:2] == ["lease", "grant"]:
            self.next_lease += 1
            self.leases.add(self.next_lease)
            return ok({"ID": self.next_lease, "TTL": int(args[2])})
        if args[:2] == ["lease", "keep-alive"]:
            lease = int(args[3], 16)
            if lease not in self.leases:
                return Completed(argv, 2, "", "Error: etcdserver: requested lease not found")
            return ok({"ID": lease, "TTL": 30})
        if args[:2] == ["lease", "revoke"]:
            self.expire(int(args[2], 16))
            return ok({})
        if args[0] == "put":
            self.kv[args[1]] = (args[2], int(args[3].split("=")[1], 16))
            return ok({})
        if args[0] == "txn":
            assert stdin is not None
            m = re.fullmatch(r'create\("([^"]+)"\) = "0"\n\nput (\S+) (".*") --lease=([0-9a-f]+)\n\n\n', stdin)
            assert m, stdin
            if self.steal:
                self.kv[self.steal[0]] = (self.steal[1], 1)
                self.steal = None
            if m.group(1) in self.kv:
                return ok({"header": {}})
            self.kv[m.group(2)] = (json.loads(m.group(3)), int(m.group(4), 16))
            return ok({"succeeded": True})
        raise AssertionError(f"unexpected {argv}")


def source(fake: FakeEtcd, name: str, address: str = "10.239.200.11", **kw: object) -> EtcdSource:
    return EtcdSource(name, address, "http://10.239.200.1:23790", "10.239.0.0/22", 24, 4, run=fake.run, **kw)  # type: ignore[arg-type]


def test_candidates_in_order_preferred_first_taken_skipped() -> None:
    assert list(candidates("10.239.0.0/22", 24, {"10.239.1.0/24"})) == ["10.239.0.0/24", "10.239.2.0/24",
                                                                          "10.239.3.0/24"]
    assert next(candidates("10.239.0.0/22", 24, set(), "10.239.3.0/24")) == "10.239.3.0/24"
    assert next(candidates("10.239.0.0/22", 24, {"10.239.3.0/24"}, "10.239.3.0/24")) == "10.239.0.0/24"
    assert next(candidates("10.239.0.0/22", 24, set(), "10.1.0.0/24")) == "10.239.0.0/24"  # outside: ignored
    with pytest.raises(ValueError):
        next(candidates("10.239.0.0/22", 20, set()))


def test_txn_text_is_etcdctls_put_if_absent() -> None:
    value = etcd.record_value("n1", "10.239.200.11")
    assert txn_put_if_absent(subnet_key(P, "10.239.1.0/24"), value, 0x1F) == (
        'create("/cniplug/network/subnets/10.239.1.0-24") = "0"\n\n'
        'put /cniplug/network/subnets/10.239.1.0-24 "{\\"node\\":\\"n1\\",\\"address\\":\\"10.239.200.11\\"}" '
        '--lease=1f\n\n\n')


def test_nodes_take_distinct_subnets_and_see_each_other() -> None:
    fake = FakeEtcd()
    a, b = source(fake, "n1"), source(fake, "n2", "10.239.200.12")
    a.nodes()
    got = b.nodes()
    assert got == [NodeInfo("n1", ("10.239.0.0/24",), "10.239.200.11"),
                   NodeInfo("n2", ("10.239.1.0/24",), "10.239.200.12")]


def test_lost_race_takes_the_next_free_subnet() -> None:
    fake = FakeEtcd()
    fake.steal = (subnet_key(P, "10.239.0.0/24"), etcd.record_value("n9", "10.239.200.19"))
    a = source(fake, "n1")
    a.nodes()
    assert a.cidr == "10.239.1.0/24"
    assert sum(1 for c in fake.calls if c[4] == "txn") == 2


def test_renewal_keeps_the_lease_and_a_restarted_agent_keeps_its_subnet() -> None:
    fake = FakeEtcd()
    a = source(fake, "n1")
    a.nodes()
    lease, cidr = a.lease, a.cidr
    a.nodes()
    assert (a.lease, a.cidr) == (lease, cidr)
    restarted = source(fake, "n1")  # a new process: knows nothing, finds its key
    restarted.nodes()
    assert (restarted.lease, restarted.cidr) == (lease, cidr)
    assert sum(1 for c in fake.calls if c[4:6] == ["lease", "grant"]) == 1


def test_expired_lease_gets_the_preferred_subnet_back_if_free() -> None:
    fake = FakeEtcd()
    source(fake, "n2", "10.239.200.12").nodes()  # takes 10.239.0.0/24
    a = source(fake, "n1")
    a.nodes()
    assert a.cidr == "10.239.1.0/24"
    fake.expire(a.lease)
    again = source(fake, "n1")
    again.preferred = "10.239.1.0/24"
    again.nodes()
    assert again.cidr == "10.239.1.0/24" and again.lease != a.lease


def test_changed_address_is_written_under_the_same_lease() -> None:
    fake = FakeEtcd()
    source(fake, "n1").nodes()
    moved = source(fake, "n1", "10.239.200.21")
    assert moved.nodes() == [NodeInfo("n1", ("10.239.0.0/24",), "10.239.200.21")]


def test_full_cluster_cidr_is_a_source_error() -> None:
    fake = FakeEtcd()
    for i in range(4):
        source(fake, f"n{i}").nodes()
    with pytest.raises(SourceError, match="no free /24"):
        source(fake, "n9").nodes()


def test_release_revokes_and_read_only_never_writes() -> None:
    fake = FakeEtcd()
    a = source(fake, "n1")
    a.nodes()
    ro = source(fake, "n2", read_only=True)
    before = len(fake.calls)
    assert [n.name for n in ro.nodes()] == ["n1"]
    assert [c[4] for c in fake.calls[before:]] == ["get"]
    a.release()
    assert ro.nodes() == []


def test_parse_records_skips_what_is_not_a_record() -> None:
    def kv(key: str, value: str, lease: int = 5) -> dict[str, object]:
        return {"key": base64.b64encode(key.encode()).decode(), "value": base64.b64encode(value.encode()).decode(),
                "lease": lease}
    text = json.dumps({"kvs": [
        kv(f"{P}/subnets/10.239.0.0-24", '{"node":"n1","address":"10.239.200.11"}'),
        kv(f"{P}/subnets/10.239.1.0-24", '{"node":"N1; rm","address":"10.239.200.12"}'),
        kv(f"{P}/subnets/10.239.2.0-24", '{"node":"n3","address":"$(reboot)"}'),
        kv(f"{P}/subnets/garbage", '{"node":"n4","address":""}'),
        kv(f"{P}/subnets/10.239.5.0-24", "not json"),
    ]})
    assert parse_records(P, text) == [etcd.Lease("10.239.0.0/24", "n1", "10.239.200.11", 5)]
    with pytest.raises(SourceError):
        parse_records(P, "Error: context deadline exceeded")


def test_etcdctl_failure_is_a_source_error() -> None:
    def down(argv: list[str], stdin: str | None) -> Completed:
        return Completed(argv, 1, "", "Error: context deadline exceeded")
    with pytest.raises(SourceError, match="deadline"):
        EtcdSource("n1", "", "http://127.0.0.1:23790", "10.239.0.0/17", run=down).nodes()


@pytest.mark.parametrize(("kw", "what"), [
    ({"name": "N1"}, "node name"), ({"address": "10.0.0.1; x"}, "address"),
    ({"endpoints": "http://a:1 --x"}, "endpoints"), ({"prefix": "no-slash"}, "prefix"),
    ({"ttl": 1}, "TTL"), ({"cluster_cidr": "fd00::/64"}, "IPv4"),
])
def test_bad_arguments_are_refused(kw: dict[str, object], what: str) -> None:
    args: dict[str, object] = {"name": "n1", "address": "", "endpoints": "http://127.0.0.1:23790",
                               "cluster_cidr": "10.239.0.0/17", **kw}
    with pytest.raises(ValueError, match=what):
        EtcdSource(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("cluster", "prefix_len"), [("10.240.0.0/22", 24), ("10.239.0.0/22", 25)])
def test_a_subnet_that_no_longer_fits_the_cluster_cidr_is_given_back_and_a_fitting_one_taken(
        cluster: str, prefix_len: int) -> None:
    """The operator corrects --cluster-cidr (or --pod-prefix-len) and restarts the agent: its old subnet would
    put its pods outside the cluster (masqueraded between nodes)."""
    fake = FakeEtcd()
    old = source(fake, "n1")
    old.nodes()
    restarted = EtcdSource("n1", "10.239.200.11", "http://10.239.200.1:23790", cluster, prefix_len, 4,
                           run=fake.run)  # type: ignore[arg-type]
    nodes = restarted.nodes()
    assert ipaddress.ip_network(restarted.cidr).subnet_of(ipaddress.ip_network(cluster))  # type: ignore[arg-type]
    assert ipaddress.ip_network(restarted.cidr).prefixlen == prefix_len
    assert nodes == [NodeInfo("n1", (restarted.cidr,), "10.239.200.11")]  # the old record is gone
