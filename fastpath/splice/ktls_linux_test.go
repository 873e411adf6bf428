package splice

import (
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/fastpath/ktls"
	"github.com/fibmesh/fibmesh/internal/loopback"
	"github.com/fibmesh/fibmesh/internal/testenv"
)

// These tests need kTLS: they skip on the development host and run in the
// kernel VM (make vmtest VMTEST_PKGS=./fastpath/splice, FIBMESH_VMTEST=1).

// ktlsBytes is how much each kTLS test moves each way: 100 MB, or
// FIBMESH_KTLS_BYTES.
func ktlsBytes() int64 {
	if v, err := strconv.ParseInt(os.Getenv("FIBMESH_KTLS_BYTES"), 10, 64); err == nil && v > 0 {
		return v
	}
	return 100 << 20
}

// ktlsRig is a joined pair whose kTLS side has a real kTLS peer: app is
// the application's end, far the peer's *ktls.Conn.
type ktlsRig struct {
	pair *Pair
	app  *net.TCPConn
	far  *ktls.Conn
}

func newKTLSRig(t *testing.T, mode Mode) *ktlsRig {
	t.Helper()
	needKTLS(t)
	if mode == ModeSockmap {
		needSockmapKTLS(t, false)
	}
	app, plain, err := loopback.TCPPair()
	if err != nil {
		t.Fatal(err)
	}
	wire, farTCP, err := loopback.TCPPair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close(); farTCP.Close() })
	opts := Options{Mode: mode}
	if mode == ModeSockmap {
		pr, err := sharedSockmap(t).Prepare(wire)
		if err != nil {
			t.Fatalf("Prepare: %v", err)
		}
		opts.Prepared = pr
	}
	a, b := randomKeys(), randomKeys()
	joined, err := ktls.NewConn(wire, a, b, nil, nil)
	if err != nil {
		t.Fatalf("kTLS on the joined socket: %v", err)
	}
	far, err := ktls.NewConn(farTCP, b, a, nil, nil)
	if err != nil {
		t.Fatalf("kTLS on the far socket: %v", err)
	}
	t.Cleanup(func() { far.Close() })
	pair, err := Join(plain, joined, opts)
	if err != nil {
		t.Fatalf("Join(%v): %v", mode, err)
	}
	t.Cleanup(func() { pair.Close() })
	return &ktlsRig{pair: pair, app: app, far: far}
}

// TestKTLSJoin moves 100 MB each way at once between a plaintext socket
// and a kTLS socket whose peer is kTLS too, then half-closes both ways:
// the application's EOF must reach the peer as close_notify (its Read
// returns io.EOF only after one) and the peer's close_notify must reach the
// application as EOF.
func TestKTLSJoin(t *testing.T) {
	n := ktlsBytes()
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			noLeaks(t)
			r := newKTLSRig(t, mode)
			type result struct {
				n   int64
				sum string
				err error
			}
			toFar, toApp := make(chan result, 1), make(chan result, 1)
			go func() { n, s, err := receive(r.far); toFar <- result{n, s, err} }()
			go func() { n, s, err := receive(r.app); toApp <- result{n, s, err} }()
			start := time.Now()
			errc := make(chan error, 2)
			go func() { errc <- send(r.app, 1, n) }()
			go func() {
				_, err := io.Copy(r.far, newStream(2, n))
				if err == nil {
					err = r.far.CloseWrite() // close_notify, FIN
				}
				errc <- err
			}()
			for range 2 {
				if err := <-errc; err != nil {
					t.Fatalf("send: %v", err)
				}
			}
			for _, c := range []struct {
				name string
				ch   chan result
				seed byte
			}{{"kTLS peer", toFar, 1}, {"application", toApp, 2}} {
				select {
				case got := <-c.ch:
					if got.err != nil || got.n != n || got.sum != sum(c.seed, n) {
						t.Errorf("%s received %d bytes (sum %.12s, err %v), want %d then EOF (sum %.12s)", c.name, got.n, got.sum, got.err, n, sum(c.seed, n))
					}
				case <-time.After(10 * time.Minute):
					t.Fatalf("%s: no EOF after 10 minutes", c.name)
				}
			}
			t.Logf("%v: %d MiB each way in %v", mode, n>>20, time.Since(start).Round(time.Millisecond))
			within(t, time.Minute, "Wait", r.pair.Wait)
			if got, want := r.pair.Counters(), (Counters{PlainToTLS: uint64(n), TLSToPlain: uint64(n)}); got != want {
				t.Errorf("Counters() = %+v, want %+v", got, want)
			}
		})
	}
}

