// Package vmcheck tells tests whether they run inside `make vmtest`'s VM
// (Debian's stock kernel under qemu, see docs/vmtest.md) and checks the
// kernel features kernel-dependent tests need, so that such a test skips
// on a development kernel that lacks them and fails, rather than skips,
// in the VM that exists to provide them.
//
// Its own tests prove the VM's module set: tls.ko loads (the "tls" TCP
// ULP) and the kernel's kTLS encrypts and decrypts with every cipher the
// fast path uses.
package vmcheck

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// EnvVar is set to "1" by the VM's /init for every test binary it runs.
const EnvVar = "FIBMESH_VMTEST"

// InVM reports whether the test binary runs inside make vmtest's VM.
func InVM() bool { return os.Getenv(EnvVar) == "1" }

// ULPs returns the TCP upper layer protocols the running kernel offers
// (/proc/sys/net/ipv4/tcp_available_ulp). A ULP built as a module appears
// only once the module is loaded; setting TCP_ULP loads it on demand.
func ULPs() ([]string, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_ulp")
	if err != nil {
		return nil, fmt.Errorf("tcp_available_ulp: %w", err)
	}
	return strings.Fields(string(b)), nil
}

// NeedULP makes t depend on the TCP ULP name (for kTLS: "tls"), loading
// its module if the kernel has one. Without it the test skips, saying to
// run make vmtest, except inside the VM, where a missing ULP fails the
// test: the VM is there to provide it.
func NeedULP(t testing.TB, name string) {
	t.Helper()
	ulps, err := ULPs()
	if err == nil && !slices.Contains(ulps, name) {
		// A ULP module (tls.ko) that is not loaded yet is loaded by the
		// first TCP_ULP setsockopt naming it (for CAP_NET_ADMIN).
		loadULP(name)
		ulps, err = ULPs()
	}
	if err == nil && slices.Contains(ulps, name) {
		return
	}
	msg := fmt.Sprintf("kernel offers no %q TCP ULP (tcp_available_ulp %q, err %v)", name, ulps, err)
	if InVM() {
		t.Fatalf("%s inside the vmtest VM: the initramfs lacks the module", msg)
	}
	t.Skipf("%s: run make vmtest", msg)
}
