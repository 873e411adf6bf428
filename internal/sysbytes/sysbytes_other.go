//go:build !linux

package sysbytes

import (
	"errors"
	"runtime"
)

// Counter counts one process's syscall payload bytes; only on Linux.
type Counter struct{}

// New fails: raw tracepoints are Linux's.
func New(pid int) (*Counter, error) {
	return nil, errors.New("sysbytes: counting syscall bytes needs Linux, this is " + runtime.GOOS)
}

// Read fails: there is no counter off Linux.
func (c *Counter) Read() (reads, writes uint64, err error) {
	return 0, 0, errors.New("sysbytes: counting syscall bytes needs Linux")
}

// Close does nothing.
func (c *Counter) Close() error { return nil }
