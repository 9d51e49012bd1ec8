"""The etcd source: each node takes a pod CIDR from the cluster CIDR and holds it with a lease it renews.

The same scheme as flannel's etcd mode (its `subnets/10.5.34.0-24` keys with a TTL), with etcd v3 leases:

    PREFIX/subnets/10.244.3.0-24  ->  {"node": "n3", "address": "10.239.200.13"}   (attached to lease L)

- **Taking a subnet is race-free**: one etcd transaction, `if create_revision(key) == 0 then put key
  --lease=L` (put-if-absent). Two nodes that pick the same free subnet at once: one transaction
  succeeds, the other fails and that node tries the next free subnet.
- **Holding it**: every `nodes()` call renews the lease (`lease keep-alive --once`); the agent calls it
  more often than the TTL (cniplug/node/agent.py). A node that stops renewing loses its key when the
  lease expires (etcd deletes it), and every other node drops its route on its next reconcile.
- **A restarted agent keeps its subnet**: it finds the key whose value names it, and renews that key's
  lease (a lease is not tied to a connection). If the lease expired meanwhile, it asks for the subnet it
  had before (`preferred`, from its config file on disk) and gets it if nobody took it.

It talks to etcd with `etcdctl` (Debian `etcd-client`, API v3, `-w json`), the commands a person types to
look at the same keys, through runner.execute like every other command of cniplug. A Python client was
weighed and not taken: python-etcd3 has had no release since 2020 and pins old grpc/protobuf versions,
and etcd 3.4's gRPC gateway (JSON over HTTP) would be a client of our own to maintain.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cniplug import runner
from cniplug.node.model import NodeInfo, SourceError

DEFAULT_PREFIX = "/cniplug/network"
NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")  # a DNS label-ish node name (RFC 1123)
PREFIX = re.compile(r"^(/[A-Za-z0-9_.-]+)+$")
ENDPOINT = re.compile(r"^https?://[A-Za-z0-9_.:\[\]-]+(/)?$")

Run = Callable[[list[str], "str | None"], runner.Completed]


@dataclass(frozen=True)
class Lease:
    """One subnet record read from etcd: the subnet, who holds it, the holder's address, the lease id."""

    cidr: str
    node: str
    address: str
    lease: int


def subnet_key(prefix: str, cidr: str) -> str:
    """'/p', '10.244.3.0/24' -> '/p/subnets/10.244.3.0-24' (flannel's key shape: '/' is the key separator)."""
    return f"{prefix}/subnets/{cidr.replace('/', '-')}"


def cidr_of_key(prefix: str, key: str) -> str | None:
    """The subnet a key names, normalised; None for any other key or a malformed one."""
    head = f"{prefix}/subnets/"
    if not key.startswith(head):
        return None
    try:
        return str(ipaddress.ip_network(key[len(head):].replace("-", "/")))
    except ValueError:
        return None


def candidates(cluster_cidr: str, prefix_len: int, taken: set[str], preferred: str = "") -> Iterator[str]:
    """The free subnets of length `prefix_len` in `cluster_cidr`, in address order, `preferred` first
    when it is one of them. `taken`: normalised CIDR strings. ValueError for a prefix_len shorter than
    the cluster's or longer than 30 (a /31 leaves no pod address beside the gateway)."""
    cluster = ipaddress.ip_network(cluster_cidr)
    if not cluster.prefixlen <= prefix_len <= 30:
        raise ValueError(f"pod subnet length /{prefix_len} does not fit cluster CIDR {cluster_cidr}")
    if preferred:
        try:
            pref = ipaddress.ip_network(preferred)
        except ValueError:
            pref = None
        if pref is not None and pref.prefixlen == prefix_len and pref.subnet_of(cluster) and str(pref) not in taken:  # type: ignore[arg-type]
            yield str(pref)
    for net in cluster.subnets(new_prefix=prefix_len):
        if str(net) not in taken and str(net) != preferred:
            yield str(net)


