package ktls

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// suiteCases are the suites kTLS takes, as crypto/tls negotiates them.
var suiteCases = []struct {
	name    string
	version uint16
	suite   uint16 // TLS 1.3: forced with forceTLS13Suite
	cipher  Cipher
}{
	{"TLS1.3/AES-128-GCM", tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256, CipherAESGCM128},
	{"TLS1.3/AES-256-GCM", tls.VersionTLS13, tls.TLS_AES_256_GCM_SHA384, CipherAESGCM256},
	{"TLS1.3/ChaCha20-Poly1305", tls.VersionTLS13, tls.TLS_CHACHA20_POLY1305_SHA256, CipherChaCha20Poly1305},
	{"TLS1.2/AES-128-GCM", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, CipherAESGCM128},
	{"TLS1.2/AES-256-GCM", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, CipherAESGCM256},
	{"TLS1.2/ChaCha20-Poly1305", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, CipherChaCha20Poly1305},
}

// TestDerivedKeysMatchCryptoTLS proves, without kTLS, that the keys, IVs
// and sequence numbers Offload would give the kernel are the ones
// crypto/tls uses: after some application data each way through
// crypto/tls (a partial read leaving plaintext in its buffer), one side
// detaches; its peer keeps using crypto/tls; the detached side opens the
// peer's next record and seals one back in userspace with the derived
// keys, and crypto/tls accepts it.
func TestDerivedKeysMatchCryptoTLS(t *testing.T) {
	for _, tc := range suiteCases {
		for _, side := range []string{"client", "server"} {
			t.Run(tc.name+"/"+side, func(t *testing.T) {
				if tc.version == tls.VersionTLS13 {
					forceTLS13Suite(t, tc.suite)
				}
				ccfg, scfg := testConfigs(t, tc.version, tc.suite)
				ln := loopbackListener(t)
				c, s := handshakePair(t, ln, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }, ccfg, scfg)
				if got := c.ConnectionState().CipherSuite; got != tc.suite {
					t.Fatalf("negotiated %s, want %s", tls.CipherSuiteName(got), tls.CipherSuiteName(tc.suite))
				}
				checkDerived(t, c, s, side, tc.cipher, Version(tc.version))
			})
		}
	}
}

// checkDerived runs the cross-check of TestDerivedKeysMatchCryptoTLS on a
// handshaken pair, offloading (in userspace) the given side.
func checkDerived(t *testing.T, c, s *TLSConn, side string, cipher Cipher, version Version) {
	t.Helper()
	off, peer := c, s
	if side == "server" {
		off, peer = s, c
	}
	off.SetDeadline(time.Now().Add(10 * time.Second))
	peer.SetDeadline(time.Now().Add(10 * time.Second))

	// Userspace traffic before the offload: two records to
	// the offloading side, which reads only part of the
	// first; one record from it.
	if _, err := peer.Write([]byte("first record")); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Write([]byte("second record")); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 5)
	if _, err := io.ReadFull(off, head); err != nil {
		t.Fatal(err)
	}
	if _, err := off.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, peer, 5); got != "reply" {
		t.Fatalf("peer read %q", got)
	}

	tx, rx, _, _, err := off.keys()
	if err != nil {
		t.Fatal(err)
	}
	if tx.Cipher != cipher || tx.Version != version {
		t.Fatalf("keys for %v %v, want %v %v", tx.Version, tx.Cipher, version, cipher)
	}
	pending, eof, err := off.detach()
	if err != nil || eof {
		t.Fatalf("detach: eof %v, %v", eof, err)
	}
	if string(head)+string(pending) != "first record" {
		t.Fatalf("read %q then handed back %q, want the rest of %q", head, pending, "first record")
	}
	raw := off.raw.Conn
	if _, err := io.ReadFull(off, make([]byte, 1)); err == nil {
		t.Fatal("crypto/tls still reads after detach")
	}

	in := newRecordAEAD(t, rx)
	typ, pt, err := in.open(raw)
	if err != nil {
		t.Fatalf("open the peer's next record with the derived RX keys (seq %d): %v", rx.Seq, err)
	}
	if typ != recordApplicationData || string(pt) != "second record" {
		t.Fatalf("opened type %d %q, want application data %q", typ, pt, "second record")
	}
	out := newRecordAEAD(t, tx)
	if _, err := raw.Write(out.seal([]byte("sealed with derived keys"))); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, peer, len("sealed with derived keys")); got != "sealed with derived keys" {
		t.Fatalf("crypto/tls read %q", got)
	}
	// Closing the detached crypto/tls side must not send a
	// close_notify or close the socket the kernel would own.
	off.Close()
	if _, err := raw.Write(out.seal([]byte("still open"))); err != nil {
		t.Fatalf("tls.Conn.Close closed the socket: %v", err)
	}
	if got := readN(t, peer, len("still open")); got != "still open" {
		t.Fatalf("after tls.Conn.Close crypto/tls read %q", got)
	}
	raw.Close()
}

