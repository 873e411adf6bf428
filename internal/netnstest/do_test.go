package netnstest

import (
	"net"
	"testing"
)

// TestInNew checks that fn runs in a namespace of its own (lo only) and
// that a failure inside fn fails the test instead of hanging or passing.
func TestInNew(t *testing.T) {
	var ifaces []net.Interface
	InNew(t, func() {
		var err error
		if ifaces, err = net.Interfaces(); err != nil {
			t.Fatal(err)
		}
	})
	if len(ifaces) != 1 || ifaces[0].Name != "lo" {
		t.Errorf("interfaces in a new namespace: %v, want only lo", ifaces)
	}

	// A t.Skip (or t.Fatal) inside fn ends fn's goroutine; InNew must stop the
	// (sub)test too, and not run what follows it.
	var after bool
	ran := t.Run("skip inside", func(t *testing.T) {
		// A skip, not a failure, so that the parent passes: the
		// point is only that InNew returns control as a stopped test.
		InNew(t, func() { t.Skip("stopping inside the namespace") })
		after = true
	})
	if after {
		t.Error("the subtest went on after fn stopped it")
	}
	if !ran {
		t.Error("the subtest failed, want skipped")
	}
}
