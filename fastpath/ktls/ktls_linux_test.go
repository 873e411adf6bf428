package ktls

import (
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/internal/loopback"
	"github.com/fibmesh/fibmesh/internal/netnstest"
	"github.com/fibmesh/fibmesh/internal/vmcheck"
)

// needKTLS skips without kTLS, except inside `make vmtest`, where a
// missing kTLS is a failure.
func needKTLS(t *testing.T) *Capabilities {
	t.Helper()
	caps, err := Probe()
	if err != nil {
		t.Fatal(err)
	}
	if !caps.ULP {
		if vmcheck.InVM() {
			t.Fatalf("inside the VM kTLS must work: %v", caps)
		}
		t.Skipf("needs kTLS (%s): run `make vmtest`", caps.ULPError)
	}
	return caps
}

// TestProbe: the VM's kernel (Debian 6.1) offers every suite both ways.
func TestProbe(t *testing.T) {
	caps := needKTLS(t)
	t.Logf("%v", caps)
	for _, s := range caps.Suites {
		if !s.TX || !s.RX {
			t.Errorf("%v %v: TX %v RX %v: %s", s.Version, s.Cipher, s.TX, s.RX, s.Reason)
		}
		if err := caps.Supports(s.Version, s.Cipher, TX); (err == nil) != s.TX {
			t.Errorf("Supports(%v, %v, TX) = %v, want ok=%v", s.Version, s.Cipher, err, s.TX)
		}
	}
	if caps.Stat == nil {
		t.Error("no /proc/net/tls_stat with kTLS loaded")
	}
}

// bulkSize is how much each direction carries in the transfer tests.
const bulkSize = 100 << 20

// offloadPair handshakes over ln/dial with suite tc, sends some data
// through crypto/tls first (the server reads only part of it), offloads
// both ends and checks the plaintext crypto/tls held is handed back.
func offloadPair(t *testing.T, ln net.Listener, dial func() (net.Conn, error), version, suite uint16) (client, server *Conn) {
	t.Helper()
	if version == tls.VersionTLS13 {
		forceTLS13Suite(t, suite)
	}
	ccfg, scfg := testConfigs(t, version, suite)
	c, s := handshakePair(t, ln, dial, ccfg, scfg)
	if _, err := c.Write([]byte("before offload")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, s, 7); got != "before " {
		t.Fatalf("crypto/tls read %q", got)
	}
	kc, err := c.Offload()
	if err != nil {
		t.Fatalf("client Offload: %v", err)
	}
	ks, err := s.Offload()
	if err != nil {
		kc.Close()
		t.Fatalf("server Offload: %v", err)
	}
	t.Cleanup(func() { kc.Close(); ks.Close() })
	if got := readN(t, ks, 7); got != "offload" {
		t.Fatalf("after Offload the server read %q, want the plaintext crypto/tls held (%q)", got, "offload")
	}
	return kc, ks
}

// stream writes n pseudo-random bytes (seeded) to w and returns their
// SHA-256; sink reads r to EOF and returns the count and SHA-256.
func stream(w io.Writer, seed uint64, n int64) ([32]byte, error) {
	h := sha256.New()
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	buf := make([]byte, 256<<10)
	for n > 0 {
		b := buf[:min(int64(len(buf)), n)]
		rng.Read(b)
		h.Write(b)
		if _, err := w.Write(b); err != nil {
			return [32]byte{}, err
		}
		n -= int64(len(b))
	}
	return [32]byte(h.Sum(nil)), nil
}

func sink(r io.Reader) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r, make([]byte, 256<<10))
	return n, [32]byte(h.Sum(nil)), err
}

// closeWriter is a connection that can send close_notify and shut down
// its sending half: *Conn and *tls.Conn.
type closeWriter interface {
	io.ReadWriter
	CloseWrite() error
}

