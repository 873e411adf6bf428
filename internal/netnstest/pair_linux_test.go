package netnstest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"hash"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/internal/testenv"
)

func TestPairNamespaces(t *testing.T) {
	p := NewPair(t)
	host, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{host: "the test's own"}
	for _, peer := range []*Peer{p.A, p.B} {
		var ns string
		var ifaces []string
		err := peer.Do(func() error {
			var err error
			if ns, err = os.Readlink("/proc/thread-self/ns/net"); err != nil {
				return err
			}
			list, err := net.Interfaces()
			for _, i := range list {
				ifaces = append(ifaces, i.Name)
			}
			return err
		})
		if err != nil {
			t.Fatalf("%s: Do: %v", peer.Name, err)
		}
		if other, dup := seen[ns]; dup {
			t.Errorf("%s runs in %s namespace (%s)", peer.Name, other, ns)
		}
		seen[ns] = peer.Name
		if want := "lo " + peer.Iface; strings.Join(ifaces, " ") != want {
			t.Errorf("%s: interfaces %q, want %q", peer.Name, ifaces, want)
		}
	}
	if p.A.Addr != netip.MustParseAddr("10.199.0.1") || p.B.Addr != netip.MustParseAddr("10.199.0.2") || p.A.Prefix.Bits() != 24 {
		t.Errorf("addresses %v, %v", p.A.Prefix, p.B.Prefix)
	}
	if p.Peer(p.A) != p.B || p.Peer(p.B) != p.A {
		t.Error("Peer does not return the other side")
	}
	// The test's own thread is where it was.
	if now, _ := os.Readlink("/proc/thread-self/ns/net"); now != host {
		t.Errorf("test thread moved to %s", now)
	}
}

func TestPairDoPanics(t *testing.T) {
	p := NewPair(t)
	defer func() {
		if v := recover(); v != "boom" {
			t.Errorf("recovered %v, want boom", v)
		}
	}()
	p.A.Do(func() error { panic("boom") })
}

func TestPairIPv6(t *testing.T) {
	p := NewPair(t, WithSubnet(netip.MustParsePrefix("fd00:199::/64")))
	ln := p.B.Listen(t, 0)
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("v6"))
			c.Close()
		}
	}()
	c := p.A.Dial(t, p.B.AddrPort(uint16(ln.Addr().(*net.TCPAddr).Port)))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "v6" {
		t.Fatalf("read %q, %v", b, err)
	}
	if got := fmt.Sprint(p.A.Addr); got != "fd00:199::1" {
		t.Errorf("A's address %s", got)
	}
}

// exchange sends aData from a's connection and bData from b's at the same
// time, each side half-closing when done and reading to EOF, so that when
// it returns both ends have seen all data and both FINs.
func exchange(t *testing.T, a, b net.Conn, aData, bData []byte) (gotAtA, gotAtB []byte) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	send := func(c net.Conn, data []byte) {
		defer wg.Done()
		if _, err := c.Write(data); err != nil {
			errs <- fmt.Errorf("write: %w", err)
			return
		}
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			if err := cw.CloseWrite(); err != nil {
				errs <- fmt.Errorf("close write: %w", err)
			}
		}
	}
	recv := func(c net.Conn, into *[]byte) {
		defer wg.Done()
		b, err := io.ReadAll(c)
		*into = b
		if err != nil {
			errs <- fmt.Errorf("read: %w", err)
		}
	}
	for _, c := range []net.Conn{a, b} {
		c.SetDeadline(time.Now().Add(2 * time.Minute))
	}
	wg.Add(4)
	go send(a, aData)
	go send(b, bData)
	go recv(a, &gotAtA)
	go recv(b, &gotAtB)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return gotAtA, gotAtB
}

// connect returns a connection from A to a listener in B, both ends.
func connect(t *testing.T, p *Pair) (a, b *net.TCPConn) {
	t.Helper()
	ln := p.B.Listen(t, 0)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	a = p.A.Dial(t, p.B.AddrPort(uint16(ln.Addr().(*net.TCPAddr).Port)))
	c, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close() })
	return a, c.(*net.TCPConn)
}

