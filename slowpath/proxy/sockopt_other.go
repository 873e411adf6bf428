//go:build !linux

package proxy

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
)

var errNotLinux = errors.New("proxy: needs Linux (network namespaces, SO_MARK, SO_ORIGINAL_DST)")

func originalDst(*net.TCPConn, Pod, int) (netip.AddrPort, error) {
	return netip.AddrPort{}, errNotLinux
}

func markControl(_, _ string, _ syscall.RawConn) error { return errNotLinux }

func dupFD(int) (int, error) { return -1, errNotLinux }

func sameFile(a, b int) bool { return false }
