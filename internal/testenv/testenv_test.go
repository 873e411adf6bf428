package testenv

import (
	"os"
	"testing"
)

// recorder is a testing.TB that records a Skip instead of ending the
// goroutine, so NeedRoot's decision can be checked as data.
type recorder struct {
	testing.TB
	skipped []any
}

func (r *recorder) Helper()          {}
func (r *recorder) Skip(args ...any) { r.skipped = append(r.skipped, args...) }

func TestNeedRoot(t *testing.T) {
	r := &recorder{TB: t}
	NeedRoot(r)
	root := os.Geteuid() == 0
	if IsRoot() != root {
		t.Errorf("IsRoot() = %v, euid %d", IsRoot(), os.Geteuid())
	}
	switch {
	case root && len(r.skipped) != 0:
		t.Errorf("NeedRoot skipped a test running as root: %v", r.skipped)
	case !root && (len(r.skipped) != 1 || r.skipped[0] != RootSkipMessage):
		t.Errorf("NeedRoot as euid %d skipped with %v, want %q", os.Geteuid(), r.skipped, RootSkipMessage)
	}
}
