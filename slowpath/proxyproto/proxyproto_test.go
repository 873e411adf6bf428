package proxyproto

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"net/netip"
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
			if got != tt.h {
				t.Errorf("Parse = %+v, want %+v", got, tt.h)
			}
			// Read leaves the payload in the reader.
			r := bytes.NewReader(append(b, "payload"...))
			got, err = Read(r, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.h {
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

func TestParseAcceptsTLVs(t *testing.T) {
	// A PROXY header with an ALPN TLV and a LOCAL header with an IPv4
	// block: both valid, the TLVs are skipped.
	for _, in := range []string{
		sigHex + "21 11 0011 0a000001 0a000002 9c40 1f90 01 0002 6832",
		sigHex + "20 11 000c 0a000001 0a000002 9c40 1f90",
	} {
		b := mustHex(t, in)
		if _, n, err := Parse(b, 0); err != nil || n != len(b) {
			t.Errorf("Parse(%s) = %d, %v", in, n, err)
		}
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
		// What parsed re-encodes to a header that parses the same.
		enc, err := h.Marshal()
		if err != nil {
			t.Fatalf("re-encode %+v: %v", h, err)
		}
		h2, _, err := Parse(enc, 0)
		if err != nil || h2 != h {
			t.Fatalf("re-parse %+v: %+v, %v", h, h2, err)
		}
	})
}
