package splice

import (
	"bytes"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/fibmesh/fibmesh/internal/loopback"
	"github.com/fibmesh/fibmesh/internal/testenv"
)

// TestJoinMovesBytes pushes 64 MiB each way at once through a joined pair,
// with the kTLS side played by plain TCP, and checks every byte, the
// counters and a clean end.
func TestJoinMovesBytes(t *testing.T) {
	const n = 64 << 20
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			noLeaks(t)
			if mode == ModeSockmap {
				testenv.NeedRoot(t)
			}
			r := newRig(t, setup{mode: mode})
			type result struct {
				n   int64
				sum string
				err error
			}
			toFar, toApp := make(chan result, 1), make(chan result, 1)
			go func() { n, s, err := receive(r.far); toFar <- result{n, s, err} }()
			go func() { n, s, err := receive(r.app); toApp <- result{n, s, err} }()
			within(t, 60*time.Second, "app sends", func() error { return send(r.app, 1, n) })
			within(t, 60*time.Second, "far end sends", func() error { return send(r.far, 2, n) })
			for _, c := range []struct {
				name string
				ch   chan result
				seed byte
			}{{"far end", toFar, 1}, {"app", toApp, 2}} {
				select {
				case got := <-c.ch:
					if got.err != nil || got.n != n || got.sum != sum(c.seed, n) {
						t.Errorf("%s received %d bytes (sum %.12s, err %v), want %d (sum %.12s)", c.name, got.n, got.sum, got.err, n, sum(c.seed, n))
					}
				case <-time.After(60 * time.Second):
					t.Fatalf("%s: no EOF after 60 s", c.name)
				}
			}
			within(t, 10*time.Second, "Wait", r.pair.Wait)
			if got, want := r.pair.Counters(), (Counters{PlainToTLS: n, TLSToPlain: n}); got != want {
				t.Errorf("Counters() = %+v, want %+v", got, want)
			}
		})
	}
}

// TestHalfClose checks that each side's EOF reaches the other while the
// other direction keeps flowing.
func TestHalfClose(t *testing.T) {
	for _, mode := range modes {
		for _, first := range []string{"app", "far"} {
			t.Run(mode.String()+"/"+first+"-first", func(t *testing.T) {
				noLeaks(t)
				if mode == ModeSockmap {
					testenv.NeedRoot(t)
				}
				r := newRig(t, setup{mode: mode})
				a, b := r.app, r.far
				if first == "far" {
					a, b = r.far, r.app
				}
				// a says hello and closes its sending half.
				if _, err := a.Write([]byte("hello")); err != nil {
					t.Fatal(err)
				}
				if err := a.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				b.SetReadDeadline(time.Now().Add(10 * time.Second))
				got, err := io.ReadAll(b)
				if err != nil || string(got) != "hello" {
					t.Fatalf("%s first: other end read %q, %v; want \"hello\" then EOF", first, got, err)
				}
				// The other direction still works.
				if _, err := b.Write([]byte("world")); err != nil {
					t.Fatal(err)
				}
				if err := b.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				a.SetReadDeadline(time.Now().Add(10 * time.Second))
				got, err = io.ReadAll(a)
				if err != nil || string(got) != "world" {
					t.Fatalf("%s first: read back %q, %v; want \"world\" then EOF", first, got, err)
				}
				within(t, 10*time.Second, "Wait", r.pair.Wait)
				if got, want := r.pair.Counters(), (Counters{PlainToTLS: 5, TLSToPlain: 5}); got != want {
					t.Errorf("Counters() = %+v, want %+v", got, want)
				}
			})
		}
	}
}

// TestPeerReset checks that a reset on either side fails the pair with
// the reset, and resets the other side instead of closing it cleanly.
func TestPeerReset(t *testing.T) {
	for _, mode := range modes {
		for _, who := range []string{"app", "far"} {
			t.Run(mode.String()+"/"+who, func(t *testing.T) {
				noLeaks(t)
				if mode == ModeSockmap {
					testenv.NeedRoot(t)
				}
				r := newRig(t, setup{mode: mode})
				resetter, other := r.app, r.far
				if who == "far" {
					resetter, other = r.far, r.app
				}
				if _, err := resetter.Write([]byte("before the reset")); err != nil {
					t.Fatal(err)
				}
				other.SetReadDeadline(time.Now().Add(10 * time.Second))
				buf := make([]byte, 16)
				if _, err := io.ReadFull(other, buf); err != nil {
					t.Fatalf("read before the reset: %v", err)
				}
				resetter.SetLinger(0)
				resetter.Close()
				var err error
				within(t, 10*time.Second, "Wait", func() error { err = r.pair.Wait(); return nil })
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("Wait() = %v, want an error wrapping ECONNRESET", err)
				}
				// The application must not see a clean EOF after a cut.
				// (The stand-in for kTLS sees a FIN first: a real kTLS
				// peer reads that as a truncation, no close_notify.)
				if who == "far" {
					_, rerr := io.ReadAll(other)
					if !errors.Is(rerr, syscall.ECONNRESET) {
						t.Errorf("application after the far end's reset: %v, want ECONNRESET", rerr)
					}
				}
			})
		}
	}
}

