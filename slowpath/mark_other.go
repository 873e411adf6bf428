//go:build !linux

package slowpath

import (
	"fmt"
	"runtime"
	"syscall"
)

// MarkSocket needs Linux (SO_MARK).
func MarkSocket(_, _ string, _ syscall.RawConn) error {
	return fmt.Errorf("socket marks: not supported on %s", runtime.GOOS)
}