// transfer moves n bytes each way at once, ends each direction with
// close_notify and checks counts, checksums and a clean io.EOF.
func transfer(t *testing.T, a, b closeWriter, n int64) {
	t.Helper()
	type result struct {
		dir     string
		sent    [32]byte
		got     int64
		gotHash [32]byte
		err     error
	}
	run := func(dir string, from, to closeWriter, seed uint64) chan result {
		ch := make(chan result, 1)
		go func() {
			var r result
			r.dir = dir
			done := make(chan error, 1)
			go func() {
				var err error
				r.got, r.gotHash, err = sink(to)
				done <- err
			}()
			var err error
			if r.sent, err = stream(from, seed, n); err == nil {
				err = from.CloseWrite()
			}
			r.err = errors.Join(err, <-done)
			ch <- r
		}()
		return ch
	}
	start := time.Now()
	ab, ba := run("a→b", a, b, 1), run("b→a", b, a, 2)
	for _, ch := range []chan result{ab, ba} {
		r := <-ch
		if r.err != nil {
			t.Errorf("%s: %v", r.dir, r.err)
			continue
		}
		if r.got != n || r.gotHash != r.sent {
			t.Errorf("%s: received %d bytes sha256 %x, sent %d bytes sha256 %x", r.dir, r.got, r.gotHash, n, r.sent)
		}
	}
	el := time.Since(start)
	t.Logf("%d MB each way in %v (%.1f MB/s each way), close_notify both ways", n>>20, el.Round(time.Millisecond), float64(n)/el.Seconds()/1e6)
}

// TestTransfer: for every suite, two peers in two network namespaces
// over a veth, kTLS on both sides, bulk data each way with equal
// checksums and close_notify ending each direction; a capture on the veth
// proves the wire carried well-formed TLS records and none of the
// plaintext.
func TestTransfer(t *testing.T) {
	needKTLS(t)
	for _, tc := range suiteCases {
		t.Run(tc.name, func(t *testing.T) {
			n := int64(bulkSize)
			if tc.version == tls.VersionTLS12 && tc.cipher != CipherAESGCM128 {
				n = 8 << 20 // TLS 1.2 matters for NIC offload, which is AES-128-GCM only
			}
			pair := netnstest.NewPair(t)
			const port = 8443
			ln := pair.B.Listen(t, port)
			type wire struct {
				records *netnstest.TLSRecordChecker
				plain   *netnstest.PlaintextScanner
			}
			wires := map[netip.AddrPort]*wire{}
			var mu sync.Mutex
			capture := pair.A.Capture(t, netnstest.CaptureConfig{MaxBytes: -1, Port: port,
				Sink: func(src, dst netip.AddrPort) io.Writer {
					seed := uint64(1) // client to server
					if src.Port() == port {
						seed = 2
					}
					sc, err := netnstest.NewPlaintextScanner(plaintext(seed, n), 0, 0)
					if err != nil {
						t.Error(err)
						return nil
					}
					w := &wire{records: &netnstest.TLSRecordChecker{}, plain: sc}
					mu.Lock()
					wires[src] = w
					mu.Unlock()
					return io.MultiWriter(w.records, w.plain)
				}})
			kc, ks := offloadPair(t, ln, func() (net.Conn, error) {
				return pair.A.Dial(t, pair.B.AddrPort(port)), nil
			}, tc.version, tc.suite)
			if kc.State().Cipher != tc.cipher || kc.State().Version != Version(tc.version) {
				t.Fatalf("state %+v, want %v %v", kc.State(), Version(tc.version), tc.cipher)
			}
			transfer(t, kc, ks, n)
			res, err := capture.Stop()
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(res.Streams) != 2 {
				t.Fatalf("captured %d directions, want 2", len(res.Streams))
			}
			for _, st := range res.Streams {
				w := wires[st.Src]
				if w == nil {
					t.Fatalf("no sink for %v", st.Src)
				}
				if err := st.Complete(); err != nil {
					t.Errorf("%v→%v: capture incomplete (%d frames dropped): %v", st.Src, st.Dst, res.Dropped, err)
				}
				if err := errors.Join(w.records.Err(), w.records.Close()); err != nil {
					t.Errorf("%v→%v: the wire is not a sequence of TLS records: %v", st.Src, st.Dst, err)
				}
				if m, found := w.plain.Found(); found {
					t.Errorf("%v→%v: plaintext on the wire: bytes %d.. of the data at stream offset %d", st.Src, st.Dst, m.PlaintextOffset, m.StreamOffset)
				}
				if st.Len < n {
					t.Errorf("%v→%v: %d bytes on the wire, less than the %d sent", st.Src, st.Dst, st.Len, n)
				}
				t.Logf("%v→%v: %d bytes on the wire in %d TLS records (%d application_data), %d plaintext windows sampled, none found",
					st.Src, st.Dst, st.Len, w.records.Records(), w.records.Count(netnstest.RecordApplicationData), w.plain.Samples())
			}
		})
	}
}

