#!/usr/bin/env bash
# Mounts bpffs at /sys/fs/bpf if it is not there (root only; no-op otherwise).
set -euo pipefail
[ "$(id -u)" = 0 ] || exit 0
if ! mountpoint -q /sys/fs/bpf || [ "$(stat -f -c %T /sys/fs/bpf)" != bpf_fs ]; then
	echo "bpffs: mounting bpffs at /sys/fs/bpf"
	mount -t bpf bpf /sys/fs/bpf
fi
