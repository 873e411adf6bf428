package file_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"

	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/controller/store"
	"github.com/fibmesh/fibmesh/controller/store/file"
)

// timeout bounds every wait for an Update; generous for -race on a loaded
// machine. No test sleeps: they all wait on the Updates channel, for the
// state they expect (Updates are coalesced, so a test may not see every
// intermediate state, only the latest).
const timeout = 20 * time.Second

// opts make the tests fast; the behaviour does not depend on the values.
var opts = file.Options{Debounce: 20 * time.Millisecond, Retry: 50 * time.Millisecond}

func service(name string, port int) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: %s
  namespace: shop
spec:
  ports:
    - name: http
      port: %d
`, name, port)
}

// broken has a field Service does not have.
const broken = `apiVersion: v1
kind: Service
metadata:
  name: broken
  namespace: shop
spec:
  portz: []
`

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replace swaps path's content in one step, staging it outside the tree,
// so that no intermediate state (an empty file) can be loaded.
func replace(t *testing.T, staging, path, data string) {
	t.Helper()
	tmp := filepath.Join(staging, filepath.Base(path))
	write(t, tmp, data)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func rename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, path string) {
	t.Helper()
	if err := os.RemoveAll(path); err != nil {
		t.Fatal(err)
	}
}

// start runs a Store on dir until the test ends, checks that Run then
// returns nil and that no goroutine is left behind.
func start(t *testing.T, dir string) *file.Store {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // runs last
	s := file.New(dir, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(timeout):
			t.Errorf("Run did not return %v after its context was cancelled", timeout)
		}
	})
	return s
}

// state is what a test checks of an Update: each Service's port, and
// the file it came from relative to the tree.
type state map[string]string

func stateOf(t *testing.T, dir string, s *config.Snapshot) state {
	t.Helper()
	st := state{}
	if s == nil {
		return st
	}
	for _, r := range s.Resources {
		svc, ok := r.Object.(*corev1.Service)
		if !ok {
			t.Fatalf("%s: object is a %T", r.Key(), r.Object)
		}
		rel, err := filepath.Rel(dir, r.Source.File)
		if err != nil {
			t.Fatal(err)
		}
		st[r.Name] = fmt.Sprintf("%d@%s", svc.Spec.Ports[0].Port, filepath.ToSlash(rel))
	}
	return st
}

// waitGood waits for an Update without error whose snapshot is want.
func waitGood(t *testing.T, s *file.Store, dir string, want state) store.Update {
	t.Helper()
	return wait(t, s, fmt.Sprintf("snapshot %v", want), func(u store.Update) bool {
		return u.Err == nil && maps.Equal(stateOf(t, dir, u.Snapshot), want)
	})
}

func wait(t *testing.T, s *file.Store, what string, ok func(store.Update) bool) store.Update {
	t.Helper()
	deadline := time.After(timeout)
	var last []string
	for {
		select {
		case u, open := <-s.Updates():
			if !open {
				t.Fatalf("waiting for %s: Updates closed", what)
			}
			if ok(u) {
				return u
			}
			last = append(last, fmt.Sprintf("{%v err=%v}", u.Snapshot != nil, u.Err))
		case <-deadline:
			t.Fatalf("waiting for %s: not seen in %v; saw %v", what, timeout, last)
		}
	}
}

func TestInitialSnapshot(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), service("a", 80))
	write(t, filepath.Join(dir, "sub", "deeper", "b.yaml"), service("b", 81))
	s := start(t, dir)
	waitGood(t, s, dir, state{"a": "80@a.yaml", "b": "81@sub/deeper/b.yaml"})
}

func TestInitialBroken(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), broken)
	s := start(t, dir)
	u := wait(t, s, "an error", func(u store.Update) bool { return u.Err != nil })
	if u.Snapshot != nil {
		t.Errorf("Snapshot = %v with nothing good loaded yet, want nil", u.Snapshot)
	}
	replace(t, t.TempDir(), filepath.Join(dir, "a.yaml"), service("a", 80))
	waitGood(t, s, dir, state{"a": "80@a.yaml"})
}

func TestMissingDirectory(t *testing.T) {
	s := file.New(filepath.Join(t.TempDir(), "nope"), opts)
	if err := s.Run(context.Background()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Run = %v, want an error wrapping os.ErrNotExist", err)
	}
	if _, open := <-s.Updates(); open {
		t.Error("Updates not closed after Run returned")
	}
}

func TestChanges(t *testing.T) {
	dir, staging := t.TempDir(), t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	write(t, a, service("a", 80))
	s := start(t, dir)
	waitGood(t, s, dir, state{"a": "80@a.yaml"})

	// Each step starts from the state the one before left.
	steps := []struct {
		name   string
		change func()
		want   state
	}{
		{"edit in place", func() { write(t, a, service("a", 81)) },
			state{"a": "81@a.yaml"}},
		{"create", func() { write(t, filepath.Join(dir, "c.yaml"), service("c", 90)) },
			state{"a": "81@a.yaml", "c": "90@c.yaml"}},
		{"delete", func() { remove(t, filepath.Join(dir, "c.yaml")) },
			state{"a": "81@a.yaml"}},
		{"rename", func() { rename(t, a, filepath.Join(dir, "renamed.yaml")) },
			state{"a": "81@renamed.yaml"}},
		{"rename back", func() { rename(t, filepath.Join(dir, "renamed.yaml"), a) },
			state{"a": "81@a.yaml"}},
		{"atomic save: temporary file beside it, renamed over", func() {
			tmp := filepath.Join(dir, ".a.yaml.tmp")
			write(t, tmp, service("a", 82))
			rename(t, tmp, a)
		}, state{"a": "82@a.yaml"}},
		{"vim: rename to backup, write new, remove backup", func() {
			rename(t, a, a+"~")
			write(t, a, service("a", 83))
			remove(t, a+"~")
		}, state{"a": "83@a.yaml"}},
		{"remove and recreate", func() {
			remove(t, a)
			write(t, a, service("a", 84))
		}, state{"a": "84@a.yaml"}},
		{"new subdirectory", func() {
			write(t, filepath.Join(dir, "x", "y", "z", "d.yaml"), service("d", 70))
		}, state{"a": "84@a.yaml", "d": "70@x/y/z/d.yaml"}},
		{"edit in the new subdirectory", func() {
			write(t, filepath.Join(dir, "x", "y", "z", "d.yaml"), service("d", 71))
		}, state{"a": "84@a.yaml", "d": "71@x/y/z/d.yaml"}},
		{"subdirectory renamed", func() {
			rename(t, filepath.Join(dir, "x"), filepath.Join(dir, "w"))
		}, state{"a": "84@a.yaml", "d": "71@w/y/z/d.yaml"}},
		{"edit in the renamed subdirectory", func() {
			write(t, filepath.Join(dir, "w", "y", "z", "d.yaml"), service("d", 72))
		}, state{"a": "84@a.yaml", "d": "72@w/y/z/d.yaml"}},
		{"new subdirectory under the renamed one's old name", func() {
			write(t, filepath.Join(dir, "x", "y", "z", "f.yaml"), service("f", 50))
		}, state{"a": "84@a.yaml", "d": "72@w/y/z/d.yaml", "f": "50@x/y/z/f.yaml"}},
		{"edit in it", func() {
			write(t, filepath.Join(dir, "x", "y", "z", "f.yaml"), service("f", 51))
		}, state{"a": "84@a.yaml", "d": "72@w/y/z/d.yaml", "f": "51@x/y/z/f.yaml"}},
		{"subdirectory removed", func() { remove(t, filepath.Join(dir, "x")) },
			state{"a": "84@a.yaml", "d": "72@w/y/z/d.yaml"}},
		{"subdirectory moved in from outside", func() {
			write(t, filepath.Join(staging, "m", "e.yaml"), service("e", 60))
			rename(t, filepath.Join(staging, "m"), filepath.Join(dir, "m"))
		}, state{"a": "84@a.yaml", "d": "72@w/y/z/d.yaml", "e": "60@m/e.yaml"}},
		{"edit in the moved-in subdirectory", func() {
			write(t, filepath.Join(dir, "m", "e.yaml"), service("e", 61))
		}, state{"a": "84@a.yaml", "d": "72@w/y/z/d.yaml", "e": "61@m/e.yaml"}},
		{"subdirectory removed", func() {
			remove(t, filepath.Join(dir, "w"))
			remove(t, filepath.Join(dir, "m"))
		}, state{"a": "84@a.yaml"}},
	}
	for _, step := range steps {
		step.change()
		waitGood(t, s, dir, step.want)
		if t.Failed() {
			t.Fatalf("after %q", step.name)
		}
	}
}

func TestBrokenEditKeepsLastGood(t *testing.T) {
	dir, staging := t.TempDir(), t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	write(t, a, service("a", 80))
	s := start(t, dir)
	good := waitGood(t, s, dir, state{"a": "80@a.yaml"})

	replace(t, staging, a, service("a", 81)+"---\n"+broken)
	u := wait(t, s, "an error", func(u store.Update) bool { return u.Err != nil })
	if u.Snapshot != good.Snapshot {
		t.Errorf("Snapshot with the error = %v, want the last good one %v", stateOf(t, dir, u.Snapshot), stateOf(t, dir, good.Snapshot))
	}
	var de *config.DecodeError
	if !errors.As(u.Err, &de) {
		t.Fatalf("Err = %v (%T), want a *config.DecodeError in it", u.Err, u.Err)
	}
	if de.Source.File != a || de.Source.Doc != 2 || de.Kind != "Service" || de.Name != "broken" {
		t.Errorf("DecodeError = %+v, want file %s document 2, Service broken", de, a)
	}

	// A second broken file: the error names both, still the same good
	// snapshot.
	replace(t, staging, filepath.Join(dir, "b.yaml"), broken)
	u = wait(t, s, "two errors", func(u store.Update) bool {
		return u.Err != nil && strings.Contains(u.Err.Error(), "b.yaml")
	})
	if u.Snapshot != good.Snapshot {
		t.Errorf("Snapshot with the errors = %v, want the last good one", stateOf(t, dir, u.Snapshot))
	}

	remove(t, filepath.Join(dir, "b.yaml"))
	replace(t, staging, a, service("a", 82))
	waitGood(t, s, dir, state{"a": "82@a.yaml"})
}

func TestDirectoryRemoved(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "config")
	write(t, filepath.Join(dir, "sub", "a.yaml"), service("a", 80))
	s := start(t, dir)
	good := waitGood(t, s, dir, state{"a": "80@sub/a.yaml"})

	remove(t, dir)
	u := wait(t, s, "an error", func(u store.Update) bool { return u.Err != nil })
	if !errors.Is(u.Err, os.ErrNotExist) {
		t.Errorf("Err = %v, want one wrapping os.ErrNotExist", u.Err)
	}
	if u.Snapshot != good.Snapshot {
		t.Errorf("Snapshot = %v, want the last good one", stateOf(t, dir, u.Snapshot))
	}

	// It comes back: the store finds it again.
	write(t, filepath.Join(dir, "b.yaml"), service("b", 81))
	waitGood(t, s, dir, state{"b": "81@b.yaml"})
	// And watches it again.
	write(t, filepath.Join(dir, "b.yaml"), service("b", 82))
	waitGood(t, s, dir, state{"b": "82@b.yaml"})
}

func TestDirectoryReplaced(t *testing.T) {
	// Swapping the whole directory for a new one (mv new config), the
	// way some deploy tools publish config.
	parent := t.TempDir()
	dir := filepath.Join(parent, "config")
	write(t, filepath.Join(dir, "a.yaml"), service("a", 80))
	s := start(t, dir)
	waitGood(t, s, dir, state{"a": "80@a.yaml"})

	next := filepath.Join(parent, "next")
	write(t, filepath.Join(next, "a.yaml"), service("a", 81))
	rename(t, dir, filepath.Join(parent, "old"))
	rename(t, next, dir)
	waitGood(t, s, dir, state{"a": "81@a.yaml"})
	// The new directory is watched.
	write(t, filepath.Join(dir, "a.yaml"), service("a", 82))
	waitGood(t, s, dir, state{"a": "82@a.yaml"})
}

func TestRootIsSymlink(t *testing.T) {
	real := t.TempDir()
	write(t, filepath.Join(real, "sub", "a.yaml"), service("a", 80))
	link := filepath.Join(t.TempDir(), "config")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	s := start(t, link)
	waitGood(t, s, link, state{"a": "80@sub/a.yaml"})
	write(t, filepath.Join(real, "sub", "a.yaml"), service("a", 81))
	waitGood(t, s, link, state{"a": "81@sub/a.yaml"})
}

func TestRelativeDir(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "config")
	write(t, filepath.Join(dir, "sub", "a.yaml"), service("a", 80))
	t.Chdir(parent)
	s := start(t, "config")
	waitGood(t, s, dir, state{"a": "80@sub/a.yaml"})
	rename(t, filepath.Join(dir, "sub"), filepath.Join(dir, "sub2"))
	waitGood(t, s, dir, state{"a": "80@sub2/a.yaml"})
	write(t, filepath.Join(dir, "sub2", "a.yaml"), service("a", 81))
	waitGood(t, s, dir, state{"a": "81@sub2/a.yaml"})
}
