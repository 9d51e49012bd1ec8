"""`cniplug demo`: the README's main job. One container attached to a bridge network, told end to end.

It shows what a runtime hands the plugin (environment and stdin), the script that really ran (from the
plugin's logFile: the veth name and MACs it made), the result, `cniplug-loopback` bringing `lo` up, the
host side (bridge ports, the container's NAT chain, the IPAM reservation file), a ping to the gateway and
a TCP connection through NAT to a stand-in for the outside (which sees the host's address, not the
container's), the topology (`cniplug show`), then CHECK and DEL, and removes everything it created.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cniplug import i18n, runner
from cniplug.lab import outside as outside_net
from cniplug.lab import show

OUTSIDE = outside_net.DEFAULT  # the default stand-in "internet" (--outside; lab/outside.py)
# Who connected: a one-connection TCP server in the outside namespace prints the peer's address.
SERVER = ("import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); "
          "s.bind((sys.argv[1],8080)); s.listen(1); print('ready',flush=True); s.settimeout(20); "
          "c,a=s.accept(); print(a[0],flush=True); c.close()")
CLIENT = ("import socket,sys; s=socket.create_connection((sys.argv[1],8080),timeout=5); "
          "print(s.getsockname()[0]); s.close()")


def say(key: str, lang: str, **fields: str) -> str:
    """The demo's message `key` (i18n.MESSAGES["demo_" + key]) in `lang`."""
    return i18n.text(f"demo_{key}", lang, **fields)


def heading(text: str) -> None:
    """A section title of the demo's output."""
    print(f"\n== {text}", flush=True)


def main(subnet: str, keep: bool, prefix: str = "cnidemo", lang: str = "en", outside: str = OUTSIDE) -> int:
    """Run the demo; 0 when the ping, the NAT connection and CHECK pass, else 1. Needs root.
    Raises CNIError when `ip` or `ping` cannot be run (runner.which), before anything is created."""
    if os.geteuid() != 0:
        print("cniplug demo: needs root (it creates a network namespace and a bridge)", file=sys.stderr)
        return 1
    tools = {name: runner.which(name) for name in ("ip", "ping", "iptables")}
    # Nothing of this run exists yet, so no route on the host is its own ("/" starts no link name): a link
    # named with the same prefix is an earlier demo's (`--keep`), and its subnet is taken.
    outside_net.check_pair(subnet, outside, mine="/")
    tag = f"{prefix}{os.getpid() % 10000}"  # at most 11 characters: "-out" makes 15
    data_dir = tempfile.mkdtemp(prefix="cniplug-demo-")
    sys.stdout = SafeOutput(sys.stdout)  # a closed pipe (`| head`) must not stop the clean-up
    old = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        return Demo(tag, subnet, data_dir, tools, lang, outside).run(keep)
    except KeyboardInterrupt:
        return 1
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