def parse_records(prefix: str, text: str) -> list[Lease]:
    """`etcdctl get PREFIX/subnets/ --prefix -w json` output -> the well-formed subnet records, in key
    order. A value that is not {"node": name, "address": ipv4-or-""} is skipped (not ours to trust).
    Raises SourceError when the text is not etcdctl's JSON."""
    try:
        data = json.loads(text)
        kvs = data.get("kvs") or []
    except (ValueError, AttributeError) as err:
        raise SourceError(f"etcdctl get: unexpected output {text[:200]!r}") from err
    found = []
    for kv in kvs:
        try:
            key = base64.b64decode(kv["key"]).decode()
            value = json.loads(base64.b64decode(kv.get("value", "")).decode())
            node, address, lease = value["node"], value.get("address", ""), int(kv.get("lease", 0))
        except (KeyError, ValueError, TypeError, AttributeError):
            continue
        cidr = cidr_of_key(prefix, key)
        if cidr is None or not isinstance(node, str) or not NAME.match(node) or not isinstance(address, str):
            continue
        if address and not _is_ipv4(address):
            continue
        found.append(Lease(cidr, node, address, lease))
    return found


def _is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def record_value(node: str, address: str) -> str:
    """The JSON value of a subnet key."""
    return json.dumps({"node": node, "address": address}, separators=(",", ":"))


def txn_put_if_absent(key: str, value: str, lease: int) -> str:
    """The stdin of `etcdctl txn`: if the key was never created (create_revision 0), put it with the lease.
    The value is a Go-quoted string (json.dumps of ASCII text is one: etcdctl unquotes it with strconv)."""
    return f'create("{key}") = "0"\n\nput {key} {json.dumps(value)} --lease={lease:x}\n\n\n'


def nodes_of(records: list[Lease]) -> list[NodeInfo]:
    """Records -> one NodeInfo per node name (its subnets in key order), sorted by name."""
    by_name: dict[str, tuple[list[str], str]] = {}
    for rec in records:
        cidrs, address = by_name.setdefault(rec.node, ([], rec.address))
        cidrs.append(rec.cidr)
    return [NodeInfo(name, tuple(cidrs), address) for name, (cidrs, address) in sorted(by_name.items())]


