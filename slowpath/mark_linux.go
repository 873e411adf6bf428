package slowpath

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// MarkSocket sets Mark on a socket before it connects or binds: a
// net.Dialer's (or net.ListenConfig's) Control, for every socket the
// agent opens in a pod's namespace.
func MarkSocket(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, Mark)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set SO_MARK %#x: %w", Mark, serr)
	}
	return nil
}
