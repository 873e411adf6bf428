#!/usr/bin/env bash
# Fails if the committed bpf2go output differs from a fresh `go generate`.
# Skipped (with a note) where clang or the libbpf headers are missing, so a
# machine without clang can still build and test the committed objects.
set -euo pipefail
if ! command -v clang >/dev/null || [ ! -f /usr/include/bpf/bpf_helpers.h ]; then
	echo "check-generate: clang or libbpf-dev missing: not checking BPF objects (make deps-bpf to enable)"
	exit 0
fi
go generate ./xdp/...
if ! git diff --quiet -- xdp/; then
	echo "check-generate: committed BPF objects differ from a fresh generate:" >&2
	git diff --stat -- xdp/ >&2
	echo "run 'make generate' and commit the result" >&2
	exit 1
fi
echo "check-generate: BPF objects match their sources"
