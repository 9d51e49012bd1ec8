"""A non-editable install (the wheel) carries the templates and runs without the checkout."""

from __future__ import annotations

import glob
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_wheel_has_templates_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w",
                            str(tmp_path / "dist")], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    wheel = glob.glob(str(tmp_path / "dist" / "cniplug-*.whl"))[0]
    target = tmp_path / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), wheel],
                          capture_output=True, text=True, timeout=600)
    assert inst.returncode == 0, inst.stderr
    assert (target / "cniplug" / "templates" / "bridge" / "add.sh.j2").is_file()
    env = {"PYTHONPATH": str(target), "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x",
           "CNI_IFNAME": "lo", "CNI_PATH": "/opt/cni/bin", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    out = subprocess.run([sys.executable, "-m", "cniplug", "plugin", "cniplug-loopback", "--dry-run"],
                         input='{"cniVersion":"1.0.0","name":"n","type":"cniplug-loopback"}', text=True,
                         capture_output=True, cwd=str(tmp_path), env=env, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ip -n x link set lo up" in out.stdout
    where = subprocess.run([sys.executable, "-c", "import cniplug.render as r; print(r.templates_dir())"],
                           capture_output=True, text=True, cwd=str(tmp_path), env=env)
    assert where.stdout.strip() == str(target / "cniplug" / "templates")
