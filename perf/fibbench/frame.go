package fibbench

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/fibmesh/fibmesh/internal/checksum"
)

// udpFrame builds an Ethernet/IPv4/UDP frame of exactly size bytes
// (minimum 42), with a valid IPv4 header checksum and no UDP checksum.
func udpFrame(size int, dst, src net.HardwareAddr, sip, dip netip.Addr, sport, dport uint16) []byte {
	size = max(size, 42)
	f := make([]byte, size)
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:14], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(size-14))
	ip[8] = 64
	ip[9] = 17
	s, d := sip.As4(), dip.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:12], checksum.Internet(ip))
	udp := f[34:]
	binary.BigEndian.PutUint16(udp[0:2], sport)
	binary.BigEndian.PutUint16(udp[2:4], dport)
	binary.BigEndian.PutUint16(udp[4:6], uint16(size-34))
	return f
}
