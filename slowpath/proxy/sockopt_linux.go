package proxy

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/slowpath"
)

// soOriginalDst is SO_ORIGINAL_DST (linux/netfilter_ipv4.h), and
// IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h) has the same
// number at SOL_IPV6.
const soOriginalDst = 80

// originalDst reads where a redirected (nftables redirect/DNAT)
// connection was going from conntrack.
func originalDst(c *net.TCPConn, _ Pod, _ int) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	local := addrPortOf(c.LocalAddr())
	var out netip.AddrPort
	var serr error
	err = rc.Control(func(fd uintptr) {
		if local.Addr().Is4() {
			var sa unix.RawSockaddrInet4
			l := uint32(unsafe.Sizeof(sa))
			_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_IP, soOriginalDst, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)), 0)
			if e != 0 {
				serr = fmt.Errorf("getsockopt SO_ORIGINAL_DST: %w", e)
				return
			}
			port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
			out = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port)
			return
		}
		var sa unix.RawSockaddrInet6
		l := uint32(unsafe.Sizeof(sa))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_IPV6, soOriginalDst, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)), 0)
		if e != 0 {
			serr = fmt.Errorf("getsockopt IP6T_SO_ORIGINAL_DST: %w", e)
			return
		}
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		out = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	return out, serr
}

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
