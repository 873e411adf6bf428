package dns

import (
	"net"
	"net/netip"

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
			return v6RW{p}
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

type v6RW struct{ p *ipv6.PacketConn }

func (r v6RW) read(b []byte) (int, net.Addr, netip.Addr, error) {
	n, cm, from, err := r.p.ReadFrom(b)
	var dst netip.Addr
	if cm != nil {
		dst, _ = netip.AddrFromSlice(cm.Dst)
	}
	return n, from, dst, err
}

func (r v6RW) write(b []byte, to net.Addr, dst netip.Addr) error {
	var cm *ipv6.ControlMessage
	if dst.IsValid() {
		// IPv4 as IPv4-mapped: the kernel's IPv4 path takes an
		// IPV6_PKTINFO source in that form on a dual-stack socket.
		a := dst.As16()
		cm = &ipv6.ControlMessage{Src: a[:]}
	}
	_, err := r.p.WriteTo(b, cm, to)
	return err
}
