// Package netns runs code inside a Linux network namespace without moving
// the caller, or any other goroutine, into it.
//
// Do switches one OS thread, locked to a goroutine of its own, into the
// namespace (setns(2) with CLONE_NEWNET), runs a function there and
// switches the thread back; a thread that cannot be switched back is ended
// with its goroutine instead of being reused in the wrong namespace. New
// creates a namespace the same way, leaving no thread in it. This is the
// one copy of the enter/restore dance for the agent, fibctl, the lab and
// the tests.
package netns

import "errors"

// ErrGoexit is returned by Do when fn ended its goroutine with
// runtime.Goexit instead of returning: a test's t.FailNow, t.Fatal or
// t.Skip called inside fn. The test is already marked as failed or
// skipped; the caller should stop it (t.FailNow) on its own goroutine.
var ErrGoexit = errors.New("the function run in the namespace called runtime.Goexit (t.Fatal, t.FailNow or t.Skip inside it)")