// TestClose checks that Close tears the pair down at once: the ends are
// reset, Wait returns nil, nothing is left in the sockmap, no goroutine
// is left behind.
func TestClose(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			noLeaks(t)
			if mode == ModeSockmap {
				testenv.NeedRoot(t)
			}
			r := newRig(t, setup{mode: mode})
			if _, err := r.app.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			r.far.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(r.far, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			within(t, 10*time.Second, "Close", r.pair.Close)
			select {
			case <-r.pair.Done():
			default:
				t.Fatal("Done not closed after Close")
			}
			if err := r.pair.Wait(); err != nil {
				t.Errorf("Wait after Close = %v, want nil", err)
			}
			r.app.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadAll(r.app); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("application after Close: %v, want ECONNRESET", err)
			}
			if got := r.pair.Counters(); got != (Counters{PlainToTLS: 1}) {
				t.Errorf("Counters() = %+v, want {PlainToTLS:1}", got)
			}
			if mode == ModeSockmap {
				sm := sharedSockmap(t)
				e := r.pair.eng.(*sockmapEngine)
				for _, ck := range []uint64{e.plainCk, e.tlsCk} {
					for name, m := range map[string]*ebpf.Map{"socks": sm.objs.Socks, "peers": sm.objs.Peers, "socket_stats": sm.objs.SocketStats} {
						var v []byte
						if err := m.Lookup(ck, &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
							t.Errorf("%s still has socket %#x after Close (lookup: %v)", name, ck, err)
						}
					}
				}
			}
		})
	}
}

// TestPendingFirst checks that plaintext already in userspace on either
// side goes out before what the kernel moves, and that bytes queued on the
// sockets before Join (which ModeSockmap reads out first) are not lost or
// reordered.
func TestPendingFirst(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			noLeaks(t)
			if mode == ModeSockmap {
				testenv.NeedRoot(t)
			}
			queuedApp := bytes.Repeat([]byte("q"), 300<<10)
			queuedFar := bytes.Repeat([]byte("Q"), 16<<10) // within the receive window
			r := newRig(t, setup{
				mode:         mode,
				pending:      []byte("tls-pending|"),
				plainPending: []byte("plain-pending|"),
				before: func(app, far *net.TCPConn) {
					app.Write(queuedApp)
					far.Write(queuedFar)
				},
			})
			// Nothing is written after Join: bytes queued before it must
			// arrive without more traffic to wake anything up.
			r.app.CloseWrite()
			r.far.CloseWrite()
			r.far.SetReadDeadline(time.Now().Add(10 * time.Second))
			r.app.SetReadDeadline(time.Now().Add(10 * time.Second))
			gotFar, err := io.ReadAll(r.far)
			if err != nil {
				t.Fatalf("far end: %v after %d of %d bytes", err, len(gotFar), len("plain-pending|")+len(queuedApp))
			}
			if want := append([]byte("plain-pending|"), queuedApp...); !bytes.Equal(gotFar, want) {
				t.Errorf("far end got %d bytes starting %q, want %d starting %q", len(gotFar), head(gotFar), len(want), head(want))
			}
			gotApp, err := io.ReadAll(r.app)
			if err != nil {
				t.Fatalf("app: %v after %d of %d bytes", err, len(gotApp), len("tls-pending|")+len(queuedFar))
			}
			if want := append([]byte("tls-pending|"), queuedFar...); !bytes.Equal(gotApp, want) {
				t.Errorf("app got %d bytes starting %q, want %d starting %q", len(gotApp), head(gotApp), len(want), head(want))
			}
			within(t, 10*time.Second, "Wait", r.pair.Wait)
		})
	}
}

func head(b []byte) []byte { return b[:min(len(b), 16)] }

// TestJoinErrors is the table of joins that must be refused.
func TestJoinErrors(t *testing.T) {
	noLeaks(t)
	a, b, err := loopback.TCPPair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	for _, c := range []struct {
		name  string
		plain *net.TCPConn
		tls   Offloaded
		opts  Options
	}{
		{"no plaintext socket", nil, &standIn{TCPConn: b}, Options{}},
		{"no kTLS socket", a, nil, Options{}},
		{"sockmap without Prepare", a, &standIn{TCPConn: b}, Options{Mode: ModeSockmap}},
		{"unknown mode", a, &standIn{TCPConn: b}, Options{Mode: 42}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Join(c.plain, c.tls, c.opts); !errors.Is(err, ErrUnsupported) {
				t.Errorf("Join = %v, want ErrUnsupported", err)
			}
		})
	}
	// ErrUnsupported means the sockets were not touched.
	if _, err := a.Write([]byte("still open")); err != nil {
		t.Errorf("socket unusable after a refused Join: %v", err)
	}
}
