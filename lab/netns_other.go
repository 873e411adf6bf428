//go:build !linux

package lab

import (
	"fmt"
	"runtime"
)

// InNetns runs fn inside the named network namespace. Network namespaces
// exist only on Linux: elsewhere it returns an error and never calls fn.
func InNetns(netns string, fn func() error) error {
	return fmt.Errorf("network namespace %q: not supported on %s", netns, runtime.GOOS)
}
