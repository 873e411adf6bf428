package netnstest

import (
	"errors"
	"os"
	"testing"

	"github.com/fibmesh/fibmesh/internal/netns"
	"github.com/fibmesh/fibmesh/internal/testenv"
)

// Do runs fn inside the network namespace held open by ns, on a locked OS
// thread of its own (netns.Do): the test's goroutine and every other
// thread stay where they are. t.Fatal or t.Skip inside fn stops the
// test (failed or skipped), as does a namespace that cannot be entered or left.
func Do(t testing.TB, ns *os.File, fn func()) {
	t.Helper()
	err := netns.Do(int(ns.Fd()), ns.Name(), func() error { fn(); return nil })
	switch {
	case errors.Is(err, netns.ErrGoexit): // fn failed or skipped the test
		if t.Skipped() && !t.Failed() {
			t.SkipNow()
		}
		t.FailNow()
	case err != nil:
		t.Fatalf("netnstest: %v", err)
	}
}

// InNew runs fn, as Do does, inside a fresh network namespace (only lo,
// down), which is released when InNew returns, and with it the devices
// fn made there. It skips the test unless it runs as root.
func InNew(t testing.TB, fn func()) {
	t.Helper()
	testenv.NeedRoot(t)
	ns, err := netns.New()
	if err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	defer ns.Close()
	Do(t, ns, fn)
}