// TestKTLSCloseNotify checks the half-close order the other way round (the
// peer's close_notify first, the application still sending after it), and
// that a peer which closes TCP without close_notify fails the join and
// resets the application instead of ending its stream cleanly.
func TestKTLSCloseNotify(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String()+"/peer-first", func(t *testing.T) {
			noLeaks(t)
			r := newKTLSRig(t, mode)
			if _, err := r.far.Write([]byte("bye")); err != nil {
				t.Fatal(err)
			}
			if err := r.far.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			r.app.SetReadDeadline(time.Now().Add(time.Minute))
			if got, err := io.ReadAll(r.app); err != nil || string(got) != "bye" {
				t.Fatalf("application read %q, %v; want \"bye\" then EOF", got, err)
			}
			if _, err := r.app.Write([]byte("still here")); err != nil {
				t.Fatal(err)
			}
			r.app.CloseWrite()
			r.far.SetReadDeadline(time.Now().Add(time.Minute))
			if got, err := io.ReadAll(r.far); err != nil || string(got) != "still here" {
				t.Fatalf("peer read %q, %v; want \"still here\" then close_notify", got, err)
			}
			within(t, time.Minute, "Wait", r.pair.Wait)
		})
		t.Run(mode.String()+"/truncated", func(t *testing.T) {
			noLeaks(t)
			r := newKTLSRig(t, mode)
			if _, err := r.far.Write([]byte("cut")); err != nil {
				t.Fatal(err)
			}
			r.far.TCPConn().CloseWrite() // FIN, no close_notify
			var err error
			within(t, time.Minute, "Wait", func() error { err = r.pair.Wait(); return nil })
			if !errors.Is(err, ktls.ErrTruncated) {
				t.Errorf("Wait() = %v, want ktls.ErrTruncated", err)
			}
			r.app.SetReadDeadline(time.Now().Add(time.Minute))
			if _, err := io.ReadAll(r.app); err == nil {
				t.Error("application saw a clean EOF after a truncated TLS stream, want a reset")
			}
		})
	}
}

var selfTestResult struct {
	once sync.Once
	err  error
}

// sockmapKTLS runs the self-test once per test binary.
func sockmapKTLS(t testing.TB) error {
	t.Helper()
	sm := sharedSockmap(t)
	selfTestResult.once.Do(func() {
		before, _ := sm.Stats()
		selfTestResult.err = sm.SelfTest()
		after, _ := sm.Stats()
		for i := range after {
			if d := after[i].Msgs - before[i].Msgs; d > 0 {
				t.Logf("self-test verdicts %s: %d messages, %d bytes", after[i].Reason, d, after[i].Bytes-before[i].Bytes)
			}
		}
	})
	return selfTestResult.err
}

// kernelLimit reports whether the self-test failed on a limit of the
// kernel (UnprovenError.Limit), not a fault of the byte path.
func kernelLimit(err error) bool {
	var ue *UnprovenError
	return errors.As(err, &ue) && ue.Limit
}

// needSockmapKTLS skips a ModeSockmap test over kTLS where the kernel
// cannot put a kTLS socket in a sockhash, and fails it where the
// self-test found a fault. Where the self-test found the bulk going
// through userspace (a kernel limit), a test of correctness runs and a
// test of the in-kernel path (inKernel) skips.
func needSockmapKTLS(t testing.TB, inKernel bool) {
	t.Helper()
	err := sockmapKTLS(t)
	var ue *UnprovenError
	switch {
	case err == nil:
	case kernelLimit(err) && errors.As(err, &ue) && ue.Step != "in-kernel":
		t.Skipf("this kernel cannot put kTLS sockets in a sockhash: %v", err)
	case kernelLimit(err) && inKernel:
		t.Skipf("this kernel sends the peer's bulk through userspace, nothing in-kernel to check: %v", err)
	case kernelLimit(err):
		t.Logf("testing the sockmap join for correctness only: %v", err)
	default:
		t.Fatalf("the sockmap self-test failed: %v", err)
	}
}

// TestKTLSSelfTest runs the sockmap self-test where kTLS exists. It must
// pass, or fail on a kernel limit, said clearly; a failure at any other
// step (bytes lost or corrupted, plaintext on the wire, a close_notify not
// propagated) is a fault in the byte path.
func TestKTLSSelfTest(t *testing.T) {
	needKTLS(t)
	err := sockmapKTLS(t)
	switch {
	case err == nil:
		t.Log("sockmap with kTLS proven on this kernel")
	case kernelLimit(err):
		t.Logf("sockmap with kTLS not proven on this kernel, a kernel limit: %v", err)
	default:
		t.Fatalf("SelfTest: %v", err)
	}
}

// TestKTLSNoUserspaceCopy is TestNoUserspaceCopy with kTLS on both ends
// of the wire connection: the payload crosses kTLS in the kernel and never
// the joining process.
func TestKTLSNoUserspaceCopy(t *testing.T) {
	testenv.NeedRoot(t)
	needKTLS(t)
	n := min(ktlsBytes(), 64<<20)
	const slack = 256 << 10
	for _, c := range []struct {
		eng    engine
		copies bool
	}{
		{engine{name: "splice", mode: ModeSplice}, false},
		{engine{name: "sockmap", mode: ModeSockmap}, false},
		{copyEngine, true},
	} {
		t.Run(c.eng.name, func(t *testing.T) {
			if c.eng.mode == ModeSockmap {
				needSockmapKTLS(t, true)
			}
			m := transfer(t, c.eng, n, true)
			t.Logf("%s over kTLS: %v", c.eng.name, m)
			if !m.SyscallCounted {
				t.Skip("no syscall byte counter on this kernel")
			}
			if c.copies {
				if m.ReadSyscalls < uint64(2*n) || m.WriteSyscalls < uint64(2*n) {
					t.Errorf("the copy engine's syscalls carried %d bytes in and %d out, want at least %d each", m.ReadSyscalls, m.WriteSyscalls, 2*n)
				}
				return
			}
			if m.ReadSyscalls > slack || m.WriteSyscalls > slack {
				t.Errorf("the joiner's syscalls carried %d bytes in and %d out while %d bytes went each way: payload went through userspace", m.ReadSyscalls, m.WriteSyscalls, n)
			}
		})
	}
}
