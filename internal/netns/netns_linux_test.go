package netns

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/internal/testenv"
)

// inode returns the namespace inode of an open handle.
func inode(t *testing.T, f *os.File) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// threadNetns returns the inode of the calling thread's network namespace.
func threadNetns() (uint64, error) {
	l, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		return 0, err
	}
	var ino uint64
	if _, err := fmt.Sscanf(l, "net:[%d]", &ino); err != nil {
		return 0, fmt.Errorf("parse %q: %w", l, err)
	}
	return ino, nil
}

func TestDo(t *testing.T) {
	testenv.NeedRoot(t)
	ns, err := New()
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer ns.Close()
	want := inode(t, ns)

	runtime.LockOSThread() // so that "the caller's thread" is one thread
	defer runtime.UnlockOSThread()
	before, err := threadNetns()
	if err != nil {
		t.Fatal(err)
	}
	if before == want {
		t.Fatalf("New left the caller's thread in the new namespace %d", want)
	}
	var inside uint64
	var ifaces []net.Interface
	if err := Do(int(ns.Fd()), "test", func() (err error) {
		if inside, err = threadNetns(); err != nil {
			return err
		}
		ifaces, err = net.Interfaces()
		return err
	}); err != nil {
		t.Fatalf("Do: %v", err)
	}
	if inside != want {
		t.Errorf("fn ran in namespace %d, want %d", inside, want)
	}
	if len(ifaces) != 1 || ifaces[0].Name != "lo" {
		t.Errorf("a new namespace has interfaces %v, want only lo", ifaces)
	}
	if after, err := threadNetns(); err != nil || after != before {
		t.Errorf("caller's thread in namespace %d after Do (%v), want %d", after, err, before)
	}
}

func TestDoResults(t *testing.T) {
	testenv.NeedRoot(t)
	ns, err := New()
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer ns.Close()
	errBoom := errors.New("boom")
	for _, tc := range []struct {
		name      string
		fd        int
		fn        func() error
		wantErr   error  // errors.Is
		wantMsg   string // substring
		wantPanic any
	}{
		{name: "nil", fd: int(ns.Fd()), fn: func() error { return nil }},
		{name: "error", fd: int(ns.Fd()), fn: func() error { return errBoom }, wantErr: errBoom},
		{name: "goexit", fd: int(ns.Fd()), fn: func() error { runtime.Goexit(); return nil }, wantErr: ErrGoexit},
		{name: "panic", fd: int(ns.Fd()), fn: func() error { panic("kaboom") }, wantPanic: "kaboom"},
		{name: "bad fd", fd: -1, fn: func() error { t.Error("fn ran"); return nil }, wantMsg: "enter network namespace bad fd"},
		{name: "not a namespace", fd: int(os.Stdin.Fd()), fn: func() error { t.Error("fn ran"); return nil }, wantMsg: "enter network namespace not a namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			got := func() (p any) {
				defer func() { p = recover() }()
				err = Do(tc.fd, tc.name, tc.fn)
				return nil
			}()
			if got != tc.wantPanic {
				t.Errorf("panic %v, want %v", got, tc.wantPanic)
			}
			switch {
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Errorf("Do = %v, want %v", err, tc.wantErr)
			case tc.wantMsg != "" && (err == nil || !strings.Contains(err.Error(), tc.wantMsg)):
				t.Errorf("Do = %v, want an error containing %q", err, tc.wantMsg)
			case tc.wantErr == nil && tc.wantMsg == "" && err != nil:
				t.Errorf("Do = %v, want nil", err)
			}
		})
	}
}

func TestDoPath(t *testing.T) {
	testenv.NeedRoot(t)
	missing := filepath.Join(t.TempDir(), "no-such-netns")
	err := DoPath(missing, func() error { t.Error("fn ran"); return nil })
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("DoPath(%s) = %v, want a not-exist error naming it", missing, err)
	}
	ns, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	path := fmt.Sprintf("/proc/self/fd/%d", ns.Fd())
	var inside uint64
	if err := DoPath(path, func() (err error) { inside, err = threadNetns(); return err }); err != nil {
		t.Fatalf("DoPath(%s): %v", path, err)
	}
	if want := inode(t, ns); inside != want {
		t.Errorf("fn ran in namespace %d, want %d", inside, want)
	}
}
