// Package checksum computes the Internet checksum (RFC 1071) that IPv4,
// TCP, UDP and ICMP headers carry. It is the one copy for the punt path,
// the FIB tests and the packet generators of the benchmarks.
package checksum

// Internet returns the Internet checksum of b (RFC 1071): the ones'
// complement of the ones'-complement sum of b's 16-bit big-endian words,
// an odd last byte padded with a zero. Over data that holds a correct
// checksum it returns 0.
func Internet(b []byte) uint16 {
	return ^fold(sum(b))
}

// IPv4Header returns the header checksum of the IPv4 header hdr (RFC 791)
// as if its checksum field (bytes 10-11) were zero, so it serves both to
// fill the field in and to check it: compare it with the field. hdr is
// the whole header (IHL×4 bytes, options included) and is not modified.
func IPv4Header(hdr []byte) uint16 {
	if len(hdr) < 12 {
		return Internet(hdr)
	}
	// Both halves start on a word boundary (10 is even).
	return ^fold(sum(hdr[:10]) + sum(hdr[12:]))
}

func sum(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

// fold adds the carries of s back in until it fits 16 bits.
func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}
