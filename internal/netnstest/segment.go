package netnstest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
)

// segment is the TCP part of one captured frame. payload aliases the
// frame.
type segment struct {
	src, dst netip.AddrPort
	seq      uint32
	flags    uint8
	payload  []byte
}

// errNotTCP marks a well-formed frame that carries no TCP segment (ARP,
// ICMP, IPv6 neighbour discovery, an IP fragment).
var errNotTCP = errors.New("not a TCP segment")

// parseFrame parses an Ethernet frame (optionally one 802.1Q tag) holding
// IPv4 or IPv6 (no extension headers) and TCP. The IP length, not the
// frame's, bounds the payload (short frames are padded); an IPv4 total
// length of 0 (a GSO packet over 64 KiB) means the rest of the frame.
func parseFrame(frame []byte) (segment, error) {
	if len(frame) < 14 {
		return segment{}, fmt.Errorf("frame of %d bytes: no Ethernet header", len(frame))
	}
	etype := binary.BigEndian.Uint16(frame[12:])
	b := frame[14:]
	if etype == 0x8100 {
		if len(b) < 4 {
			return segment{}, errors.New("truncated 802.1Q tag")
		}
		etype, b = binary.BigEndian.Uint16(b[2:]), b[4:]
	}
	var src, dst netip.Addr
	switch etype {
	case 0x0800:
		if len(b) < 20 || b[0]>>4 != 4 {
			return segment{}, errors.New("truncated or bad IPv4 header")
		}
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:]))
		if total == 0 {
			total = len(b)
		}
		if ihl < 20 || total < ihl || total > len(b) {
			return segment{}, fmt.Errorf("IPv4 header length %d, total length %d in %d bytes", ihl, total, len(b))
		}
		if b[9] != 6 {
			return segment{}, errNotTCP
		}
		if frag := binary.BigEndian.Uint16(b[6:]); frag&0x3fff != 0 {
			return segment{}, errNotTCP // a fragment: veth traffic has none
		}
		src, dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		b = b[ihl:total]
	case 0x86dd:
		if len(b) < 40 || b[0]>>4 != 6 {
			return segment{}, errors.New("truncated or bad IPv6 header")
		}
		plen := int(binary.BigEndian.Uint16(b[4:]))
		if 40+plen > len(b) {
			return segment{}, fmt.Errorf("IPv6 payload length %d in %d bytes", plen, len(b)-40)
		}
		if b[6] != 6 {
			return segment{}, errNotTCP
		}
		src, dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		b = b[40 : 40+plen]
	default:
		return segment{}, errNotTCP
	}
	if len(b) < 20 {
		return segment{}, fmt.Errorf("TCP header truncated to %d bytes", len(b))
	}
	doff := int(b[12]>>4) * 4
	if doff < 20 || doff > len(b) {
		return segment{}, fmt.Errorf("TCP data offset %d in %d bytes", doff, len(b))
	}
	return segment{
		src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(b[0:])),
		dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(b[2:])),
		seq:     binary.BigEndian.Uint32(b[4:]),
		flags:   b[13],
		payload: b[doff:],
	}, nil
}
