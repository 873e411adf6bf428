package main

import (
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"testing"

	"github.com/fibmesh/fibmesh/internal/testenv"
)

// TestDownTakesTheStateDirsPrefix: "down --state-dir DIR" removes the lab
// built in DIR, not every lab under the default prefix fm- (a user's
// second lab, or the tests' labs running beside it).
func TestDownTakesTheStateDirsPrefix(t *testing.T) {
	testenv.NeedRoot(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	labs := []struct{ prefix, dir string }{{"fm-ld1-", t.TempDir()}, {"fm-ld2-", t.TempDir()}}
	for _, l := range labs {
		t.Cleanup(func() {
			_ = run([]string{"down", "--prefix", l.prefix, "--state-dir", l.dir}, io.Discard, io.Discard, log)
		})
		if err := run([]string{"up", "--nodes", "1", "--pods", "1", "--prefix", l.prefix, "--state-dir", l.dir}, io.Discard, io.Discard, log); err != nil {
			t.Fatalf("up %s: %v", l.prefix, err)
		}
	}
	netns := func() string {
		out, err := exec.Command("ip", "netns", "list").Output()
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	if err := run([]string{"down", "--state-dir", labs[0].dir}, io.Discard, io.Discard, log); err != nil {
		t.Fatalf("down --state-dir %s: %v", labs[0].dir, err)
	}
	ns := netns()
	if strings.Contains(ns, labs[0].prefix) {
		t.Errorf("down --state-dir left the lab's namespaces:\n%s", ns)
	}
	if !strings.Contains(ns, labs[1].prefix+"node1") {
		t.Errorf("down --state-dir of the %s lab removed the %s lab too:\n%s", labs[0].prefix, labs[1].prefix, ns)
	}
}
