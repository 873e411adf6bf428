package dns

import (
	"net"
	"net/netip"
)

// packetRW reads queries and writes answers on a UDP socket, answering
// from the address each query arrived at where the platform allows.
type packetRW interface {
	// read returns a datagram, its source and, when known, the address
	// it was sent to (invalid otherwise).
	read(b []byte) (n int, from net.Addr, dst netip.Addr, err error)
	// write sends b to to, from dst when it is valid.
	write(b []byte, to net.Addr, dst netip.Addr) error
}

// plainRW is a packetRW for any net.PacketConn: the kernel picks the
// source address.
type plainRW struct{ pc net.PacketConn }

func (p plainRW) read(b []byte) (int, net.Addr, netip.Addr, error) {
	n, from, err := p.pc.ReadFrom(b)
	return n, from, netip.Addr{}, err
}

func (p plainRW) write(b []byte, to net.Addr, _ netip.Addr) error {
	_, err := p.pc.WriteTo(b, to)
	return err
}
