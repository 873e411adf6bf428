package proxy

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/slowpath"
)

// markControl sets slowpath.Mark on a socket before it connects.
func markControl(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, slowpath.Mark)
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set SO_MARK %#x: %w", slowpath.Mark, serr)
	}
	return nil
}

// dupFD duplicates a namespace descriptor (close-on-exec).
func dupFD(fd int) (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0) }

// sameFile reports whether two descriptors are the same namespace.
func sameFile(a, b int) bool {
	var sa, sb unix.Stat_t
	if unix.Fstat(a, &sa) != nil || unix.Fstat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}
func closeFD(fd int) { _ = unix.Close(fd) }
