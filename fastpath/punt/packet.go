package punt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/internal/checksum"
)

// ErrNotIPv4 is returned by ParseFrame for frames that are not IPv4.
var ErrNotIPv4 = errors.New("not an IPv4 frame")

const (
	ethLen    = 14
	ipMinLen  = 20
	etherIPv4 = 0x0800
)

// ParseFrame reads the 5-tuple of an Ethernet/IPv4 frame with the same
// rules as the XDP program (xdp/headers/parsing.h): ICMP echo is keyed by
// its identifier, other ICMP by addresses alone; non-first fragments have
// no ports. Frames come from the wire: every length is checked.
func ParseFrame(frame []byte) (fib.FlowKey, error) {
	var k fib.FlowKey
	if len(frame) < ethLen {
		return k, fmt.Errorf("frame of %d bytes: shorter than an Ethernet header", len(frame))
	}
	if binary.BigEndian.Uint16(frame[12:14]) != etherIPv4 {
		return k, ErrNotIPv4
	}
	ip := frame[ethLen:]
	if len(ip) < ipMinLen {
		return k, fmt.Errorf("IPv4 header truncated: %d bytes", len(ip))
	}
	if ip[0]>>4 != 4 {
		return k, fmt.Errorf("IPv4 header: version %d", ip[0]>>4)
	}
	ihl := int(ip[0]&0x0f) * 4
	tot := int(binary.BigEndian.Uint16(ip[2:4]))
	if ihl < ipMinLen || tot < ihl || tot > len(ip) {
		return k, fmt.Errorf("IPv4 header: ihl %d, total length %d, %d bytes present", ihl, tot, len(ip))
	}
	k.Src = netip.AddrFrom4([4]byte(ip[12:16]))
	k.Dst = netip.AddrFrom4([4]byte(ip[16:20]))
	k.Proto = fib.Proto(ip[9])
	if binary.BigEndian.Uint16(ip[6:8])&0x1fff != 0 {
		return k, nil // non-first fragment
	}
	l4 := ip[ihl:tot]
	switch k.Proto {
	case fib.ProtoTCP:
		if len(l4) < 20 || l4[12]>>4 < 5 {
			return k, fmt.Errorf("TCP header truncated: %d bytes", len(l4))
		}
		k.SrcPort, k.DstPort = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
	case fib.ProtoUDP:
		if len(l4) < 8 {
			return k, fmt.Errorf("UDP header truncated: %d bytes", len(l4))
		}
		k.SrcPort, k.DstPort = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
	case fib.ProtoICMP:
		if len(l4) < 8 {
			return k, fmt.Errorf("ICMP header truncated: %d bytes", len(l4))
		}
		if l4[0] == 0 || l4[0] == 8 { // echo reply, echo request
			k.SrcPort = binary.BigEndian.Uint16(l4[4:6])
		}
	}
	return k, nil
}

// Forward rewrites a frame the way the XDP FIB does for nh: MACs replaced,
// TTL decremented with the header checksum recomputed. It fails for TTL
// <= 1 (the stack must answer with ICMP time exceeded, not us).
func Forward(frame []byte, nh fib.NextHop) error {
	if _, err := ParseFrame(frame); err != nil {
		return err
	}
	ip := frame[ethLen:]
	if ip[8] <= 1 {
		return fmt.Errorf("TTL %d: not forwarding", ip[8])
	}
	if len(nh.DstMAC) != 6 || len(nh.SrcMAC) != 6 {
		return fmt.Errorf("next hop MACs %s > %s: want 6 bytes each", nh.SrcMAC, nh.DstMAC)
	}
	copy(frame[0:6], nh.DstMAC)
	copy(frame[6:12], nh.SrcMAC)
	ip[8]--
	ihl := int(ip[0]&0x0f) * 4
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:12], checksum.Internet(ip[:ihl]))
	return nil
}
