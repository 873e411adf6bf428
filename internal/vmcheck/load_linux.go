package vmcheck

import (
	"net"

	"golang.org/x/sys/unix"
)

// loadULP sets TCP_ULP name on a connected loopback socket and discards
// it: the kernel loads the ULP's module (request_module "tcp-ulp-NAME")
// if the caller has CAP_NET_ADMIN. Errors are the caller's to see in
// tcp_available_ulp afterwards.
func loadULP(name string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return
	}
	defer c.Close()
	if s, err := ln.Accept(); err == nil {
		defer s.Close()
	}
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_ULP, name)
	})
}
