package proxy

import (
	"golang.org/x/sys/unix"
)

// dupFD duplicates a namespace descriptor (close-on-exec).
func dupFD(fd int) (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0) }

func closeFD(fd int) { _ = unix.Close(fd) }
