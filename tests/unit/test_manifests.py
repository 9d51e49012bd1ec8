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


def docs() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text())}


@pytest.mark.parametrize("version", ["1.29.0", "1.37.0"])
def test_schema(version: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, str(MANIFEST)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("passed") == 4, proc.stdout


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


def test_install_command_is_one_cniplug_accepts() -> None:
    install = docs()["DaemonSet"]["spec"]["template"]["spec"]["initContainers"][0]["command"]
    args = cli.parser().parse_args(install[1:])
    assert args.cmd == "install" and args.self_contained and args.bin_dir == "/opt/cni/bin"