class SafeOutput:
    """stdout that drops what it cannot write (the reader went away) instead of raising."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self.stream.write(text))
        except (OSError, ValueError):
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass


class Demo:
    """One demo run: names from `tag`, the network in `subnet`, IPAM and the plugin's log under `data_dir`."""

    def __init__(self, tag: str, subnet: str, data_dir: str, tools: dict[str, str], lang: str,
                 outside: str = OUTSIDE) -> None:
        self.tag, self.lang, self.tools, self.data_dir = tag, lang, tools, data_dir
        net = ipaddress.ip_network(outside)
        self.host_cidr = f"{net.network_address + net.num_addresses - 2}/{net.prefixlen}"
        self.peer_cidr = f"{net.network_address + 1}/{net.prefixlen}"
        self.host_ip, self.peer_ip = self.host_cidr.split("/")[0], self.peer_cidr.split("/")[0]
        self.netns, self.outside, self.bridge = tag, f"{tag}-out", f"{tag}br"
        self.uplink, self.wan = f"{tag}up", f"{tag}wan"
        self.log = os.path.join(data_dir, "cniplug-bridge.log")
        self.config: dict[str, Any] = {
            "cniVersion": "1.1.0", "name": tag, "type": "cniplug-bridge", "bridge": self.bridge,
            "isGateway": True, "isDefaultGateway": True, "ipMasq": True, "logFile": self.log,
            "ipam": {"type": "cniplug-host-local", "dataDir": data_dir, "ranges": [[{"subnet": subnet}]]},
        }
        self.env = {"CNI_CONTAINERID": tag, "CNI_NETNS": f"/run/netns/{self.netns}", "CNI_IFNAME": "eth0",
                    "CNI_PATH": "/usr/lib/cni", "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                    "CNIPLUG_LANG": lang}
        self.made: list[list[str]] = []  # how to remove what the demo made itself, in reverse

    def plugin(self, name: str, command: str, config: dict[str, Any], prev: object = None,
               ifname: str = "eth0") -> subprocess.CompletedProcess[bytes]:
        """Exec plugin `name` as a runtime does: `command`, this demo's CNI_* environment, the config on stdin."""
        from cniplug.cli import plugin_argv

        stdin = json.dumps({**config, "prevResult": prev} if prev else config).encode()
        return subprocess.run(plugin_argv(name), input=stdin, capture_output=True,
                              env={**self.env, "CNI_COMMAND": command, "CNI_IFNAME": ifname})

    def sh(self, *argv: str, show_it: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a read-only command and print it with its output, as a person would type it."""
        proc = subprocess.run(list(argv), capture_output=True, text=True)
        if show_it:
            print(f"$ {' '.join(argv)}")
            text = (proc.stdout + proc.stderr).rstrip()
            if text:
                print(text)
        return proc

    def make(self, undo: list[str], *argv: str) -> None:
        """Run a command that creates something of the demo's; `undo` removes it at the end.
        Raises RuntimeError naming the command when it fails."""
        proc = subprocess.run(list(argv), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
        self.made.append(undo)

    def outside_world(self) -> None:
        """The stand-in for the Internet: a namespace at the first address of --outside behind a veth of the host."""
        ip = self.tools["ip"]
        self.make([ip, "netns", "delete", self.outside], ip, "netns", "add", self.outside)
        self.make([ip, "link", "delete", self.uplink], ip, "link", "add", self.uplink, "type", "veth", "peer", "name",
                  self.wan, "netns", self.outside)
        for argv in ([ip, "addr", "add", self.host_cidr, "dev", self.uplink], [ip, "link", "set", self.uplink, "up"],
                     [ip, "-n", self.outside, "addr", "add", self.peer_cidr, "dev", self.wan],
                     [ip, "-n", self.outside, "link", "set", self.wan, "up"]):
            self.make([], *argv)

    def nat_check(self) -> bool:
        """A TCP connection from the container to the outside stand-in: which source address arrives there?"""
        heading(say("nat", self.lang, out=f"{self.peer_ip}:8080"))
        server = subprocess.Popen([self.tools["ip"], "netns", "exec", self.outside, sys.executable, "-c", SERVER,
                                   self.peer_ip],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert server.stdout is not None
            if server.stdout.readline().strip() != "ready":
                return False
            client = subprocess.run([self.tools["ip"], "netns", "exec", self.netns, sys.executable, "-c", CLIENT,
                                     self.peer_ip],
                                    capture_output=True, text=True, timeout=30)
            seen = server.stdout.readline().strip()
            src = client.stdout.strip()
        finally:
            server.kill()
            server.wait()
        if client.returncode != 0:
            print(client.stderr.strip())
            return False
        why = say("masq" if seen == self.host_ip else "nomasq", self.lang)
        print(say("nat_seen", self.lang, src=src, seen=seen, why=why))
        return seen == self.host_ip

    def run(self, keep: bool) -> int:
        """Tell the story; with `keep`, leave everything in place. 0 when ping, NAT and CHECK passed."""
        ip = self.tools["ip"]
        bridge_existed = os.path.exists(f"/sys/class/net/{self.bridge}")
        result: dict[str, Any] | None = None
        ok = False
        try:
            self.make([ip, "netns", "delete", self.netns], ip, "netns", "add", self.netns)
            self.outside_world()
            heading(say("env", self.lang))
            print("\n".join(f"{k}={v}" for k, v in self.env.items() if k.startswith("CNI")))
            heading(say("stdin", self.lang))
            print(json.dumps(self.config, indent=2))
            proc = self.plugin("cniplug-bridge", "ADD", self.config)
            heading(say("ran", self.lang))
            print(ran_script(self.log))
            heading(say("result", self.lang) + f" (exit {proc.returncode})")
            sys.stderr.write(proc.stderr.decode())
            if proc.returncode != 0:
                print(proc.stdout.decode().rstrip())
                return 1
            result = json.loads(proc.stdout)
            print(json.dumps(result, indent=2))
            lo_conf = {"cniVersion": "1.1.0", "name": self.tag, "type": "cniplug-loopback"}
            heading(say("loopback", self.lang))
            lo = self.plugin("cniplug-loopback", "ADD", lo_conf, ifname="lo")
            print(f"exit {lo.returncode} {lo.stdout.decode().strip()}")
            self.sh(ip, "-n", self.netns, "-br", "addr", "show", "lo")
            heading(say("host", self.lang))
            self.sh(ip, "-br", "link", "show", "master", self.bridge)
            from cniplug.plugins.common import chain_name

            self.sh(self.tools["iptables"], "-w", "-t", "nat", "-S", chain_name(self.tag, self.tag))
            for path in sorted(Path(self.data_dir, self.tag).glob("*")):
                if path.name[0].isdigit():
                    print(f"$ cat {path}   (the container id, \\r\\n, the interface: the reference layout)\n"
                          f"{path.read_bytes().decode(errors='replace')!r}")
            gateway = str(result["ips"][0]["gateway"])
            heading(say("ping", self.lang))
            pinged = self.sh(ip, "netns", "exec", self.netns, self.tools["ping"], "-c", "2", "-W", "1", gateway)
            masqueraded = self.nat_check()
            heading(say("topology", self.lang))
            print(show.render_text(show.collect(prefix=self.tag, data_dir=self.data_dir), self.lang).rstrip())
            check = self.plugin("cniplug-bridge", "CHECK", self.config, prev=result)
            heading(say("check", self.lang) + f": exit {check.returncode} {check.stdout.decode().strip()}")
            ok = pinged.returncode == 0 and masqueraded and check.returncode == 0
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)  # the clean-up itself is not interrupted
            if not keep:
                heading(say("del", self.lang))
                proc = self.plugin("cniplug-bridge", "DEL", self.config, prev=result if ok else None)
                print(f"exit {proc.returncode} {proc.stdout.decode().strip()}")
                for undo in reversed(self.made):
                    if undo:
                        subprocess.run(undo, capture_output=True)
                if not bridge_existed:
                    subprocess.run([ip, "link", "delete", self.bridge], capture_output=True)
                    from cniplug.plugins.bridge import lock_path

                    Path(lock_path(self.bridge)).unlink(missing_ok=True)
                wait_gone(self.tag)
                print(say("cleaned_up", self.lang))
            else:
                self.print_removal()
        print("\n" + say("passed" if ok else "failed", self.lang))
        return 0 if ok else 1


    def print_removal(self) -> None:
        """--keep: how to remove by hand what the demo left (the plugin's DEL, then what the demo made)."""
        from cniplug.plugins.bridge import lock_path

        conf = Path(self.data_dir, "net.json")
        conf.write_text(json.dumps(self.config))
        env = " ".join(f"{k}={v}" for k, v in self.env.items() if k.startswith("CNI_"))
        from cniplug.cli import plugin_argv

        lines = [f"CNI_COMMAND=DEL {env} {' '.join(plugin_argv('cniplug-bridge'))} < {conf}"]
        lines += [" ".join(undo) for undo in reversed(self.made) if undo]
        lines += [f"{self.tools['ip']} link delete {self.bridge}", f"rm -rf {self.data_dir} {lock_path(self.bridge)}"]
        print("\n== kept; to remove it all:\n" + "\n".join(lines))


def ran_script(log: str) -> str:
    """The last script the plugin recorded as run: the "script" of the last call record in its logFile
    (JSON Lines, skel.DeferredLog; written at the end of the call)."""
    try:
        lines = Path(log).read_text().splitlines()
    except OSError as err:
        return f"(no log: {err.strerror})"
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == "call" and record.get("script"):
            return str(record["script"]).rstrip()
    return "(the log holds no script)"


def wait_gone(tag: str, timeout: float = 10.0) -> None:
    """The kernel removes a deleted namespace's veths asynchronously: wait until no link of ours is left."""
    deadline = time.monotonic() + timeout
    while any(n.startswith(tag) for n in os.listdir("/sys/class/net")) and time.monotonic() < deadline:
        time.sleep(0.05)
