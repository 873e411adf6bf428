// Package labtest brings a lab up for the length of one test (skipping
// the test when not root, through internal/testenv).
package labtest

import (
	"context"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/lab"
)

// upTimeout bounds how long Up may take to build a lab.
const upTimeout = 2 * time.Minute

// Up brings up the lab cfg describes (skipping the test unless it runs as
// root) and registers its Down with t.Cleanup. An empty cfg.StateDir is
// replaced by a fresh t.TempDir, so tests never touch the default state
// directory. Give every package its own cfg.Prefix (for example "fm-ag-")
// so that concurrently running test binaries do not remove each other's
// namespaces. A failure to bring the lab up fails the test at once.
func Up(t testing.TB, cfg lab.Config) *lab.Lab {
	t.Helper()
	testenv.NeedRoot(t)
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), upTimeout)
	defer cancel()
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	return l
}
