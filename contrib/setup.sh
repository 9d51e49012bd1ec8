#!/usr/bin/env bash
# Set up a machine for cniplug: system tools (iproute2, iptables, nftables for the nft backends, the
# reference CNI plugins to compare against; jq for the bash plugin in docs/examples; binutils for
# PyInstaller, which builds the self-contained runtime; etcd-server and etcd-client for the node agent's
# etcd source; podman, containerd, runc and a static busybox for the end-to-end tests with real runtimes
# in tests/e2e/test_runtimes.py) and a virtualenv in .venv with cniplug and its test tools. Idempotent;
# needs root for apt.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need=()
for pkg in iproute2 iptables nftables containernetworking-plugins iputils-ping procps util-linux jq binutils etcd-server \
    etcd-client podman containerd runc busybox-static; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi
# The distribution's python3 when it is recent enough: Debian builds it with PGO/LTO and links it
# statically, so every plugin call starts ~3 ms sooner and runs our code faster than on a
# --enable-shared build such as pyenv's (measured: issue #7 in README "Design decisions").
PY=python3
if /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  PY=/usr/bin/python3
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv 2>/dev/null || {
    rm -rf .venv; apt-get update -q; apt-get install -y -q python3-venv; "$PY" -m venv .venv; }
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,e2e]'
echo "cniplug set up: .venv/bin/cniplug"
bash contrib/build-cnitool.sh  # libcni reference runtime for tests/e2e (cached in .cache/cnitool)
bash contrib/fetch-cri-proto.sh  # the CRI gRPC protocol, to drive containerd from tests/e2e (.cache/cri)
