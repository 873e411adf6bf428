// Package proxyproto encodes and decodes the binary PROXY protocol,
// version 2 (haproxy's proxy-protocol.txt, section 2.2), as the mTLS
// tunnel between agents carries it: the first bytes inside the tunnel name
// the original source and destination of the stream that follows.
//
// Only what the tunnel needs is accepted: version 2, the PROXY command
// with TCP over IPv4 or IPv6, and the LOCAL command. Parsing is strict: a
// wrong signature, version, command, family or protocol, an address block
// shorter than its family needs, malformed TLVs, or a header longer than
// the caller's bound is an error that says which. Read consumes exactly
// the header and never reads past it, so the stream that follows can be
// read from the same reader.
//
// The header's TLVs (type-length-value fields after the addresses) are
// kept, in order, so that the tunnel can carry what the PROXY protocol
// has no field for: the calling agent puts its workload's metadata in a
// TLV of the custom range (TypeWorkload), as Istio's sidecars exchange
// theirs in-band on TCP. A receiver that does not know a type skips it,
// so old and new agents interoperate.
package proxyproto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// Signature is the 12 bytes every version 2 header starts with.
const Signature = "\r\n\r\n\x00\r\nQUIT\n"

// Sizes of a header.
const (
	// FixedLength is the signature, the version/command byte, the
	// family/protocol byte and the 16-bit length.
	FixedLength = 16
	// IPv4Length and IPv6Length are the address blocks of TCP over IPv4
	// and IPv6 (addresses then ports).
	IPv4Length = 12
	IPv6Length = 36
	// DefaultMaxLength bounds a header Read accepts when the caller
	// passes 0: the fixed part, an IPv6 address block and 204 bytes of
	// TLVs. A caller that expects larger TLVs (the tunnel's workload
	// metadata) passes its own bound.
	DefaultMaxLength = 256
	// TLVHeaderLength is a TLV's type byte and 16-bit length.
	TLVHeaderLength = 3
	// MaxTLVs bounds the TLVs of one header that Parse and Read accept:
	// a header of zero-length TLVs within a large bound would otherwise
	// cost a slice entry per three bytes.
	MaxTLVs = 16
)

// TLV types. The PROXY protocol reserves 0xE0 to 0xEF for
// application-specific types (PP2_TYPE_MIN_CUSTOM to PP2_TYPE_MAX_CUSTOM).
const (
	// TypeALPN is the protocol's own PP2_TYPE_ALPN (the tunnel does not
	// send it; listed for tests and readers).
	TypeALPN = 0x01
	// TypeWorkload carries the sending agent's workload metadata: the
	// workload, namespace, app, version, canonical service and revision
	// and cluster of the pod that opened the tunnel (the tunnel's
	// encoding: slowpath/proxy, WorkloadMeta). Custom range.
	TypeWorkload = 0xE0
)

// TLV is one type-length-value field of a header.
type TLV struct {
	Type byte
	// Value is at most 65535 bytes (the length is 16 bits). A parsed
	// TLV's Value aliases the parsed bytes: copy it to keep it past
	// them.
	Value []byte
}

// Command is the header's command.
type Command uint8

// Commands.
const (
	// Local: the connection was made by the proxy itself (a health
	// check); it carries no addresses.
	Local Command = 0x0
	// Proxy: the connection is relayed for Source, to Destination.
	Proxy Command = 0x1
)

// String returns the command's name, LOCAL or PROXY.
func (c Command) String() string {
	switch c {
	case Local:
		return "LOCAL"
	case Proxy:
		return "PROXY"
	}
	return fmt.Sprintf("command(%#x)", uint8(c))
}

// Header is a decoded PROXY v2 header.
type Header struct {
	Command Command
	// Source and Destination are the relayed connection's endpoints;
	// zero for Local. Decoded IPv4-mapped IPv6 addresses are unmapped
	// (::ffff:10.0.0.1 reads as 10.0.0.1), so a header from an IPv6
	// socket compares equal to the pod's IPv4 address.
	Source, Destination netip.AddrPort
	// TLVs are the header's TLVs in order (none: nil). A LOCAL header
	// carries them too.
	TLVs []TLV
}

// TLV returns the value of the first TLV of type typ, and whether there
// is one.
func (h Header) TLV(typ byte) ([]byte, bool) {
	for _, t := range h.TLVs {
		if t.Type == typ {
			return t.Value, true
		}
	}
	return nil, false
}

// tlvLength is the encoded length of h's TLVs.
func (h Header) tlvLength() int {
	n := 0
	for _, t := range h.TLVs {
		n += TLVHeaderLength + len(t.Value)
	}
	return n
}

const (
	version2  = 0x2
	famUnspec = 0x0
	famInet   = 0x1
	famInet6  = 0x2
	protoUnsp = 0x0
	protoStrm = 0x1
)

