package dns

import (
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// newPacketRW returns a packetRW that answers from the query's
// destination address (IP_PKTINFO / IPV6_PKTINFO, the latter on a
// dual-stack socket for IPv4 too, as IPv4-mapped addresses), or a plain
// one when pc is not a UDP socket or the options cannot be set.
func newPacketRW(pc net.PacketConn) packetRW {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return plainRW{pc}
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return plainRW{pc}
	}
	domain := -1
	rc.Control(func(fd uintptr) {
		if d, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN); err == nil {
			domain = d
		}
	})
	switch domain {
	case unix.AF_INET:
		p := ipv4.NewPacketConn(uc)
		if p.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true) == nil {
			return v4RW{p}
		}
	case unix.AF_INET6:
		p := ipv6.NewPacketConn(uc)
		if p.SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true) == nil {
			return v6RW{p, uc}
		}
	}
	return plainRW{pc}
}

type v4RW struct{ p *ipv4.PacketConn }

func (r v4RW) read(b []byte) (int, net.Addr, netip.Addr, error) {
	n, cm, from, err := r.p.ReadFrom(b)
	var dst netip.Addr
	if cm != nil {
		dst, _ = netip.AddrFromSlice(cm.Dst)
	}
	return n, from, dst.Unmap(), err
}

func (r v4RW) write(b []byte, to net.Addr, dst netip.Addr) error {
	var cm *ipv4.ControlMessage
	if dst.IsValid() {
		cm = &ipv4.ControlMessage{Src: dst.AsSlice()}
	}
	_, err := r.p.WriteTo(b, cm, to)
	return err
}

type v6RW struct {
	p  *ipv6.PacketConn
	uc *net.UDPConn
}

func (r v6RW) read(b []byte) (int, net.Addr, netip.Addr, error) {
	n, cm, from, err := r.p.ReadFrom(b)
	var dst netip.Addr
	if cm != nil {
		dst, _ = netip.AddrFromSlice(cm.Dst)
	}
	return n, from, dst, err
}

func (r v6RW) write(b []byte, to net.Addr, dst netip.Addr) error {
	ua, ok := to.(*net.UDPAddr)
	if !dst.IsValid() || !ok {
		_, err := r.p.WriteTo(b, nil, to)
		return err
	}
	// IPV6_PKTINFO by hand: x/net/ipv6 leaves out an IPv4-mapped source,
	// which the kernel's IPv4 path takes from a dual-stack socket (its
	// answer to a query that arrived over IPv4).
	oob := make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
	pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
	pi.Addr = dst.As16()
	_, _, err := r.uc.WriteMsgUDP(b, oob, ua)
	return err
}
