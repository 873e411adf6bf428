package splice

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	mrand "math/rand/v2"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fibmesh/fibmesh/fastpath/ktls"
	"github.com/fibmesh/fibmesh/internal/loopback"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/internal/vmcheck"
)

// noLeaks fails the test if it leaves goroutines behind. Register it
// first so that it runs after every other cleanup.
func noLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// haveKTLS reports whether the kernel takes the tls ULP, and why not.
func haveKTLS() (bool, error) {
	err := probeKTLS()
	if errors.Is(err, ktls.ErrUnsupported) {
		return false, err
	}
	return err == nil, err
}

// needKTLS skips a test unless the kernel has kTLS, and fails it inside
// the kernel VM (make vmtest), which exists to provide it.
func needKTLS(t testing.TB) {
	t.Helper()
	vmcheck.NeedULP(t, "tls")
}

// standIn is a plain TCP socket in the place of *ktls.Conn, for kernels
// without kTLS: its FIN plays close_notify.
type standIn struct {
	*net.TCPConn
	mu      sync.Mutex
	pending []byte
}

func (s *standIn) Pending() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pending
	s.pending = nil
	return p
}

var testSockmap struct {
	once sync.Once
	sm   *Sockmap
	err  error
}

// sharedSockmap is one Sockmap for the whole test binary, as in an agent.
// It is never closed (its maps go with the process).
func sharedSockmap(t testing.TB) *Sockmap {
	t.Helper()
	testenv.NeedRoot(t)
	testSockmap.once.Do(func() { testSockmap.sm, testSockmap.err = OpenSockmap(SockmapOptions{MaxSockets: 1024}) })
	if testSockmap.err != nil {
		t.Fatalf("OpenSockmap: %v", testSockmap.err)
	}
	return testSockmap.sm
}

// rig is a joined pair and the two ends a test drives: app is the
// application's end of the plaintext connection, far the kTLS peer's end.
type rig struct {
	pair *Pair
	app  *net.TCPConn
	far  *net.TCPConn
}

// setup opens the two connections, prepares the kTLS-side stand-in for
// ModeSockmap, lets before run (writes queued before Join) and joins.
type setup struct {
	mode         Mode
	pending      []byte // the stand-in's Pending
	plainPending []byte
	before       func(app, far *net.TCPConn)
}

func newRig(t *testing.T, s setup) *rig {
	t.Helper()
	app, plain, err := loopback.TCPPair()
	if err != nil {
		t.Fatal(err)
	}
	tlsEnd, far, err := loopback.TCPPair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close(); far.Close() })
	opts := Options{Mode: s.mode, PlainPending: s.plainPending}
	if s.mode == ModeSockmap {
		pr, err := sharedSockmap(t).Prepare(tlsEnd)
		if err != nil {
			t.Fatalf("Prepare: %v", err)
		}
		opts.Prepared = pr
	}
	// After Prepare, as with kTLS (where the ULP follows at once). Bytes
	// that reach a prepared socket are held back only up to about its
	// receive window; beyond it the verdict drops them and Join fails
	// with ErrSockmapRace, so before writes less to the far end.
	if s.before != nil {
		s.before(app, far)
	}
	pair, err := Join(plain, &standIn{TCPConn: tlsEnd, pending: s.pending}, opts)
	if err != nil {
		t.Fatalf("Join(%v): %v", s.mode, err)
	}
	t.Cleanup(func() { pair.Close() })
	return &rig{pair: pair, app: app, far: far}
}

// stream is a reproducible pseudo-random byte stream.
type stream struct {
	r    *mrand.ChaCha8
	left int64
}

func newStream(seed byte, n int64) *stream {
	return &stream{r: mrand.NewChaCha8([32]byte{seed, 's', 'p', 'l', 'i', 'c', 'e'}), left: n}
}

func (s *stream) Read(p []byte) (int, error) {
	if s.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	s.r.Read(p)
	s.left -= int64(len(p))
	return len(p), nil
}

// sum is the SHA-256 of stream(seed, n).
func sum(seed byte, n int64) string {
	h := sha256.New()
	io.Copy(h, newStream(seed, n))
	return fmt.Sprintf("%x", h.Sum(nil))
}

// send writes stream(seed, n) to c, then half-closes it.
func send(c *net.TCPConn, seed byte, n int64) error {
	if _, err := io.Copy(c, newStream(seed, n)); err != nil {
		return err
	}
	return c.CloseWrite()
}

// receive reads c to EOF and returns the byte count and SHA-256.
func receive(c io.Reader) (int64, string, error) {
	h := sha256.New()
	n, err := io.Copy(h, c)
	return n, hexsum(h), err
}

func hexsum(h hash.Hash) string { return fmt.Sprintf("%x", h.Sum(nil)) }

// within fails the test when fn does not return in time: a broken byte
// path must fail, not hang the test binary.
func within(t *testing.T, d time.Duration, what string, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- fn() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(d):
		t.Fatalf("%s: not done after %v", what, d)
	}
}

var modes = []Mode{ModeSplice, ModeSockmap}

func mustRC(t testing.TB, c *net.TCPConn) syscall.RawConn {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}