// Errors Parse and Read wrap, so callers can count refusals by kind.
var (
	// ErrSignature: the bytes do not start with Signature (not a PROXY
	// v2 header at all: garbage, or a v1 text header).
	ErrSignature = errors.New("proxyproto: not a PROXY protocol v2 header (bad signature)")
	// ErrUnsupported: a version, command, family or protocol the tunnel
	// does not carry.
	ErrUnsupported = errors.New("proxyproto: unsupported header")
	// ErrMalformed: lengths or TLVs that do not add up.
	ErrMalformed = errors.New("proxyproto: malformed header")
	// ErrTooLong: the header is longer than the caller's bound.
	ErrTooLong = errors.New("proxyproto: header longer than allowed")
	// ErrTruncated: the input ended inside the header.
	ErrTruncated = errors.New("proxyproto: truncated header")
)

// Len returns the encoded length of h.
func (h Header) Len() int {
	n := FixedLength + h.tlvLength()
	switch {
	case h.Command == Local:
	case h.Source.Addr().Unmap().Is4() && h.Destination.Addr().Unmap().Is4():
		n += IPv4Length
	default:
		n += IPv6Length
	}
	return n
}

// Append encodes h after b. A Proxy header needs valid Source and
// Destination: both IPv4 (or IPv4-mapped) are sent as INET, anything
// else as INET6 (an IPv4 address beside an IPv6 one as IPv4-mapped). A
// Local header carries no addresses. The TLVs follow the addresses; the
// header after the fixed part must fit its 16-bit length, and there may
// be at most MaxTLVs.
func (h Header) Append(b []byte) ([]byte, error) {
	if len(h.TLVs) > MaxTLVs {
		return b, fmt.Errorf("proxyproto: encode: %d TLVs, at most %d", len(h.TLVs), MaxTLVs)
	}
	body := h.Len() - FixedLength
	if body > 0xffff {
		return b, fmt.Errorf("proxyproto: encode: %d bytes after the fixed part, at most 65535 (TLVs too long)", body)
	}
	switch h.Command {
	case Local:
		b = append(b, Signature...)
		b = append(b, version2<<4|byte(Local), famUnspec<<4|protoUnsp)
		b = binary.BigEndian.AppendUint16(b, uint16(body))
		return h.appendTLVs(b), nil
	case Proxy:
	default:
		return b, fmt.Errorf("proxyproto: encode: %w: command %v", ErrUnsupported, h.Command)
	}
	src, dst := h.Source.Addr().Unmap(), h.Destination.Addr().Unmap()
	if !src.IsValid() || !dst.IsValid() {
		return b, fmt.Errorf("proxyproto: encode: source %v and destination %v must both be valid addresses", h.Source, h.Destination)
	}
	b = append(b, Signature...)
	if src.Is4() && dst.Is4() {
		b = append(b, version2<<4|byte(Proxy), famInet<<4|protoStrm)
		b = binary.BigEndian.AppendUint16(b, uint16(body))
		s, d := src.As4(), dst.As4()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	} else {
		b = append(b, version2<<4|byte(Proxy), famInet6<<4|protoStrm)
		b = binary.BigEndian.AppendUint16(b, uint16(body))
		s, d := src.As16(), dst.As16()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, h.Source.Port())
	b = binary.BigEndian.AppendUint16(b, h.Destination.Port())
	return h.appendTLVs(b), nil
}

// appendTLVs encodes h's TLVs after b (their lengths already checked).
func (h Header) appendTLVs(b []byte) []byte {
	for _, t := range h.TLVs {
		b = append(b, t.Type)
		b = binary.BigEndian.AppendUint16(b, uint16(len(t.Value)))
		b = append(b, t.Value...)
	}
	return b
}

// Marshal returns h encoded.
func (h Header) Marshal() ([]byte, error) { return h.Append(make([]byte, 0, h.Len())) }

// Parse decodes the header at the start of b and returns it with its
// length; the rest of b is the stream. It returns an error wrapping
// ErrTruncated when b ends inside the header (read more and call again),
// ErrTooLong when the header is longer than max (0: DefaultMaxLength), and
// ErrSignature, ErrUnsupported or ErrMalformed for a header it refuses.
func Parse(b []byte, max int) (Header, int, error) {
	if max <= 0 {
		max = DefaultMaxLength
	}
	n := min(len(b), len(Signature))
	if string(b[:n]) != Signature[:n] {
		return Header{}, 0, ErrSignature
	}
	if len(b) < FixedLength {
		return Header{}, 0, fmt.Errorf("%w: %d of the %d fixed bytes", ErrTruncated, len(b), FixedLength)
	}
	total, err := checkFixed(b[:FixedLength], max)
	if err != nil {
		return Header{}, 0, err
	}
	if len(b) < total {
		return Header{}, 0, fmt.Errorf("%w: %d of %d bytes", ErrTruncated, len(b), total)
	}
	h, err := parseBody(b[12], b[13], b[FixedLength:total])
	if err != nil {
		return Header{}, 0, err
	}
	return h, total, nil
}

