#!/usr/bin/env bash
# Set up a machine for cniplug: system tools (iproute2, iptables, the reference CNI plugins to compare
# against) and a virtualenv in .venv with cniplug and its test tools. Idempotent; needs root for apt.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need=()
for pkg in iproute2 iptables containernetworking-plugins iputils-ping procps util-linux; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv 2>/dev/null || { apt-get install -y -q python3-venv && python3 -m venv .venv; }
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
echo "cniplug set up: .venv/bin/cniplug"
bash contrib/build-cnitool.sh  # libcni reference runtime for tests/e2e (cached in .cache/cnitool)