func TestCaptureTCP(t *testing.T) {
	p := NewPair(t)
	capture := p.A.Capture(t, CaptureConfig{MaxBytes: 16 << 20})
	a, b := connect(t, p)
	aData, bData := randomBytes(10, 8<<20), randomBytes(11, 5<<20+123)
	gotA, gotB := exchange(t, a, b, aData, bData)
	if !bytes.Equal(gotB, aData) || !bytes.Equal(gotA, bData) {
		t.Fatal("the connection did not carry the data")
	}
	res, err := capture.Stop()
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("frames %d (non-TCP %d, malformed %d), dropped %d", res.Frames, res.NonTCP, res.Malformed, res.Dropped)
	local := netip.MustParseAddrPort(a.LocalAddr().String())
	remote := netip.MustParseAddrPort(a.RemoteAddr().String())
	out, in := res.Conn(local, remote)
	if out == nil || in == nil {
		t.Fatalf("streams %v: missing a direction of %v <-> %v", res.Streams, local, remote)
	}
	for _, c := range []struct {
		st   *Stream
		want []byte
	}{{out, aData}, {in, bData}} {
		if err := c.st.Complete(); err != nil {
			t.Error(err)
		}
		if !c.st.FIN || c.st.Truncated || c.st.Len != int64(len(c.want)) {
			t.Errorf("%v -> %v: FIN %v, Truncated %v, Len %d (want %d)", c.st.Src, c.st.Dst, c.st.FIN, c.st.Truncated, c.st.Len, len(c.want))
		}
		if !bytes.Equal(c.st.Data, c.want) {
			t.Errorf("%v -> %v: captured payload differs from what was sent", c.st.Src, c.st.Dst)
		}
	}
	if res.Malformed != 0 {
		t.Errorf("%d malformed frames", res.Malformed)
	}
	// Stop is idempotent.
	if again, err := capture.Stop(); again != res || err != nil {
		t.Errorf("second Stop = %p, %v; want the first result", again, err)
	}
}

