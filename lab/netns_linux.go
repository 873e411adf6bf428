package lab

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// InNetns runs fn inside the named network namespace and returns its error.
//
// fn runs on a new goroutine locked to its OS thread, and only that thread
// is switched into netns (setns(2) with CLONE_NEWNET); the caller's thread
// and every other goroutine stay where they are. Afterwards the thread is
// switched back to the namespace it started in. If that fails the thread
// is left locked, so the Go runtime ends it with the goroutine instead of
// reusing a thread in the wrong namespace.
//
// A socket belongs to the namespace it was created in, not to the thread
// that uses it: listeners and connections opened inside fn stay in netns
// and can be used afterwards from any goroutine. fn must not start
// goroutines that expect to run in netns (they run on other threads), and
// must not call runtime.UnlockOSThread. A panic in fn is re-raised in the
// caller after the namespace has been restored.
func InNetns(netns string, fn func() error) error {
	target, err := os.Open(NetnsPath(netns))
	if err != nil {
		return fmt.Errorf("open network namespace %q: %w", netns, err)
	}
	defer target.Close()
	return InNetnsFD(int(target.Fd()), netns, fn)
}

// InNetnsFD is InNetns for a namespace given by an open file descriptor
// (a /proc/PID/ns/net or /run/netns file, or a vishvananda/netns handle);
// name is only for error messages. The caller keeps fd open until it
// returns.
func InNetnsFD(fd int, name string, fn func() error) error {
	type result struct {
		err      error
		panicked bool
		panic    any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("open current network namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("enter network namespace %q: %w", name, err)}
			return
		}
		var r result
		func() {
			defer func() {
				if v := recover(); v != nil {
					r.panicked, r.panic = true, v
				}
			}()
			r.err = fn()
		}()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Stay locked: the runtime ends this thread with the goroutine.
			r.err = fmt.Errorf("restore network namespace after %q: %w (fn returned %v)", name, err, r.err)
			done <- r
			return
		}
		runtime.UnlockOSThread()
		done <- r
	}()
	r := <-done
	if r.panicked {
		panic(r.panic)
	}
	return r.err
}