// checkFixed checks the 16 fixed bytes (signature already checked) and
// returns the header's total length.
func checkFixed(fixed []byte, max int) (int, error) {
	if v := fixed[12] >> 4; v != version2 {
		return 0, fmt.Errorf("%w: version %d, want 2", ErrUnsupported, v)
	}
	if c := Command(fixed[12] & 0xf); c != Local && c != Proxy {
		return 0, fmt.Errorf("%w: %v, want LOCAL or PROXY", ErrUnsupported, c)
	}
	total := FixedLength + int(binary.BigEndian.Uint16(fixed[14:16]))
	if total > max {
		return 0, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLong, total, max)
	}
	return total, nil
}

// parseBody decodes the address block and TLVs after the fixed part.
func parseBody(verCmd, famProto byte, body []byte) (Header, error) {
	cmd := Command(verCmd & 0xf)
	fam, proto := famProto>>4, famProto&0xf
	var h Header
	h.Command = cmd
	var addrLen int
	switch {
	case cmd == Local:
		// The receiver ignores a LOCAL header's addresses (section
		// 2.2); whatever follows is still checked as TLVs after a
		// known address block.
		switch fam {
		case famInet:
			addrLen = IPv4Length
		case famInet6:
			addrLen = IPv6Length
		case famUnspec:
		default:
			return Header{}, fmt.Errorf("%w: family %#x", ErrUnsupported, fam)
		}
	case proto != protoStrm:
		return Header{}, fmt.Errorf("%w: protocol %#x, want STREAM (TCP)", ErrUnsupported, proto)
	case fam == famInet:
		addrLen = IPv4Length
	case fam == famInet6:
		addrLen = IPv6Length
	default:
		return Header{}, fmt.Errorf("%w: family %#x, want INET or INET6", ErrUnsupported, fam)
	}
	if len(body) < addrLen {
		return Header{}, fmt.Errorf("%w: address block of %d bytes, family needs %d", ErrMalformed, len(body), addrLen)
	}
	if cmd == Proxy {
		a := body[:addrLen]
		if addrLen == IPv4Length {
			h.Source = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[0:4])), binary.BigEndian.Uint16(a[8:10]))
			h.Destination = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[4:8])), binary.BigEndian.Uint16(a[10:12]))
		} else {
			h.Source = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[0:16])).Unmap(), binary.BigEndian.Uint16(a[32:34]))
			h.Destination = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[16:32])).Unmap(), binary.BigEndian.Uint16(a[34:36]))
		}
	}
	tlvs, err := parseTLVs(body[addrLen:])
	if err != nil {
		return Header{}, err
	}
	h.TLVs = tlvs
	return h, nil
}

// parseTLVs splits b, the bytes after the address block, into TLVs: each
// one's 3-byte header must fit, its value must end inside b, and there
// may be at most MaxTLVs. The values alias b.
func parseTLVs(b []byte) ([]TLV, error) {
	var out []TLV
	for len(b) > 0 {
		if len(b) < TLVHeaderLength {
			return nil, fmt.Errorf("%w: %d trailing bytes, shorter than a TLV header", ErrMalformed, len(b))
		}
		l := int(binary.BigEndian.Uint16(b[1:3]))
		if TLVHeaderLength+l > len(b) {
			return nil, fmt.Errorf("%w: TLV type %#x of %d bytes overruns the header (%d bytes left)", ErrMalformed, b[0], l, len(b)-TLVHeaderLength)
		}
		if len(out) == MaxTLVs {
			return nil, fmt.Errorf("%w: more than %d TLVs", ErrMalformed, MaxTLVs)
		}
		out = append(out, TLV{Type: b[0], Value: b[TLVHeaderLength : TLVHeaderLength+l : TLVHeaderLength+l]})
		b = b[TLVHeaderLength+l:]
	}
	return out, nil
}

// Read reads exactly one header from r (never more), and returns it. max
// bounds its length as in Parse. A reader that ends inside the header
// gives an error wrapping ErrTruncated; other read errors are returned
// wrapped. Set a deadline on r: Read waits for all the bytes the header
// announces.
func Read(r io.Reader, max int) (Header, error) {
	if max <= 0 {
		max = DefaultMaxLength
	}
	var fixed [FixedLength]byte
	// Read the signature first: garbage is refused without waiting for
	// 16 bytes that may never come.
	if n, err := io.ReadFull(r, fixed[:len(Signature)]); err != nil {
		if string(fixed[:n]) != Signature[:n] {
			return Header{}, ErrSignature
		}
		return Header{}, readErr(err, n)
	}
	if string(fixed[:len(Signature)]) != Signature {
		return Header{}, ErrSignature
	}
	if n, err := io.ReadFull(r, fixed[len(Signature):]); err != nil {
		return Header{}, readErr(err, len(Signature)+n)
	}
	total, err := checkFixed(fixed[:], max)
	if err != nil {
		return Header{}, err
	}
	body := make([]byte, total-FixedLength)
	if n, err := io.ReadFull(r, body); err != nil {
		return Header{}, readErr(err, FixedLength+n)
	}
	return parseBody(fixed[12], fixed[13], body)
}

func readErr(err error, got int) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: the stream ended after %d bytes", ErrTruncated, got)
	}
	return fmt.Errorf("proxyproto: read header after %d bytes: %w", got, err)
}
