package fib

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
)

// The BPF maps keep IPv4 addresses and ports in network byte order inside
// native (little-endian) integers. These helpers convert without going
// through the integer's value, so the bytes in memory are the wire bytes.

func addrToBE(a netip.Addr) (uint32, error) {
	if !a.Is4() {
		return 0, fmt.Errorf("%s is not an IPv4 address: the FIB routes IPv4 only", a)
	}
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:]), nil
}

func beToAddr(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func portToBE(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func beToPort(v uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], v)
	return binary.BigEndian.Uint16(b[:])
}

func macTo6(m net.HardwareAddr) ([6]uint8, error) {
	var out [6]uint8
	if len(m) != 6 {
		return out, fmt.Errorf("MAC address %q: want 6 bytes, got %d", m, len(m))
	}
	copy(out[:], m)
	return out, nil
}
