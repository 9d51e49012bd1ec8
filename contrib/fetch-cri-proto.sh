#!/usr/bin/env bash
# Fetch the Kubernetes CRI protocol definition (k8s.io/cri-api runtime/v1 api.proto) that the installed
# containerd was built against, for tests/e2e/test_runtimes.py, which drives containerd's CRI plugin over
# gRPC from Python. No Debian binary package ships that file (containerd 1.6 is built from a vendored copy),
# so it comes from the Debian *source* package `containerd` (its orig tarball keeps vendor/k8s.io/cri-api),
# fetched with a private apt state (the system apt config is never touched) and cached at $CRI_PROTO
# (default .cache/cri/api.proto in the repository). Idempotent, quiet on success, loud on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache=${CRI_PROTO:-$repo/.cache/cri/api.proto}
case $cache in /*) ;; *) cache=$repo/$cache ;; esac
member=vendor/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto

works() { grep -q '^service RuntimeService' "$1" 2>/dev/null; }
if works "$cache"; then
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/fetch-cri-proto.XXXXXX")
log=$work/log
trap 'rc=$?; if [ $rc -ne 0 ]; then echo "fetch-cri-proto.sh: FAILED (exit $rc); log follows:" >&2; \
  cat "$log" >&2 2>/dev/null; fi; rm -rf "$work"' EXIT
: >"$log"
run() {  # run quietly; the log is printed by the EXIT trap if anything fails
  echo "+ $*" >>"$log"
  "$@" >>"$log" 2>&1
}

# A private deb-src list derived from the machine's deb822 sources (or a one-line sources.list).
src=/etc/apt/sources.list.d/debian.sources
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/src"
if [ -f "$src" ]; then
  sed -E 's/^Types:.*/Types: deb-src/' "$src" >"$work/apt/deb-src.sources"
  srclist=$work/apt/deb-src.sources
elif [ -f /etc/apt/sources.list ]; then
  sed -nE 's/^deb[[:space:]]+/deb-src /p' /etc/apt/sources.list >"$work/apt/deb-src.list"
  srclist=$work/apt/deb-src.list
else
  echo "fetch-cri-proto.sh: no apt sources found (looked for $src and /etc/apt/sources.list)" >>"$log"
  exit 1
fi
apt_opts=(
  -o "Dir::Etc::SourceList=$srclist" -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache"
  -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
)
run apt-get "${apt_opts[@]}" -q update
# The source of the installed containerd (falls back to the candidate version); only the orig tarball is
# read, so dpkg-source is not needed.
ver=$(dpkg-query -W -f='${Version}' containerd 2>/dev/null || true)
(cd "$work/src" && run apt-get "${apt_opts[@]}" -q --download-only source "containerd${ver:+=$ver}") ||
  (cd "$work/src" && run apt-get "${apt_opts[@]}" -q --download-only source containerd)
orig=$(find "$work/src" -maxdepth 1 -name 'containerd_*.orig.tar.*' -print -quit)
if [ -z "$orig" ]; then
  echo "fetch-cri-proto.sh: no containerd orig tarball was downloaded" >>"$log"
  exit 1
fi
path=$(tar -tf "$orig" | grep -m1 -F "/$member" || true)
if [ -z "$path" ]; then
  echo "fetch-cri-proto.sh: $member is not in $(basename "$orig")" >>"$log"
  exit 1
fi
run tar -xf "$orig" -C "$work" "$path"
works "$work/$path" || { echo "fetch-cri-proto.sh: $path has no RuntimeService" >>"$log"; exit 1; }
mkdir -p "$(dirname "$cache")"
cp "$work/$path" "$cache.tmp$$"
mv -f "$cache.tmp$$" "$cache"
