#!/usr/bin/env bash
# Fails if committed generated files differ from a fresh `go generate`:
# the bpf2go objects (xdp/, needs clang and libbpf-dev) and the FDS
# protobuf Go (api/, needs protoc). Each check is skipped, with a note,
# where its tool is missing, so a machine without them still builds and
# tests the committed files.
set -euo pipefail
status=0
check() {
	local what=$1 dir=$2
	go generate "./$dir/..."
	if ! git diff --quiet -- "$dir/"; then
		echo "check-generate: committed $what differ from a fresh generate:" >&2
		git diff --stat -- "$dir/" >&2
		echo "run 'make generate' and commit the result" >&2
		status=1
	else
		echo "check-generate: $what match their sources"
	fi
}
if command -v clang >/dev/null && [ -f /usr/include/bpf/bpf_helpers.h ]; then
	check "BPF objects" xdp
else
	echo "check-generate: clang or libbpf-dev missing: not checking BPF objects (make deps-bpf to enable)"
fi
if command -v protoc >/dev/null; then
	check "protobuf Go files" api
else
	echo "check-generate: protoc missing: not checking api/ (make deps-proto to enable)"
fi
exit $status
