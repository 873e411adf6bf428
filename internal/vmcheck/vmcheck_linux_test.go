package vmcheck

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/internal/loopback"
)

// Kernel uapi constants from include/uapi/linux/tls.h (x/sys/unix has
// SOL_TLS and TCP_ULP but not these).
const (
	tlsTX = 1
	tlsRX = 2

	tls12 = 0x0303
	tls13 = 0x0304

	cipherAESGCM128        = 51
	cipherAESGCM256        = 52
	cipherAESCCM128        = 53
	cipherCHACHA20POLY1305 = 54
)

// cipher describes one struct tls12_crypto_info_*: a tls_crypto_info
// header (version, cipher_type: two u16) followed by iv, key, salt and
// rec_seq byte arrays of these sizes.
type cipher struct {
	name                       string
	version, typ               uint16
	iv, key, salt, recSeq, tag int
}

var ciphers = []cipher{
	{"TLS1.3-AES-GCM-128", tls13, cipherAESGCM128, 8, 16, 4, 8, 16},
	{"TLS1.3-AES-GCM-256", tls13, cipherAESGCM256, 8, 32, 4, 8, 16},
	{"TLS1.3-AES-CCM-128", tls13, cipherAESCCM128, 8, 16, 4, 8, 16},
	{"TLS1.3-CHACHA20-POLY1305", tls13, cipherCHACHA20POLY1305, 12, 32, 0, 8, 16},
	{"TLS1.2-AES-GCM-128", tls12, cipherAESGCM128, 8, 16, 4, 8, 16},
}

// cryptoInfo returns the setsockopt(SOL_TLS, TLS_TX/TLS_RX) argument with
// fixed key material (both ends use the same, so RX decrypts TX).
func (c cipher) cryptoInfo() []byte {
	b := binary.LittleEndian.AppendUint16(nil, c.version)
	b = binary.LittleEndian.AppendUint16(b, c.typ)
	for i := 0; i < c.iv+c.key+c.salt; i++ {
		b = append(b, byte(i*7+1))
	}
	return append(b, make([]byte, c.recSeq)...) // record sequence 0
}

// vmOnly skips the test outside the VM: on a development kernel without
// kTLS these assertions are expected to fail.
func vmOnly(t *testing.T) {
	t.Helper()
	if !InVM() {
		t.Skipf("runs only in make vmtest's VM (%s=1)", EnvVar)
	}
	if os.Geteuid() != 0 {
		t.Fatal("the vmtest VM runs tests as root")
	}
}

// tcpPair returns both ends of a connected loopback TCP connection,
// closed when the test ends.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	c, s, err := loopback.TCPPair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// setsockopt runs setsockopt(fd, level, opt, val) on conn's socket.
func setsockopt(conn *net.TCPConn, level, opt int, val []byte) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), level, opt, string(val))
	}); err != nil {
		return err
	}
	return serr
}

// TestTLSULP proves that the VM's kernel loads tls.ko: the "tls" ULP is
// offered and can be set on a connected TCP socket.
func TestTLSULP(t *testing.T) {
	vmOnly(t)
	c, _ := tcpPair(t)
	if err := setsockopt(c, unix.IPPROTO_TCP, unix.TCP_ULP, []byte("tls")); err != nil {
		t.Fatalf("setsockopt(TCP_ULP, tls): %v", err)
	}
	ulps, err := ULPs()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ulps, "tls") {
		t.Fatalf("tcp_available_ulp = %q, want tls in it", ulps)
	}
	NeedULP(t, "tls") // must not skip or fail now
}

// TestKTLSCiphers proves that the initramfs carries the crypto modules
// kTLS asks for: for each cipher, records the kernel encrypts on one
// socket (TLS_TX) are well-formed on the wire and decrypt on the other
// (TLS_RX), in both directions.
func TestKTLSCiphers(t *testing.T) {
	vmOnly(t)
	for _, c := range ciphers {
		t.Run(c.name, func(t *testing.T) {
			a, b := tcpPair(t)
			for _, conn := range []*net.TCPConn{a, b} {
				if err := setsockopt(conn, unix.IPPROTO_TCP, unix.TCP_ULP, []byte("tls")); err != nil {
					t.Fatalf("TCP_ULP tls: %v", err)
				}
			}
			// The wire: a TX-only socket's output read as plain TCP.
			if err := setsockopt(a, unix.SOL_TLS, tlsTX, c.cryptoInfo()); err != nil {
				t.Fatalf("TLS_TX %s: %v", c.name, err)
			}
			msg := []byte("vmcheck: kTLS " + c.name)
			if _, err := a.Write(msg); err != nil {
				t.Fatal(err)
			}
			wantLen := len(msg) + c.tag
			if c.version == tls13 {
				wantLen++ // the inner content type
			} else if c.typ != cipherCHACHA20POLY1305 {
				wantLen += c.iv // TLS 1.2 explicit nonce
			}
			rec := make([]byte, 5+wantLen)
			b.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(b, rec); err != nil {
				t.Fatalf("read record: %v", err)
			}
			if got, want := rec[:5], []byte{23, 3, 3, byte(wantLen >> 8), byte(wantLen)}; !bytes.Equal(got, want) {
				t.Fatalf("record header % x, want % x", got, want)
			}
			if bytes.Contains(rec, msg) {
				t.Fatal("the record carries the plaintext")
			}
			// The round trip: RX on b decrypts a's next record, and
			// b's TX is decrypted by a's RX. Sequence numbers: a's TX
			// has sent record 0 already.
			info := c.cryptoInfo()
			binary.BigEndian.PutUint64(info[len(info)-8:], 1)
			if err := setsockopt(b, unix.SOL_TLS, tlsRX, info); err != nil {
				t.Fatalf("TLS_RX %s: %v", c.name, err)
			}
			if err := setsockopt(b, unix.SOL_TLS, tlsTX, c.cryptoInfo()); err != nil {
				t.Fatalf("TLS_TX %s: %v", c.name, err)
			}
			if err := setsockopt(a, unix.SOL_TLS, tlsRX, c.cryptoInfo()); err != nil {
				t.Fatalf("TLS_RX %s: %v", c.name, err)
			}
			for i, dir := range [][2]*net.TCPConn{{a, b}, {b, a}} {
				want := []byte(fmt.Sprintf("%s direction %d", msg, i))
				if _, err := dir[0].Write(want); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(want))
				dir[1].SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(dir[1], got); err != nil {
					t.Fatalf("direction %d: read: %v", i, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("direction %d: got %q, want %q", i, got, want)
				}
			}
		})
	}
}