func TestCaptureCapAndSink(t *testing.T) {
	p := NewPair(t)
	var mu sync.Mutex
	hashes := map[netip.AddrPort]hash.Hash{}
	ln := p.B.Listen(t, 0)
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	capture := p.A.Capture(t, CaptureConfig{
		MaxBytes: 64 << 10,
		Port:     port,
		Sink: func(src, dst netip.AddrPort) io.Writer {
			mu.Lock()
			defer mu.Unlock()
			h := sha256.New()
			hashes[src] = h
			return h
		},
	})
	// Traffic on another port is not kept.
	other := p.B.Listen(t, 0)
	go func() {
		if c, err := other.Accept(); err == nil {
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	oc := p.A.Dial(t, p.B.AddrPort(uint16(other.Addr().(*net.TCPAddr).Port)))
	oc.Write([]byte("other port"))
	oc.Close()

	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a := p.A.Dial(t, p.B.AddrPort(port))
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	defer b.Close()
	data := randomBytes(12, 3<<20)
	exchange(t, a, b, data, []byte("ok"))
	res, err := capture.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Streams) != 2 {
		t.Fatalf("%d streams, want the two directions on port %d only", len(res.Streams), port)
	}
	st := res.Stream(netip.MustParseAddrPort(a.LocalAddr().String()), p.B.AddrPort(port))
	if st == nil {
		t.Fatal("no A -> B stream")
	}
	if err := st.Complete(); err != nil {
		t.Fatal(err)
	}
	if len(st.Data) != 64<<10 || !st.Truncated || st.Len != int64(len(data)) || !bytes.Equal(st.Data, data[:64<<10]) {
		t.Errorf("kept %d bytes (truncated %v) of %d; want the first 64 KiB of %d", len(st.Data), st.Truncated, st.Len, len(data))
	}
	want := sha256.Sum256(data)
	if got := hashes[st.Src].Sum(nil); !bytes.Equal(got, want[:]) {
		t.Errorf("sink hash %x, want %x (the whole stream)", got, want)
	}
}

// selfSigned returns a TLS certificate for the test server.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "netnstest"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("10.199.0.2")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestCaptureTLS shows the checks a kTLS test makes on the wire, here
// with Go's userspace TLS: every byte each way is a TLS record and none of
// the plaintext appears; a plain TCP connection fails both checks.
func TestCaptureTLS(t *testing.T) {
	for _, useTLS := range []bool{true, false} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			p := NewPair(t)
			aData, bData := randomBytes(20, 2<<20), randomBytes(21, 1<<20)
			checkers := map[netip.AddrPort]*TLSRecordChecker{}
			scanners := map[netip.AddrPort]*PlaintextScanner{}
			var mu sync.Mutex
			capture := p.A.Capture(t, CaptureConfig{MaxBytes: -1, Sink: func(src, dst netip.AddrPort) io.Writer {
				mu.Lock()
				defer mu.Unlock()
				plain := bData
				if src.Addr() == p.A.Addr {
					plain = aData
				}
				s, err := NewPlaintextScanner(plain, 0, 0)
				if err != nil {
					panic(err)
				}
				checkers[src], scanners[src] = &TLSRecordChecker{}, s
				return io.MultiWriter(checkers[src], s)
			}})
			a, b := connect(t, p)
			var ca, cb net.Conn = a, b
			if useTLS {
				cert := selfSigned(t)
				pool := x509.NewCertPool()
				leaf, _ := x509.ParseCertificate(cert.Certificate[0])
				pool.AddCert(leaf)
				ca = tls.Client(a, &tls.Config{RootCAs: pool, ServerName: "10.199.0.2", MinVersion: tls.VersionTLS13})
				cb = tls.Server(b, &tls.Config{Certificates: []tls.Certificate{cert}, SessionTicketsDisabled: true})
			}
			gotA, gotB := exchange(t, ca, cb, aData, bData)
			if !bytes.Equal(gotA, bData) || !bytes.Equal(gotB, aData) {
				t.Fatal("data differs")
			}
			res, err := capture.Stop()
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Streams) != 2 {
				t.Fatalf("%d streams, want 2", len(res.Streams))
			}
			for _, st := range res.Streams {
				if err := st.Complete(); err != nil {
					t.Fatal(err)
				}
				if len(st.Data) != 0 {
					t.Errorf("MaxBytes -1 kept %d bytes", len(st.Data))
				}
				cerr := checkers[st.Src].Close()
				m, leaked := scanners[st.Src].Found()
				if useTLS {
					if cerr != nil {
						t.Errorf("%v: not TLS records: %v", st.Src, cerr)
					}
					if leaked {
						t.Errorf("%v: plaintext on the wire at %+v", st.Src, m)
					}
					if n := checkers[st.Src].Count(RecordApplicationData); n < st.Len/MaxRecordLen {
						t.Errorf("%v: %d application data records for %d bytes", st.Src, n, st.Len)
					}
					continue
				}
				if cerr == nil {
					t.Errorf("%v: plain TCP passed the TLS record check", st.Src)
				}
				if !leaked || m.StreamOffset != 0 {
					t.Errorf("%v: plaintext not found at offset 0 (%+v, %v)", st.Src, m, leaked)
				}
			}
		})
	}
}

func TestCaptureStopWithoutTraffic(t *testing.T) {
	p := NewPair(t)
	c := p.B.Capture(t, CaptureConfig{})
	res, err := c.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Streams) != 0 {
		t.Errorf("streams %v without traffic", res.Streams)
	}
}

func TestDoAfterCleanup(t *testing.T) {
	testenv.NeedRoot(t)
	var peer *Peer
	t.Run("pair", func(t *testing.T) { peer = NewPair(t).A })
	if peer == nil {
		return // the subtest failed
	}
	err := peer.Do(func() error { return nil })
	if err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Do after cleanup: %v, want a closed-namespace error", err)
	}
}
