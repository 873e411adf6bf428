//go:build !linux

package netns

import (
	"fmt"
	"os"
	"runtime"
)

// Do runs fn inside a network namespace. Network namespaces exist only on
// Linux: elsewhere it returns an error and never calls fn.
func Do(fd int, name string, fn func() error) error {
	return fmt.Errorf("network namespace %s: not supported on %s", name, runtime.GOOS)
}

// DoPath is Do for a namespace file: Linux only.
func DoPath(path string, fn func() error) error {
	return fmt.Errorf("network namespace %s: not supported on %s", path, runtime.GOOS)
}

// New creates a network namespace: Linux only.
func New() (*os.File, error) {
	return nil, fmt.Errorf("network namespace: not supported on %s", runtime.GOOS)
}

// Same reports whether two descriptors are the same namespace: Linux only.
func Same(a, b int) bool { return false }

// Dup duplicates a namespace descriptor: Linux only.
func Dup(f *os.File, name string) (*os.File, error) {
	return nil, fmt.Errorf("network namespace: not supported on %s", runtime.GOOS)
}
