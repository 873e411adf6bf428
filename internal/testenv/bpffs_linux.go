package testenv

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// BPFFS is where the tests, like the agent, pin BPF maps and links.
const BPFFS = "/sys/fs/bpf"

// NeedBPFFS skips the test unless it runs as root, and mounts bpffs at
// BPFFS unless it is there already (as hack/bpffs.sh does). The mount
// stays: agents and tools on this host expect it. A mount that fails
// fails the test.
func NeedBPFFS(t testing.TB) {
	t.Helper()
	NeedRoot(t)
	var st unix.Statfs_t
	if err := unix.Statfs(BPFFS, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return
	}
	if err := os.MkdirAll(BPFFS, 0o700); err != nil {
		t.Fatalf("create %s: %v", BPFFS, err)
	}
	if err := unix.Mount("bpf", BPFFS, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount -t bpf bpf %s: %v (hack/bpffs.sh)", BPFFS, err)
	}
}
