// Package testenv says whether the machine can run a test, and skips the
// test with a clear reason when it cannot. It is the one copy of these
// checks for every package's tests.
package testenv

import (
	"os"
	"testing"
)

// RootSkipMessage is the reason NeedRoot gives when it skips a test.
const RootSkipMessage = "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)"

// IsRoot reports whether the process runs as root, which the tests that
// load BPF programs, build network namespaces or attach XDP need.
func IsRoot() bool { return os.Geteuid() == 0 }

// NeedRoot skips the test with RootSkipMessage unless it runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if !IsRoot() {
		t.Skip(RootSkipMessage)
	}
}
