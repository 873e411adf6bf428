package proxyproto

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const sigHex = "0d0a0d0a000d0a515549540a"

// equal reports whether two headers say the same: a TLV without a value
// equals one with an empty value.
func equal(a, b Header) bool {
	if a.Command != b.Command || a.Source != b.Source || a.Destination != b.Destination || len(a.TLVs) != len(b.TLVs) {
		return false
	}
	for i := range a.TLVs {
		if a.TLVs[i].Type != b.TLVs[i].Type || !bytes.Equal(a.TLVs[i].Value, b.TLVs[i].Value) {
			return false
		}
	}
	return true
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		h    Header
		want string // hex
	}{
		{"ipv4", Header{Command: Proxy, Source: netip.MustParseAddrPort("10.0.0.1:40000"), Destination: netip.MustParseAddrPort("10.0.0.2:8080")},
			sigHex + "21 11 000c 0a000001 0a000002 9c40 1f90"},
		{"ipv6", Header{Command: Proxy, Source: netip.MustParseAddrPort("[fd00::1]:1"), Destination: netip.MustParseAddrPort("[fd00::2]:2")},
			sigHex + "21 21 0024 fd000000000000000000000000000001 fd000000000000000000000000000002 0001 0002"},
		{"local", Header{Command: Local}, sigHex + "20 00 0000"},
		{"ipv4 with TLVs", Header{Command: Proxy, Source: netip.MustParseAddrPort("10.0.0.1:40000"), Destination: netip.MustParseAddrPort("10.0.0.2:8080"),
			TLVs: []TLV{{Type: TypeWorkload, Value: []byte("name=fe")}, {Type: TypeALPN, Value: []byte{}}}},
			sigHex + "21 11 0019 0a000001 0a000002 9c40 1f90 e0 0007 6e616d653d6665 01 0000"},
		{"local with a TLV", Header{Command: Local, TLVs: []TLV{{Type: 0xef, Value: []byte{7}}}}, sigHex + "20 00 0004 ef 0001 07"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.h.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if want := mustHex(t, tt.want); !bytes.Equal(b, want) {
				t.Fatalf("Marshal = %x, want %x", b, want)
			}
			if len(b) != tt.h.Len() {
				t.Errorf("Len = %d, encoded %d", tt.h.Len(), len(b))
			}
			// Parse with the stream after it.
			got, n, err := Parse(append(b, "payload"...), 0)
			if err != nil || n != len(b) {
				t.Fatalf("Parse = %v, %d, %v", got, n, err)
			}
			if !equal(got, tt.h) {
				t.Errorf("Parse = %+v, want %+v", got, tt.h)
			}
			// Read leaves the payload in the reader.
			r := bytes.NewReader(append(b, "payload"...))
			got, err = Read(r, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !equal(got, tt.h) {
				t.Errorf("Read = %+v, want %+v", got, tt.h)
			}
			rest, _ := io.ReadAll(r)
			if string(rest) != "payload" {
				t.Errorf("after Read, stream = %q, want payload", rest)
			}
		})
	}
}

