package testenv

import (
	"os"
	"path/filepath"
	"strings"
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

func TestPrebuiltCommands(t *testing.T) {
	pre := t.TempDir()
	if err := os.WriteFile(filepath.Join(pre, "fibctl"), []byte("#!/bin/sh\necho prebuilt\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pre, "notes"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(BinEnv, pre)
	if PrebuiltDir() != pre {
		t.Fatalf("PrebuiltDir() = %q, want %q", PrebuiltDir(), pre)
	}
	dir := t.TempDir()
	if err := BuildCommands(dir, "cmd/fibctl"); err != nil {
		t.Fatalf("BuildCommands with %s set: %v", BinEnv, err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "fibctl")); err != nil || target != filepath.Join(pre, "fibctl") {
		t.Errorf("%s/fibctl links to %q (%v), want the prebuilt one", dir, target, err)
	}
	for _, tc := range []struct{ cmd, want string }{
		{"cmd/fibmesh-agent", "lacks fibmesh-agent"},
		{"cmd/notes", "not an executable"},
	} {
		if err := BuildCommands(t.TempDir(), tc.cmd); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("BuildCommands(%s) = %v, want an error saying %q", tc.cmd, err, tc.want)
		}
	}
}
