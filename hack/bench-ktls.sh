#!/usr/bin/env bash
# make bench-ktls: a bulk transfer between two Go peers over a veth, carried
# by kTLS + the kernel byte path, by crypto/tls relayed in userspace, and in
# plaintext, interleaved rounds in one run (perf/ktlsbench). Where this
# kernel has kTLS it runs here (where=host); elsewhere in the make vmtest VM
# (where=vm-tcg: software-emulated CPU, compare the ratios, not the
# absolute numbers). Prints the rounds, a table of medians and, last:
#   ktls: ktls_gbps=<n> userspace_gbps=<n> plain_gbps=<n> where=<host|vm-tcg>
# KTLS_BENCH_BYTES (default 64 MiB) and KTLS_BENCH_ROUNDS (default 3) size it.
set -euo pipefail
cd "$(dirname "$0")/.."
args="-ktls-bench -ktls-bench-bytes=${KTLS_BENCH_BYTES:-67108864} -ktls-bench-rounds=${KTLS_BENCH_ROUNDS:-3}"
mkdir -p perf/out
log=perf/out/bench-ktls.log

has_ktls() {
	grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null && return 0
	modprobe -q tls 2>/dev/null && grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null
}

if has_ktls; then
	hack/bpffs.sh
	go test -count=1 -timeout 30m -v -run '^TestBenchKTLS$' ./perf/ktlsbench -args $args | tee "$log"
else
	echo "bench-ktls: this kernel has no kTLS: running in the make vmtest VM (where=vm-tcg)"
	make --no-print-directory vmtest VMTEST_PKGS=./perf/ktlsbench VMTEST_RUN='^TestBenchKTLS$' VMTEST_ARGS="$args" | tee "$log"
fi
grep '^ktls-json: ' "$log" | tail -1 | sed 's/^ktls-json: //' > perf/out/bench-ktls.json
line=$(grep '^ktls: ' "$log" | tail -1 || true)
if [ -z "$line" ]; then
	echo "bench-ktls: no result line in $log" >&2
	exit 1
fi
echo "samples: perf/out/bench-ktls.json, log: $log"
echo "$line"
