"""contrib/kubernetes: the manifests validate against the Kubernetes API schemas (kubernetes-validate,
strict: an unknown field fails), and say what a CNI DaemonSet must say (issue #14 item 5)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cniplug import cli

MANIFEST = Path(__file__).resolve().parents[2] / "contrib" / "kubernetes" / "cniplug.yaml"
UNINSTALL = MANIFEST.with_name("uninstall.yaml")


def docs() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text())}


@pytest.mark.parametrize("version", ["1.29.0", "1.37.0"])
def test_schema(version: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, str(MANIFEST),
                           str(UNINSTALL)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("passed") == 5, proc.stdout


def test_a_wrong_field_fails_validation(tmp_path: Path) -> None:
    """The check can fail: a misspelt field is rejected by the strict schema."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(MANIFEST.read_text().replace("hostNetwork: true", "hostNetwerk: true"))
    proc = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", str(bad)], capture_output=True,
                          text=True)
    assert proc.returncode != 0 and "hostNetwerk" in proc.stdout + proc.stderr


def test_what_a_cni_daemonset_needs() -> None:
    d = docs()
    pod = d["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in pod["tolerations"], "must start on a NotReady (tainted) node"
    paths = {v["hostPath"]["path"] for v in pod["volumes"]}
    assert {"/opt/cni/bin", "/etc/cni/net.d", "/var/lib/cni", "/run/cniplug", "/run/netns",
            "/run/xtables.lock"} <= paths
    node = pod["containers"][0]
    assert node["readinessProbe"]["exec"]["command"]
    netns = next(m for m in node["volumeMounts"] if m["mountPath"] == "/run/netns")
    assert netns["mountPropagation"] == "HostToContainer", "namespaces made after start must be visible"
    rules = d["ClusterRole"]["rules"]
    assert rules == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]
    assert d["ClusterRoleBinding"]["subjects"][0]["name"] == pod["serviceAccountName"]


def commands() -> list[list[str]]:
    found = []
    for path in (MANIFEST, UNINSTALL):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] == "DaemonSet":
                pod = doc["spec"]["template"]["spec"]
                for c in pod.get("initContainers", []) + pod["containers"]:
                    found.append(c["command"])
                    if "readinessProbe" in c:
                        found.append(c["readinessProbe"]["exec"]["command"])
    return [[w.replace("$(NODE_NAME)", "worker-1") for w in c] for c in found if "cniplug" in c[0]]


def test_every_command_is_one_cniplug_accepts() -> None:
    """The manifests' command lines parse with cniplug's own parser (no option drifts away)."""
    seen = set()
    for command in commands():
        args = cli.parser().parse_args(command[1:])
        seen.add(args.cmd)
        if args.cmd == "install" and not args.uninstall:
            assert args.self_contained and args.bin_dir == "/opt/cni/bin" and args.runtime_dir == "/opt/cniplug"
        if args.cmd == "node" and not (args.ready or args.uninstall):
            assert args.source == "kubernetes" and args.name == "worker-1" and args.bin_dir == "/opt/cni/bin"
    assert seen == {"install", "node"}
