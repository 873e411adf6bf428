package capture

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h).
const ip6tSOOriginalDst = 80

// OriginalDst returns the destination a redirected TCP connection was
// sent to before capture redirected it (SO_ORIGINAL_DST, from conntrack).
// c is a connection accepted on one of the redirect ports, IPv4 or IPv6,
// on an IPv4, IPv6 or dual-stack listener; an IPv4 destination is
// returned as IPv4 (not IPv4-mapped IPv6). For a connection that was not
// redirected it is the connection's own local address; for one conntrack
// does not track (in a namespace without NAT rules), an error (ENOENT).
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok || local == nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: connection has no TCP local address")
	}
	v4 := local.AddrPort().Addr().Unmap().Is4()
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination of %v: %w", c.RemoteAddr(), err)
	}
	var (
		ap   netip.AddrPort
		oerr error
	)
	err = rc.Control(func(fd uintptr) {
		if v4 {
			// SOL_IP works on an IPv6 socket's IPv4-mapped connection
			// too (ipv6_getsockopt hands SOL_IP to the IPv4 code).
			var sa unix.RawSockaddrInet4
			if oerr = getsockopt(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST, unsafe.Pointer(&sa), unsafe.Sizeof(sa)); oerr == nil {
				ap = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), ntohs(sa.Port))
			}
			return
		}
		var sa unix.RawSockaddrInet6
		if oerr = getsockopt(fd, unix.SOL_IPV6, ip6tSOOriginalDst, unsafe.Pointer(&sa), unsafe.Sizeof(sa)); oerr == nil {
			ap = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), ntohs(sa.Port))
		}
	})
	if err == nil {
		err = oerr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination of %v (SO_ORIGINAL_DST): %w", c.RemoteAddr(), err)
	}
	return ap, nil
}

// getsockopt reads a fixed-size option into p (x/sys/unix has no
// getsockopt for sockaddr-shaped values).
func getsockopt(fd uintptr, level, name int, p unsafe.Pointer, size uintptr) error {
	l := uint32(size)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), uintptr(name), uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return e
	}
	if uintptr(l) < size {
		return fmt.Errorf("getsockopt returned %d bytes, want %d", l, size)
	}
	return nil
}

// ntohs converts a port in network byte order, as the kernel stores it in
// a sockaddr, to a number.
func ntohs(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}
