//go:build !linux

package testenv

import (
	"runtime"
	"testing"
)

// BPFFS is where the tests, like the agent, pin BPF maps and links.
const BPFFS = "/sys/fs/bpf"

// NeedBPFFS skips the test: bpffs exists only on Linux.
func NeedBPFFS(t testing.TB) {
	t.Helper()
	t.Skipf("needs bpffs, which %s does not have", runtime.GOOS)
}