// plaintext is what stream(w, seed, n) sends.
func plaintext(seed uint64, n int64) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

// TestInteropCryptoTLS: the kernel's records and crypto/tls's agree: kTLS
// on one side, crypto/tls in userspace on the other, each suite.
func TestInteropCryptoTLS(t *testing.T) {
	needKTLS(t)
	for _, tc := range suiteCases {
		for _, side := range []string{"client", "server"} {
			t.Run(tc.name+"/kTLS-"+side, func(t *testing.T) {
				if tc.version == tls.VersionTLS13 {
					forceTLS13Suite(t, tc.suite)
				}
				ccfg, scfg := testConfigs(t, tc.version, tc.suite)
				ln := loopbackListener(t)
				c, s := handshakePair(t, ln, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }, ccfg, scfg)
				off, user := c, s
				if side == "server" {
					off, user = s, c
				}
				k, err := off.Offload()
				if err != nil {
					t.Fatal(err)
				}
				defer k.Close()
				transfer(t, k, user.Conn, 4<<20)
			})
		}
	}
}

// TestAlert: a fatal alert from the peer is an *AlertError, not EOF.
func TestAlert(t *testing.T) {
	needKTLS(t)
	ln := loopbackListener(t)
	kc, ks := offloadPair(t, ln, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }, tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256)
	if err := sendRecordForTest(kc, recordAlert, []byte{2, 40}); err != nil {
		t.Fatal(err)
	}
	_, err := ks.Read(make([]byte, 100))
	var ae *AlertError
	if !errors.As(err, &ae) || ae.Description != 40 || ae.Level != 2 {
		t.Fatalf("Read = %v, want a fatal handshake_failure alert", err)
	}
	if _, err2 := ks.Read(make([]byte, 100)); !errors.Is(err2, err) && err2.Error() != err.Error() {
		t.Errorf("second Read = %v, want the same error again", err2)
	}
	t.Logf("%v", err)
}

// TestCloseNotify: close_notify is io.EOF; TCP FIN without it is
// ErrTruncated.
func TestCloseNotify(t *testing.T) {
	needKTLS(t)
	ln := loopbackListener(t)
	kc, ks := offloadPair(t, ln, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }, tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256)
	if _, err := kc.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	if err := kc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(ks)
	if err != nil || string(b) != "last words" {
		t.Fatalf("ReadAll = %q, %v; want %q, nil (io.EOF at close_notify)", b, err, "last words")
	}
	if _, err := kc.Write([]byte("x")); err == nil {
		t.Error("Write after CloseWrite succeeded")
	}
	// The other way: a bare FIN.
	if err := ks.TCPConn().CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(kc); !errors.Is(err, ErrTruncated) {
		t.Fatalf("ReadAll after a FIN without close_notify = %v, want ErrTruncated", err)
	}
}