class EtcdSource:
    """Source of NodeInfo from etcd; holds this node's subnet (see the module text).

    name, address: this node (validated: RFC 1123 name, IPv4 or ""). endpoints: etcd client URLs,
    comma-separated. cluster_cidr, prefix_len: where subnets come from. ttl: lease seconds (>= 2).
    read_only: never take or renew anything (for --dry-run): nodes() only reads.
    Raises ValueError for a bad argument; nodes() raises SourceError.
    """

    def __init__(self, name: str, address: str, endpoints: str, cluster_cidr: str, prefix_len: int = 24,
                 ttl: int = 30, prefix: str = DEFAULT_PREFIX, read_only: bool = False,
                 run: Run | None = None) -> None:
        if not NAME.match(name):
            raise ValueError(f"node name {name!r}: lower-case letters, digits, '-' and '.', at most 63")
        if address and not _is_ipv4(address):
            raise ValueError(f"node address {address!r} is not an IPv4 address")
        urls = endpoints.split(",")
        if not all(ENDPOINT.match(u) for u in urls):
            raise ValueError(f"etcd endpoints {endpoints!r}: comma-separated http(s)://HOST:PORT")
        if not PREFIX.match(prefix):
            raise ValueError(f"etcd prefix {prefix!r}: /word[/word...]")
        if ttl < 2:
            raise ValueError(f"lease TTL {ttl}: at least 2 seconds (etcd's minimum)")
        net = ipaddress.ip_network(cluster_cidr)
        if net.version != 4:
            raise ValueError(f"cluster CIDR {cluster_cidr!r} is not IPv4")
        next(iter(candidates(cluster_cidr, prefix_len, set())))  # ValueError for a length that cannot fit
        self.name, self.address, self.endpoints = name, address, endpoints
        self.cluster_cidr, self.prefix_len, self.ttl, self.prefix = str(net), prefix_len, ttl, prefix
        self.read_only = read_only
        self.run: Run = run or runner.execute
        self.preferred = ""  # the subnet to ask for first (the agent sets it from its config file)
        self.cidr = ""  # the subnet held, once held
        self.lease = 0

    def etcdctl(self, *args: str, stdin: str | None = None) -> str:
        """Run `etcdctl --endpoints=... ARGS -w json`; its stdout. SourceError with its stderr on failure."""
        argv = ["etcdctl", f"--endpoints={self.endpoints}", "--dial-timeout=2s", "--command-timeout=3s",
                *args, "-w", "json"]
        try:
            result = self.run(argv, stdin)
        except Exception as err:  # noqa: BLE001 - etcdctl not installed (CNIError) or cannot run
            raise SourceError(f"etcdctl: {err}") from err
        if result.rc != 0:  # etcdctl logs JSON warnings first; its own message is the last line
            last = ([line for line in result.stderr.splitlines() if line.strip()] or [f"exit {result.rc}"])[-1]
            raise SourceError(f"etcdctl {' '.join(args[:2])} failed: {last.strip()[:300]}")
        return result.stdout

    def records(self) -> list[Lease]:
        """Every subnet record in etcd now."""
        return parse_records(self.prefix, self.etcdctl("get", f"{self.prefix}/subnets/", "--prefix"))

    def nodes(self) -> list[NodeInfo]:
        """Renew (or take) this node's subnet, then every node holding one. Raises SourceError."""
        records = self.records()
        if not self.read_only:
            records = self.hold(records)
        return nodes_of(records)

    def keep_alive(self, lease: int) -> bool:
        """Renew `lease` once: True if it was alive, False if etcd no longer knows it (expired).
        Raises SourceError when etcd cannot be asked."""
        try:
            out = self.etcdctl("lease", "keep-alive", "--once", f"{lease:x}")
        except SourceError as err:
            if "lease not found" in str(err):
                return False
            raise
        try:
            return int(json.loads(out).get("TTL", 0)) > 0
        except (ValueError, AttributeError):
            return False

    def hold(self, records: list[Lease]) -> list[Lease]:
        """Keep this node's record alive, taking a subnet when it holds none; the records after that."""
        cluster = ipaddress.ip_network(self.cluster_cidr)
        mine: list[Lease] = []
        misfits: list[Lease] = []
        for r in records:
            if r.node == self.name:
                net = ipaddress.ip_network(r.cidr)
                fits = net.version == 4 and net.prefixlen == self.prefix_len and net.subnet_of(cluster)  # type: ignore[arg-type]
                (mine if fits else misfits).append(r)
        for r in misfits:  # taken under another --cluster-cidr or --pod-prefix-len: given back
            if r.lease:
                try:
                    self.etcdctl("lease", "revoke", f"{r.lease:x}")
                except SourceError as err:
                    if "lease not found" not in str(err):
                        raise
        if misfits:
            records = self.records()
        if mine and mine[0].lease and self.keep_alive(mine[0].lease):
            rec = mine[0]
            self.cidr, self.lease = rec.cidr, rec.lease
            if self.address and rec.address != self.address:  # the node's address changed: say so
                self.etcdctl("put", subnet_key(self.prefix, rec.cidr), record_value(self.name, self.address),
                             f"--lease={rec.lease:x}")
                return self.records()
            return records
        lease = int(json.loads(self.etcdctl("lease", "grant", str(self.ttl))).get("ID", 0))
        if not lease:
            raise SourceError("etcdctl lease grant returned no lease ID")
        taken = {r.cidr for r in records if r.node != self.name}
        value = record_value(self.name, self.address)
        for cidr in candidates(self.cluster_cidr, self.prefix_len, taken, self.preferred or self.cidr):
            out = self.etcdctl("txn", stdin=txn_put_if_absent(subnet_key(self.prefix, cidr), value, lease))
            if json.loads(out).get("succeeded"):
                self.cidr, self.lease = cidr, lease
                return self.records()
        raise SourceError(f"no free /{self.prefix_len} subnet left in {self.cluster_cidr}")

    def release(self) -> None:
        """Give the subnet back now (revoke the lease: etcd deletes the key), for --uninstall: the other
        nodes drop their routes on their next reconcile instead of after the TTL."""
        lease = self.lease
        if not lease:
            mine = [r for r in self.records() if r.node == self.name]
            lease = mine[0].lease if mine else 0
        if lease:
            try:
                self.etcdctl("lease", "revoke", f"{lease:x}")
            except SourceError as err:
                if "lease not found" not in str(err):
                    raise
        self.lease, self.cidr = 0, ""

    def close(self) -> None:
        """Nothing stays open between etcdctl calls; the lease stays (a restarted agent keeps its subnet)."""
