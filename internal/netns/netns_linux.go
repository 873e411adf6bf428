package netns

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn inside the network namespace held open by fd (a /run/netns
// or /proc/PID/ns/net file, or a namespace handle) and returns fn's error.
// name is used only in error messages. The caller keeps fd open until Do
// returns.
//
// fn runs on a new goroutine locked to its OS thread, and only that thread
// is switched into the namespace; the caller's thread and every other
// goroutine stay where they are. Afterwards the thread is switched back to
// the namespace it started in. If that fails the thread is left locked, so
// the Go runtime ends it with the goroutine, and Do returns an error.
//
// A socket belongs to the namespace it was created in, not to the thread
// that uses it: listeners and connections opened inside fn stay in the
// namespace and can be used afterwards from any goroutine. fn must not
// start goroutines that expect to run in the namespace (they run on other
// threads), and must not call runtime.UnlockOSThread. A panic in fn is
// re-raised in the caller after the namespace has been restored; if fn
// calls runtime.Goexit, Do returns ErrGoexit.
func Do(fd int, name string, fn func() error) error {
	type result struct {
		err      error
		panicked bool
		panic    any
		goexit   bool
	}
	done := make(chan result, 1)
	go func() {
		// goexit stays true unless fn returns or panics: deferred calls
		// still run on runtime.Goexit, so the result is always sent.
		r := result{goexit: true}
		defer func() { done <- r }()
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			r = result{err: fmt.Errorf("open current network namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			r = result{err: fmt.Errorf("enter network namespace %s: %w", name, err)}
			return
		}
		defer func() {
			if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
				// Stay locked: the runtime ends this thread with the goroutine.
				r.err = fmt.Errorf("restore network namespace after %s: %w (fn returned %v)", name, err, r.err)
				return
			}
			runtime.UnlockOSThread()
		}()
		defer func() {
			if v := recover(); v != nil {
				r.goexit, r.panicked, r.panic = false, true, v
			}
		}()
		r.err = fn()
		r.goexit = false
	}()
	r := <-done
	switch {
	case r.panicked:
		panic(r.panic)
	case r.goexit && r.err == nil:
		return ErrGoexit
	}
	return r.err
}

// DoPath is Do for the namespace named by the file at path: a
// /run/netns/NAME file (ip netns add) or /proc/PID/ns/net. path names the
// namespace in errors.
func DoPath(path string, fn func() error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open network namespace: %w", err)
	}
	defer f.Close()
	return Do(int(f.Fd()), path, fn)
}

// New creates a new, empty network namespace (only lo, down) and returns
// an open handle to it. No thread is left in it: the thread that creates
// it (unshare(2)) is switched back by Do. The namespace lives as long as
// the handle, or anything else holding it (a device's peer, a socket, a
// bind mount); closing the handle releases it.
func New() (*os.File, error) {
	var ns *os.File
	err := DoPath("/proc/thread-self/ns/net", func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare network namespace: %w", err)
		}
		f, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			return fmt.Errorf("open new network namespace: %w", err)
		}
		ns = f
		return nil
	})
	if err != nil {
		if ns != nil {
			ns.Close()
		}
		return nil, err
	}
	return ns, nil
}

// Same reports whether the descriptors a and b are the same namespace
// (the same nsfs inode).
func Same(a, b int) bool {
	var sa, sb unix.Stat_t
	if unix.Fstat(a, &sa) != nil || unix.Fstat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// Dup duplicates a namespace descriptor (close-on-exec) into a file of
// the caller's own, named name: one another goroutine may close the
// original meanwhile without touching it.
func Dup(f *os.File, name string) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicate %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}
