package ktls

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
	_ "unsafe" // go:linkname, to pick the TLS 1.3 suite

	"github.com/fibmesh/fibmesh/internal/testpki"
)

// crypto/tls offers no way to choose a TLS 1.3 cipher suite; these lists
// are its preference order (kept linkable on purpose, go.dev/issue/67401).
//
//go:linkname defaultCipherSuitesTLS13 crypto/tls.defaultCipherSuitesTLS13
var defaultCipherSuitesTLS13 []uint16

//go:linkname defaultCipherSuitesTLS13NoAES crypto/tls.defaultCipherSuitesTLS13NoAES
var defaultCipherSuitesTLS13NoAES []uint16

var suiteMu sync.Mutex

// forceTLS13Suite makes every TLS 1.3 handshake in this process negotiate
// id until the test ends.
func forceTLS13Suite(t testing.TB, id uint16) {
	suiteMu.Lock()
	a, b := defaultCipherSuitesTLS13, defaultCipherSuitesTLS13NoAES
	defaultCipherSuitesTLS13, defaultCipherSuitesTLS13NoAES = []uint16{id}, []uint16{id}
	t.Cleanup(func() {
		defaultCipherSuitesTLS13, defaultCipherSuitesTLS13NoAES = a, b
		suiteMu.Unlock()
	})
}

// testConfigs returns a client and a server config that trust each other
// (an ECDSA CA issuing SPIFFE SVIDs, as the mesh does), for TLS version v
// and, for TLS 1.2, suite.
func testConfigs(t testing.TB, v uint16, suite uint16) (client, server *tls.Config) {
	t.Helper()
	client, server = testpki.MTLS(t, "default", "ktls.test")
	client.MinVersion, client.MaxVersion = v, v
	server.MinVersion, server.MaxVersion = v, v
	if v == tls.VersionTLS12 && suite != 0 {
		client.CipherSuites = []uint16{suite}
		server.CipherSuites = []uint16{suite}
	}
	return client, server
}

// handshakePair connects over a listener (loopback, or one in a test
// namespace) and returns both ends handshaken by Client and Server.
func handshakePair(t testing.TB, ln net.Listener, dial func() (net.Conn, error), ccfg, scfg *tls.Config) (client, server *TLSConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type res struct {
		c   *TLSConn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			ch <- res{nil, err}
			return
		}
		c, err := Server(ctx, raw, scfg)
		ch <- res{c, err}
	}()
	raw, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	client, err = Client(ctx, raw, ccfg)
	if err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatalf("server handshake: %v", r.err)
	}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c
}

func loopbackListener(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// recordAEAD is a userspace TLS record layer for AES-GCM, used to check
// derived keys against crypto/tls without kTLS.
type recordAEAD struct {
	k    Keys
	aead cipher.AEAD
	seq  uint64
}

func newRecordAEAD(t testing.TB, k Keys) *recordAEAD {
	t.Helper()
	if k.Cipher == CipherChaCha20Poly1305 {
		t.Skip("no userspace ChaCha20-Poly1305 in the standard library; the VM tests cover it against crypto/tls")
	}
	b, err := aes.NewCipher(k.Key)
	if err != nil {
		t.Fatal(err)
	}
	g, _ := cipher.NewGCM(b)
	return &recordAEAD{k: k, aead: g, seq: k.Seq}
}

func (r *recordAEAD) nonce13() []byte {
	n := append([]byte{}, r.k.IV...)
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], r.seq)
	for i := range 8 {
		n[4+i] ^= s[i]
	}
	return n
}

// seal returns one application_data record carrying p.
func (r *recordAEAD) seal(p []byte) []byte {
	defer func() { r.seq++ }()
	if r.k.Version == VersionTLS13 {
		inner := append(append([]byte{}, p...), recordApplicationData)
		hdr := []byte{recordApplicationData, 3, 3, 0, 0}
		binary.BigEndian.PutUint16(hdr[3:], uint16(len(inner)+r.aead.Overhead()))
		return r.aead.Seal(hdr, r.nonce13(), inner, hdr)
	}
	explicit := binary.BigEndian.AppendUint64(nil, r.seq)
	nonce := append(append([]byte{}, r.k.IV[:4]...), explicit...)
	aad := binary.BigEndian.AppendUint64(nil, r.seq)
	aad = append(aad, recordApplicationData, 3, 3, byte(len(p)>>8), byte(len(p)))
	hdr := []byte{recordApplicationData, 3, 3, 0, 0}
	binary.BigEndian.PutUint16(hdr[3:], uint16(8+len(p)+r.aead.Overhead()))
	return r.aead.Seal(append(hdr, explicit...), nonce, p, aad)
}

// open reads one record from rd and returns its type and plaintext.
func (r *recordAEAD) open(rd io.Reader) (byte, []byte, error) {
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(rd, hdr); err != nil {
		return 0, nil, err
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.ReadFull(rd, body); err != nil {
		return 0, nil, err
	}
	defer func() { r.seq++ }()
	if r.k.Version == VersionTLS13 {
		pt, err := r.aead.Open(nil, r.nonce13(), body, hdr)
		if err != nil {
			return 0, nil, fmt.Errorf("record seq %d: %w", r.seq, err)
		}
		i := len(pt) - 1
		for i >= 0 && pt[i] == 0 {
			i--
		}
		if i < 0 {
			return 0, nil, fmt.Errorf("record seq %d: no content type", r.seq)
		}
		return pt[i], pt[:i], nil
	}
	nonce := append(append([]byte{}, r.k.IV[:4]...), body[:8]...)
	n := len(body) - 8 - r.aead.Overhead()
	aad := binary.BigEndian.AppendUint64(nil, r.seq)
	aad = append(aad, hdr[0], 3, 3, byte(n>>8), byte(n))
	pt, err := r.aead.Open(nil, nonce, body[8:], aad)
	if err != nil {
		return 0, nil, fmt.Errorf("record seq %d: %w", r.seq, err)
	}
	return hdr[0], pt, nil
}
