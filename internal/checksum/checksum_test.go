package checksum

import (
	"encoding/binary"
	"fmt"
	"testing"
)

func TestInternet(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		want uint16
	}{
		{"empty", nil, 0xffff},
		// RFC 1071 section 3: the sum of 0001 f203 f4f5 f6f7 is ddf2.
		{"RFC 1071 example", []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, ^uint16(0xddf2)},
		{"odd length pads with zero", []byte{0x01, 0x02, 0x03}, ^uint16(0x0102 + 0x0300)},
		{"carry folds", []byte{0xff, 0xff, 0x00, 0x01}, ^uint16(0x0001)},
		// A header with its checksum (b861) in place sums to zero.
		{"valid IPv4 header", ipv4, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Internet(tc.b); got != tc.want {
				t.Errorf("Internet(% x) = %#04x, want %#04x", tc.b, got, tc.want)
			}
		})
	}
}

// ipv4 is a 20-byte IPv4 header with a correct checksum, 0xb861.
var ipv4 = []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}

func TestIPv4Header(t *testing.T) {
	withField := func(v uint16) []byte {
		h := append([]byte(nil), ipv4...)
		binary.BigEndian.PutUint16(h[10:], v)
		return h
	}
	opts := append(append([]byte(nil), ipv4...), 0x01, 0x01, 0x01, 0x00) // NOP NOP NOP EOL
	opts[0] = 0x46
	binary.BigEndian.PutUint16(opts[10:], 0)
	binary.BigEndian.PutUint16(opts[10:], Internet(opts))
	for _, tc := range []struct {
		name string
		hdr  []byte
		want uint16
	}{
		{"field zero", withField(0), 0xb861},
		{"field correct", withField(0xb861), 0xb861},
		{"field wrong", withField(0x1234), 0xb861},
		{"field all ones", withField(0xffff), 0xb861},
		{"with options", opts, binary.BigEndian.Uint16(opts[10:])},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := fmt.Sprintf("% x", tc.hdr)
			if got := IPv4Header(tc.hdr); got != tc.want {
				t.Errorf("IPv4Header(%s) = %#04x, want %#04x", before, got, tc.want)
			}
			if after := fmt.Sprintf("% x", tc.hdr); after != before {
				t.Errorf("IPv4Header modified the header: %s, was %s", after, before)
			}
		})
	}
}

func TestNoAllocs(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { Internet(ipv4); IPv4Header(ipv4) }); n != 0 {
		t.Errorf("%v allocations per run, want 0", n)
	}
}

func BenchmarkInternet1500(b *testing.B) {
	buf := make([]byte, 1500)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		Internet(buf)
	}
}
