package lab

import "github.com/fibmesh/fibmesh/internal/netns"

// InNetns runs fn inside the named network namespace (/run/netns/<name>)
// and returns its error: netns.DoPath, which switches one locked thread of
// a goroutine of its own and leaves the caller's where they are.
//
// A socket belongs to the namespace it was created in, not to the thread
// that uses it: listeners and connections opened inside fn stay in the
// namespace and can be used afterwards from any goroutine. fn must not
// start goroutines that expect to run in it (they run on other threads).
// A panic in fn is re-raised in the caller after the namespace has been
// restored.
func InNetns(name string, fn func() error) error {
	return netns.DoPath(NetnsPath(name), fn)
}
