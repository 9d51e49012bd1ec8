"""The helper's metrics in Prometheus text format (issue #14 item 6), with the prometheus_client library.

Each call runs in a forked child of the helper (helper.py); after answering, the child sends one record
(call_record) on a pipe to the helper, which counts it here. Exposed on a localhost HTTP port (`cniplug
helper --metrics 127.0.0.1:9217`, or `cniplug install --helper-metrics ADDR` for auto-started helpers):

  cniplug_helper_calls_total{plugin,verb,outcome}       counter; outcome ok | error | declined
  cniplug_helper_call_duration_seconds{plugin,verb}     histogram of the child's time for the call
  cniplug_ipam_addresses{network,family,state}          gauge; state used | free, per host-local network a
                                                        call has shown this helper (read at scrape time
                                                        from its dataDir: the reservation files)
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HOST_LOCAL = ("cniplug-host-local", "host-local")


def call_record(plugin: str, env: Mapping[str, str], stdin: bytes, rc: int, stdout: str, seconds: float) -> bytes:
    """One finished call as a JSON line for the helper (< 4096 bytes, so one pipe write is atomic).

    outcome: "ok" when the exit status is 0, else "error"; `ipam` is set for a host-local ADD/DEL/GC: the
    network, its dataDir and the capacity of its ranges per address family (from the plugin's own parser).
    """
    record: dict[str, Any] = {"plugin": plugin, "verb": env.get("CNI_COMMAND", "") or "none",
                              "outcome": "ok" if rc == 0 else "error", "seconds": round(seconds, 6)}
    if rc == 0 and record["verb"] in ("ADD", "DEL", "GC"):
        ipam = ipam_capacity(env, stdin)
        if ipam:
            record["ipam"] = ipam
    line = json.dumps(record, separators=(",", ":"))
    if len(line) >= 4000:
        record.pop("ipam", None)
        line = json.dumps(record, separators=(",", ":"))
    return (line + "\n").encode()


def ipam_capacity(env: Mapping[str, str], stdin: bytes) -> dict[str, Any] | None:
    """{"network", "dataDir", "ranges": [[family, first, last], ...], "capacity": {family: n}} of a
    host-local IPAM config on stdin, None for anything else (or a config host-local would refuse)."""
    try:
        config = json.loads(stdin)
        ipam = config.get("ipam") if isinstance(config, dict) else None
        if not isinstance(ipam, dict) or ipam.get("type") not in HOST_LOCAL:
            return None
        from cniplug import skel
        from cniplug.ipam import host_local

        req = skel.parse_request({**env, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "metrics",
                                  "CNI_IFNAME": "eth0"}, stdin)
        cfg = host_local.parse_config(req)
    except Exception:  # only metrics: never disturb the helper
        return None
    ranges: list[list[str]] = []
    capacity: dict[str, int] = {}
    for rs in cfg.sets:
        family = f"ipv{rs.version}"
        capacity[family] = capacity.get(family, 0) + rs.capacity()
        ranges += [[family, str(r.start), str(r.end)] for r in rs.ranges]
    return {"network": cfg.network, "dataDir": cfg.data_dir, "ranges": ranges, "capacity": capacity}


class Metrics:
    """The helper's registry; observe() each record, serve() on a localhost port."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.calls = Counter("cniplug_helper_calls", "Plugin calls the helper took, by outcome",
                             ("plugin", "verb", "outcome"), registry=self.registry)
        self.duration = Histogram("cniplug_helper_call_duration_seconds", "Time a call took in the helper's child",
                                  ("plugin", "verb"), buckets=BUCKETS, registry=self.registry)
        self.networks: dict[str, dict[str, Any]] = {}  # network name -> its latest ipam record
        self.registry.register(IpamCollector(self.networks))

    def observe(self, line: bytes) -> None:
        """Count one call_record line; a malformed one is ignored."""
        try:
            record = json.loads(line)
            plugin, verb, outcome = str(record["plugin"]), str(record["verb"]), str(record["outcome"])
            seconds = float(record["seconds"])
        except (ValueError, KeyError, TypeError):
            return
        self.calls.labels(plugin, verb, outcome).inc()
        self.duration.labels(plugin, verb).observe(seconds)
        ipam = record.get("ipam")
        if isinstance(ipam, dict) and isinstance(ipam.get("network"), str):
            self.networks[ipam["network"]] = ipam

    def declined(self, count: int = 1) -> None:
        self.calls.labels("", "", "declined").inc(count)

    def serve(self, address: str) -> tuple[str, int]:
        """Start the HTTP exporter on `address` ("HOST:PORT", HOST a loopback address; PORT 0 picks one)
        in a thread; (host, port) it listens on. ValueError for a non-loopback or malformed address,
        OSError when the port cannot be bound."""
        from prometheus_client import start_http_server

        host, port = parse_address(address)
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return host, int(server.server_address[1])


def parse_address(address: str) -> tuple[str, int]:
    """"127.0.0.1:9217" / "[::1]:9217" -> (host, port). Only loopback: the metrics name networks and
    containers' counts, and this port has no authentication. ValueError naming the value otherwise."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        if not sep or not ipaddress.ip_address(host).is_loopback or not 0 <= int(port) <= 65535:
            raise ValueError
    except ValueError:
        raise ValueError(f"--metrics {address!r}: expected LOOPBACK-ADDRESS:PORT, e.g. 127.0.0.1:9217") from None
    return host, int(port)


class IpamCollector:
    """cniplug_ipam_addresses, counted at scrape time from each known network's reservation files."""

    def __init__(self, networks: dict[str, dict[str, Any]]) -> None:
        self.networks = networks

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        gauge = GaugeMetricFamily("cniplug_ipam_addresses", "host-local addresses per network, used and free",
                                  labels=("network", "family", "state"))
        for name, ipam in sorted(self.networks.items()):
            used = reserved(str(ipam.get("dataDir", "")), name, ipam.get("ranges", []))
            for family, capacity in sorted(ipam.get("capacity", {}).items()):
                gauge.add_metric((name, family, "used"), used.get(family, 0))
                gauge.add_metric((name, family, "free"), max(0, int(capacity) - used.get(family, 0)))
        yield gauge


def reserved(data_dir: str, network: str, ranges: list[list[str]]) -> dict[str, int]:
    """Reservation files in data_dir/network (host-local's store: one file per address) inside `ranges`,
    counted per family."""
    counts: dict[str, int] = {}
    try:
        names = os.listdir(os.path.join(data_dir, network))
    except OSError:
        return counts
    spans = []
    for family, first, last in ranges:
        try:
            spans.append((family, int(ipaddress.ip_address(first)), int(ipaddress.ip_address(last)),
                          ipaddress.ip_address(first).version))
        except ValueError:
            continue
    for name in names:
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            continue  # lock, last_reserved_ip.N
        for family, lo, hi, version in spans:
            if ip.version == version and lo <= int(ip) <= hi:
                counts[family] = counts.get(family, 0) + 1
                break
    return counts