func TestMappedIsIPv4(t *testing.T) {
	h := Header{Command: Proxy, Source: netip.MustParseAddrPort("[::ffff:10.0.0.1]:1"), Destination: netip.MustParseAddrPort("10.0.0.2:2")}
	b, err := h.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := Parse(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Source != netip.MustParseAddrPort("10.0.0.1:1") {
		t.Errorf("source = %v, want 10.0.0.1:1", got.Source)
	}
}

func TestEncodeErrors(t *testing.T) {
	tests := []struct {
		name string
		h    Header
		want string
	}{
		{"no addresses", Header{Command: Proxy}, "must both be valid"},
		{"bad command", Header{Command: 7}, "unsupported"},
		{"TLVs too long", Header{Command: Local, TLVs: []TLV{{Type: TypeWorkload, Value: make([]byte, 0xffff)}}}, "at most 65535"},
		{"too many TLVs", Header{Command: Local, TLVs: make([]TLV, MaxTLVs+1)}, "at most 16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.h.Marshal()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Marshal error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	v4 := sigHex + "21 11 000c 0a000001 0a000002 9c40 1f90"
	tests := []struct {
		name string
		in   string // hex
		max  int
		want error
		text string
	}{
		{"empty", "", 0, ErrTruncated, ""},
		{"garbage", "474554202f20485454502f312e310d0a", 0, ErrSignature, ""},
		{"v1 text", hex.EncodeToString([]byte("PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r\n")), 0, ErrSignature, ""},
		{"signature prefix only", sigHex[:10], 0, ErrTruncated, ""},
		{"fixed part cut", sigHex + "2111", 0, ErrTruncated, "fixed"},
		{"address cut", strings.ReplaceAll(v4, " ", "")[:len(strings.ReplaceAll(v4, " ", ""))-6], 0, ErrTruncated, ""},
		{"version 1 binary", sigHex + "11 11 000c 0a000001 0a000002 9c40 1f90", 0, ErrUnsupported, "version 1"},
		{"command 2", sigHex + "22 11 000c 0a000001 0a000002 9c40 1f90", 0, ErrUnsupported, "command"},
		{"udp", sigHex + "21 12 000c 0a000001 0a000002 9c40 1f90", 0, ErrUnsupported, "protocol"},
		{"unix", sigHex + "21 31 0000", 0, ErrUnsupported, "family"},
		{"unspec proxy", sigHex + "21 01 0000", 0, ErrUnsupported, "family"},
		{"short address block", sigHex + "21 11 0008 0a000001 0a000002", 0, ErrMalformed, "address block"},
		{"ipv6 short", sigHex + "21 21 000c 0a000001 0a000002 9c40 1f90", 0, ErrMalformed, "needs 36"},
		{"bad tlv header", sigHex + "21 11 000e 0a000001 0a000002 9c40 1f90 0400", 0, ErrMalformed, "TLV header"},
		{"tlv overrun", sigHex + "21 11 0010 0a000001 0a000002 9c40 1f90 04 0005 00", 0, ErrMalformed, "overruns"},
		{"second tlv overruns", sigHex + "21 11 0014 0a000001 0a000002 9c40 1f90 e0 0001 41 e0 0002 41", 0, ErrMalformed, "type 0xe0 of 2 bytes overruns the header (1 bytes left)"},
		{"workload tlv cut", sigHex + "21 11 000e 0a000001 0a000002 9c40 1f90 e0 00", 0, ErrMalformed, "shorter than a TLV header"},
		{"too many tlvs", sigHex + "20 00 0033" + strings.Repeat("e0 0000 ", MaxTLVs+1), 0, ErrMalformed, "more than 16 TLVs"},
		{"workload tlv over the bound", sigHex + "21 11 0113 0a000001 0a000002 9c40 1f90 e0 0104" + strings.Repeat("41", 0x104), 0, ErrTooLong, "at most 256"},
		{"too long", sigHex + "21 11 ffff", 0, ErrTooLong, "65551 bytes"},
		{"over small bound", v4, 20, ErrTooLong, "at most 20"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := mustHex(t, tt.in)
			_, _, err := Parse(in, tt.max)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("Parse error = %v, want %v containing %q", err, tt.want, tt.text)
			}
			_, rerr := Read(bytes.NewReader(in), tt.max)
			if !errors.Is(rerr, tt.want) {
				t.Errorf("Read error = %v, want %v", rerr, tt.want)
			}
		})
	}
}

func TestParseTLVs(t *testing.T) {
	// TLVs are kept in order, of any type; a LOCAL header's address
	// block is skipped.
	for _, tt := range []struct {
		name string
		in   string
		max  int
		want []TLV
	}{
		{"alpn", sigHex + "21 11 0011 0a000001 0a000002 9c40 1f90 01 0002 6832", 0, []TLV{{TypeALPN, []byte("h2")}}},
		{"local with an ipv4 block", sigHex + "20 11 000c 0a000001 0a000002 9c40 1f90", 0, nil},
		{"local with an ipv4 block and a TLV", sigHex + "20 11 0010 0a000001 0a000002 9c40 1f90 e1 0001 00", 0, []TLV{{0xe1, []byte{0}}}},
		{"workload then an unknown custom type", sigHex + "21 11 0017 0a000001 0a000002 9c40 1f90 e0 0003 613d62 ef 0002 7879", 0,
			[]TLV{{TypeWorkload, []byte("a=b")}, {0xef, []byte("xy")}}},
		{"empty value", sigHex + "21 11 000f 0a000001 0a000002 9c40 1f90 e0 0000", 0, []TLV{{TypeWorkload, nil}}},
		{"max tlvs", sigHex + "20 00 0030" + strings.Repeat("e0 0000 ", MaxTLVs), 0, slices.Repeat([]TLV{{TypeWorkload, nil}}, MaxTLVs)},
		{"a large workload within a caller's bound", sigHex + "21 11 0413 0a000001 0a000002 9c40 1f90 e0 0404" + strings.Repeat("41", 0x404), 2048,
			[]TLV{{TypeWorkload, bytes.Repeat([]byte("A"), 0x404)}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := mustHex(t, tt.in)
			h, n, err := Parse(b, tt.max)
			if err != nil || n != len(b) {
				t.Fatalf("Parse = %d, %v", n, err)
			}
			if !equal(h, Header{Command: h.Command, Source: h.Source, Destination: h.Destination, TLVs: tt.want}) {
				t.Errorf("TLVs = %q, want %q", h.TLVs, tt.want)
			}
			rh, err := Read(bytes.NewReader(b), tt.max)
			if err != nil || !equal(rh, h) {
				t.Errorf("Read = %+v, %v; Parse %+v", rh, err, h)
			}
			if len(tt.want) > 0 {
				v, ok := h.TLV(tt.want[0].Type)
				if !ok || !bytes.Equal(v, tt.want[0].Value) {
					t.Errorf("TLV(%#x) = %q, %v", tt.want[0].Type, v, ok)
				}
			}
			if v, ok := h.TLV(0x30); ok {
				t.Errorf("TLV(0x30) = %q, want none", v)
			}
		})
	}
}

// A reader that fails after the signature: the error is wrapped, not
// reported as a truncation.
type failReader struct{ b []byte }

var errBoom = errors.New("boom")

func (f *failReader) Read(p []byte) (int, error) {
	if len(f.b) == 0 {
		return 0, errBoom
	}
	n := copy(p, f.b)
	f.b = f.b[n:]
	return n, nil
}

func TestReadError(t *testing.T) {
	_, err := Read(&failReader{b: mustHex(t, sigHex)}, 0)
	if !errors.Is(err, errBoom) || errors.Is(err, ErrTruncated) {
		t.Fatalf("Read = %v, want the reader's error", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		sigHex + "21 11 000c 0a000001 0a000002 9c40 1f90",
		sigHex + "21 21 0024 fd000000000000000000000000000001 fd000000000000000000000000000002 0001 0002",
		sigHex + "20 00 0000",
		sigHex + "21 11 0011 0a000001 0a000002 9c40 1f90 01 0002 6832",
		sigHex + "21 11 0017 0a000001 0a000002 9c40 1f90 e0 0003 613d62 ef 0002 7879",
		sigHex + "20 00 0004 e0 0001 41",
		"474554202f",
	} {
		f.Add(mustHex(f, s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := Parse(b, 0)
		_, rerr := Read(bytes.NewReader(b), 0)
		if (err == nil) != (rerr == nil) {
			t.Fatalf("Parse err %v but Read err %v", err, rerr)
		}
		if err != nil {
			return
		}
		if n < FixedLength || n > len(b) || n > DefaultMaxLength {
			t.Fatalf("Parse length %d of %d bytes", n, len(b))
		}
		if len(h.TLVs) > MaxTLVs {
			t.Fatalf("Parse kept %d TLVs, at most %d", len(h.TLVs), MaxTLVs)
		}
		for _, tlv := range h.TLVs {
			// Each value lies inside the header it was parsed from.
			if len(tlv.Value) > n-FixedLength-TLVHeaderLength {
				t.Fatalf("TLV %#x of %d bytes in a header of %d", tlv.Type, len(tlv.Value), n)
			}
		}
		// What parsed re-encodes to a header that parses the same.
		enc, err := h.Marshal()
		if err != nil {
			t.Fatalf("re-encode %+v: %v", h, err)
		}
		h2, _, err := Parse(enc, 0)
		if err != nil || !equal(h2, h) {
			t.Fatalf("re-parse %+v: %+v, %v", h, h2, err)
		}
	})
}