func readN(t *testing.T, r io.Reader, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return string(b)
}

// TestOffloadWithoutKTLS: on a kernel without kTLS (this development
// machine), Offload says so with ErrUnsupported and the connection keeps
// working in userspace.
func TestOffloadWithoutKTLS(t *testing.T) {
	caps, err := Probe()
	if err != nil {
		t.Fatal(err)
	}
	if caps.ULP {
		t.Skipf("this kernel has kTLS (%v); the VM tests cover the offload", caps)
	}
	ccfg, scfg := testConfigs(t, tls.VersionTLS13, 0)
	ln := loopbackListener(t)
	c, s := handshakePair(t, ln, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }, ccfg, scfg)
	_, err = c.Offload()
	var ue *UnsupportedError
	if !errors.As(err, &ue) {
		t.Fatalf("Offload = %v, want an *UnsupportedError", err)
	}
	t.Logf("Offload: %v", err)
	if _, err := c.Write([]byte("still userspace")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, s, len("still userspace")); got != "still userspace" {
		t.Fatalf("got %q", got)
	}
	if !bytes.Contains([]byte(caps.String()), []byte("no kTLS")) {
		t.Errorf("Capabilities.String() = %q, want it to say no kTLS", caps)
	}
}

// TestGetConfigForClient: a server whose config comes from
// GetConfigForClient (session tickets on, no key log) still gets the key
// log and no tickets, so its derived keys are right.
func TestGetConfigForClient(t *testing.T) {
	ccfg, scfg := testConfigs(t, tls.VersionTLS13, 0)
	inner := scfg.Clone()
	inner.SessionTicketsDisabled = false
	outer := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return inner, nil }}
	ccfg.ClientSessionCache = tls.NewLRUClientSessionCache(4) // would accept a ticket
	ln := loopbackListener(t)
	c, s := handshakePair(t, ln, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }, ccfg, outer)
	checkDerived(t, c, s, "server", CipherAESGCM128, VersionTLS13)
}

// TestStuckWriteBreaks: a write through the TLSConn blocked on a peer
// that does not read is broken by a deadline set while it blocks: the
// record reader must not hold a lock across the write (crypto/tls also
// breaks a stuck write, on Close or a cancelled handshake, that way).
func TestStuckWriteBreaks(t *testing.T) {
	ccfg, scfg := testConfigs(t, tls.VersionTLS13, 0)
	ln := loopbackListener(t)
	c, _ := handshakePair(t, ln, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }, ccfg, scfg)
	done := make(chan error, 1)
	go func() {
		_, err := c.Write(make([]byte, 64<<20)) // far more than the socket buffers hold
		done <- err
	}()
	// Wait (polling the kernel's send queue) until the write has filled
	// the socket and blocks.
	rc, _ := c.raw.Conn.(*net.TCPConn).SyscallConn()
	for deadline := time.Now().Add(10 * time.Second); ; {
		var outq int
		rc.Control(func(fd uintptr) { outq, _ = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
		if outq > 256<<10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the send queue never filled (%d bytes)", outq)
		}
		time.Sleep(time.Millisecond)
	}
	set := make(chan error, 1)
	go func() { set <- c.SetWriteDeadline(time.Now()) }()
	select {
	case err := <-set:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SetWriteDeadline blocked behind a stuck Write")
	}
	if err := <-done; err == nil {
		t.Fatal("a 64 MB write to a peer that does not read succeeded")
	}
}

// TestKeepInUserspace: after KeepInUserspace the connection carries data
// both ways as before (1 MiB, checked), reads are no longer cut at record
// boundaries, and Offload refuses.
func TestKeepInUserspace(t *testing.T) {
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			ccfg, scfg := testConfigs(t, v, 0)
			ln := loopbackListener(t)
			c, s := handshakePair(t, ln, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }, ccfg, scfg)
			c.KeepInUserspace()
			s.KeepInUserspace()
			msg := bytes.Repeat([]byte("fibmesh-"), 128<<10) // 1 MiB
			for _, dir := range []struct {
				name     string
				from, to *TLSConn
			}{{"client to server", c, s}, {"server to client", s, c}} {
				errc := make(chan error, 1)
				go func() { _, err := dir.from.Write(msg); errc <- err }()
				if got := readN(t, dir.to, len(msg)); got != string(msg) {
					t.Fatalf("%s: the bytes read differ from those written", dir.name)
				}
				if err := <-errc; err != nil {
					t.Fatalf("%s: write: %v", dir.name, err)
				}
			}
			_, err := c.Offload()
			var ue *UnsupportedError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), "KeepInUserspace") {
				t.Fatalf("Offload after KeepInUserspace = %v, want an *UnsupportedError naming it", err)
			}
		})
	}
}
