//go:build !linux

package proxy

import (
	"errors"
	"syscall"
)

var errNotLinux = errors.New("proxy: needs Linux (network namespaces, SO_MARK)")

func markControl(_, _ string, _ syscall.RawConn) error { return errNotLinux }

func dupFD(int) (int, error) { return -1, errNotLinux }

func sameFile(a, b int) bool { return false }
func closeFD(int)            {}
