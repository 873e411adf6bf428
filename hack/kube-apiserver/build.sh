#!/usr/bin/env bash
# Builds the real kube-apiserver from the k8s.io/kubernetes module (through
# the Go module proxy, no other download) for the tests that run against a
# real API server (internal/kubetest), and installs it at $1 (default
# bin/kube-apiserver).
#
# The binary is built once per kubernetes version and tool module content
# (go.mod, go.sum, this script) and kept in a cache outside the checkout,
# $FIBMESH_CACHE (default: the directory next to $(go env GOCACHE), i.e.
# ~/.cache/fibmesh), so that a fresh clone on the same machine gets it by a
# copy. Measured on a 2-core machine shared with other builds: cold (go mod
# download and every package compiled) 18 min; with Go's build cache warm
# (only the stamped link) 7.5 s; from this cache 0.1 s.
#
# The version is stamped into k8s.io/component-base/version (and
# client-go's copy), as Kubernetes' own build does: an unstamped binary
# reports v0.0.0-master, and kubectl warns about the version skew.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-bin/kube-apiserver}
go=${GO:-go}

version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 } $1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2 }' "$here/go.mod" | head -n1)
if [[ ! $version =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]]; then
	echo "kube-apiserver: cannot read the k8s.io/kubernetes version from $here/go.mod (got '$version')" >&2
	exit 1
fi
major=${BASH_REMATCH[1]}
minor=${BASH_REMATCH[2]}

key=$(cat "$here/go.mod" "$here/go.sum" "$0" | sha256sum | cut -c1-12)
cache=${FIBMESH_CACHE:-$(dirname "$($go env GOCACHE)")/fibmesh}
bin="$cache/kube-apiserver-$version-$key"

mkdir -p "$cache" "$(dirname "$out")"
# One build at a time per cache (two make runs at once wait for each other).
exec 9>"$cache/kube-apiserver.lock"
flock 9

if [[ ! -x $bin ]]; then
	echo "kube-apiserver: building $version from k8s.io/kubernetes (once per version; cached in $cache)" >&2
	start=$(date +%s)
	pkg=k8s.io/component-base/version
	cgo=k8s.io/client-go/pkg/version
	ldflags="-s -w"
	for p in $pkg $cgo; do
		ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=$major -X $p.gitMinor=$minor"
		ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
	done
	tmp="$bin.tmp.$$"
	trap 'rm -f "$tmp"' EXIT
	(cd "$here" && GOWORK=off GOFLAGS=-mod=readonly $go build -ldflags "$ldflags" -o "$tmp" k8s.io/kubernetes/cmd/kube-apiserver)
	got=$("$tmp" --version)
	if [[ $got != "Kubernetes $version" ]]; then
		echo "kube-apiserver: built binary says '$got', want 'Kubernetes $version' (version stamping failed)" >&2
		exit 1
	fi
	mv "$tmp" "$bin"
	# Older builds (another version or tool module) are not needed again.
	find "$cache" -maxdepth 1 -name 'kube-apiserver-v*' ! -name "$(basename "$bin")" -delete
	echo "kube-apiserver: built $version in $(($(date +%s) - start)) s: $bin" >&2
fi

# A hard link when the cache is on the same file system, else a copy;
# replaced atomically so that a running test never sees half a binary.
[[ $out -ef $bin ]] && exit 0
rm -f "$out.tmp"
ln "$bin" "$out.tmp" 2>/dev/null || cp "$bin" "$out.tmp"
mv -f "$out.tmp" "$out"
