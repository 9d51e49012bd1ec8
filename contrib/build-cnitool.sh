#!/usr/bin/env bash
# Build libcni's reference runtime `cnitool` from Debian packages, offline from any Go module proxy:
# the libcni library comes from golang-github-appc-cni-dev (/usr/share/gocode), cnitool's own main
# package from the Debian *source* package golang-github-appc-cni, fetched with a private apt state
# (the system apt config is never touched). The binary is cached at $CNITOOL_CACHE
# (default .cache/cnitool/cnitool in the repository) and reused when it is present and runs.
# Idempotent, quiet on success, loud on failure. Needs root for apt-get install.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache=${CNITOOL_CACHE:-$repo/.cache/cnitool/cnitool}
case $cache in /*) ;; *) cache=$repo/$cache ;; esac

works() {  # cnitool with no arguments prints its usage and exits 1; a broken binary fails to exec
  local out
  [ -x "$1" ] || return 1
  out=$("$1" 2>&1 || true)
  [[ $out == *"cnitool add"* ]]
}
if works "$cache"; then
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/build-cnitool.XXXXXX")
log=$work/log
tmpbin=$(dirname "$cache")/.cnitool.tmp$$
trap 'rc=$?; if [ $rc -ne 0 ]; then echo "build-cnitool.sh: FAILED (exit $rc); log follows:" >&2; \
  cat "$log" >&2 2>/dev/null; fi; rm -rf "$work"; rm -f "$tmpbin"' EXIT
: >"$log"
run() {  # run quietly; the log is printed by the EXIT trap if anything fails
  echo "+ $*" >>"$log"
  "$@" >>"$log" 2>&1
}

export DEBIAN_FRONTEND=noninteractive
need=()
for pkg in golang-go golang-github-appc-cni-dev dpkg-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  run apt-get update -q
  run apt-get install -y -q --no-install-recommends "${need[@]}"
fi

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
  echo "build-cnitool.sh: no apt sources found (looked for $src and /etc/apt/sources.list)" >>"$log"
  exit 1
fi
apt_opts=(
  -o "Dir::Etc::SourceList=$srclist" -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache"
  -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
)
run apt-get "${apt_opts[@]}" -q update
# Fetch the source matching the installed -dev package (falls back to the candidate version).
ver=$(dpkg-query -W -f='${Version}' golang-github-appc-cni-dev 2>/dev/null || true)
(cd "$work/src" && run apt-get "${apt_opts[@]}" -q source "golang-github-appc-cni${ver:+=$ver}") ||
  (cd "$work/src" && run apt-get "${apt_opts[@]}" -q source golang-github-appc-cni)
main=$(find "$work/src" -path '*/cnitool/cnitool.go' -print -quit)
if [ -z "$main" ]; then
  echo "build-cnitool.sh: cnitool/cnitool.go not found in the unpacked source" >>"$log"
  exit 1
fi

mkdir -p "$(dirname "$cache")"
export HOME=$work/home GOCACHE=$work/gocache GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= CGO_ENABLED=0
mkdir -p "$HOME"
(cd "$(dirname "$main")" && run go build -o "$tmpbin" ./cnitool.go)
cp "$main" "$(dirname "$cache")/cnitool.go"  # keep the source next to the binary for reference
mv -f "$tmpbin" "$cache"
works "$cache" || { echo "build-cnitool.sh: built $cache but it does not run" >>"$log"; exit 1; }
