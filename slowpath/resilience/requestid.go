package resilience

import "math/rand/v2"

// RequestIDLen is the length of a RequestID: a UUID's 36 characters.
const RequestIDLen = 36

// RequestID returns a new random (version 4) UUID in its 36-character
// text form, for the x-request-id header the sidecar adds when a request
// has none (Envoy's UUIDRequestIDExtension generates the same form).
//
// The bits come from math/rand/v2's top-level source: the Go runtime's
// ChaCha8 generator, seeded from the operating system's entropy at start
// and kept per thread (per M), so concurrent callers take no lock and
// share no cache line. IDs are unpredictable enough to be unique, not
// secrets: do not use them as tokens.
func RequestID() string {
	var b [RequestIDLen]byte
	return string(AppendRequestID(b[:0]))
}

// AppendRequestID appends a RequestID to dst and returns the extended
// slice; it does not allocate when dst has room.
func AppendRequestID(dst []byte) []byte {
	const hex = "0123456789abcdef"
	var u [16]byte
	hi, lo := rand.Uint64(), rand.Uint64()
	for i := range 8 {
		u[i] = byte(hi >> (56 - 8*i))
		u[8+i] = byte(lo >> (56 - 8*i))
	}
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // variant 10 (RFC 9562)
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hex[c>>4], hex[c&0x0f])
	}
	return dst
}