// TestKeyUpdate: a peer's KeyUpdate re-keys where the kernel can, and
// otherwise fails the connection loudly (with an alert to the peer).
func TestKeyUpdate(t *testing.T) {
	caps := needKTLS(t)
	ln := loopbackListener(t)
	kc, ks := offloadPair(t, ln, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }, tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256)
	if caps.Rekey {
		if err := kc.UpdateKeys(true); err != nil {
			t.Fatal(err)
		}
		transfer(t, kc, ks, 1<<20)
		return
	}
	// This kernel cannot re-key: a peer's KeyUpdate must fail the
	// connection, never let records under the next key be misread.
	if err := sendRecordForTest(kc, recordHandshake, []byte{handshakeKeyUpdate, 0, 0, 1, 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Read(make([]byte, 100)); !errors.Is(err, ErrKeyUpdate) {
		t.Fatalf("Read after a KeyUpdate = %v, want ErrKeyUpdate", err)
	} else {
		t.Logf("receiver: %v", err)
	}
	_, err := kc.Read(make([]byte, 100))
	var ae *AlertError
	if !errors.As(err, &ae) || ae.Description != alertInternalError {
		t.Fatalf("sender Read = %v, want the receiver's internal_error alert", err)
	}
	if err := kc.UpdateKeys(false); err == nil {
		t.Error("UpdateKeys succeeded on a kernel without re-keying")
	}
}

// TestWrongKeyFails: a record under the wrong key is an EBADMSG error;
// no byte of it is returned.
func TestWrongKeyFails(t *testing.T) {
	needKTLS(t)
	ln := loopbackListener(t)
	a, b, err := loopback.Pair(ln)
	if err != nil {
		t.Fatal(err)
	}
	k1, k2, k3 := randomKeys(VersionTLS13, CipherAESGCM128), randomKeys(VersionTLS13, CipherAESGCM128), randomKeys(VersionTLS13, CipherAESGCM128)
	ka, err := NewConn(a, k1, k2, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ka.Close()
	kb, err := NewConn(b, k2, k3, nil, nil) // RX should have been k1
	if err != nil {
		t.Fatal(err)
	}
	defer kb.Close()
	if _, err := ka.Write([]byte("secret")); err != nil {
		t.Fatal(err)
	}
	n, err := kb.Read(make([]byte, 100))
	if n != 0 || err == nil {
		t.Fatalf("Read = %d, %v; want 0 and an authentication error", n, err)
	}
	t.Logf("%v", err)
}

// TestUnsupported: the typed fallback. A suite with no kTLS cipher (TLS
// 1.2 CBC) is refused by Offload before the socket is touched and the
// connection goes on in userspace; a cipher the kernel lacks is an
// *UnsupportedError from the kernel's own refusal.
func TestUnsupported(t *testing.T) {
	needKTLS(t)
	ccfg, scfg := testConfigs(t, tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA)
	ln := loopbackListener(t)
	c, s := handshakePair(t, ln, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }, ccfg, scfg)
	_, err := c.Offload()
	var ue *UnsupportedError
	if !errors.As(err, &ue) || !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Offload of a CBC suite = %v, want an *UnsupportedError", err)
	}
	t.Logf("CBC: %v", err)
	if _, err := c.Write([]byte("userspace")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, s, 9); got != "userspace" {
		t.Fatalf("got %q", got)
	}

	// ARIA-GCM (57) arrived in Linux 6.2; 6.1 refuses it. On newer
	// kernels use a cipher number nobody has.
	for _, cipher := range []Cipher{57, 99} {
		for _, d := range []Direction{TX, RX} {
			a, b, err := loopback.Pair(ln)
			if err != nil {
				t.Fatal(err)
			}
			ra, _ := a.SyscallConn()
			if err := EnableULP(ra); err != nil {
				t.Fatal(err)
			}
			err = setRawCipherForTest(&Conn{tcp: a, rc: ra}, d, cipher)
			a.Close()
			b.Close()
			if err == nil {
				if cipher == 57 {
					t.Logf("this kernel has ARIA-GCM (Linux 6.2+)")
					continue
				}
				t.Fatalf("the kernel took cipher %d %v", cipher, d)
			}
			if !errors.As(err, &ue) || ue.Direction != d {
				t.Fatalf("cipher %d %v: %v, want an *UnsupportedError for %v", cipher, d, err, d)
			}
			t.Logf("cipher %d %v: %v", cipher, d, err)
		}
	}
}
