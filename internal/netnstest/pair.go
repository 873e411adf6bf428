package netnstest

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/internal/testenv"
)

// Pair defaults.
var (
	// DefaultSubnet is the veth pair's subnet: A has .1, B has .2. Every
	// pair lives in its own namespaces, so pairs may share it.
	DefaultSubnet = netip.MustParsePrefix("10.199.0.0/24")
)

// Interface names of the veth ends, each in its own namespace.
const (
	IfaceA = "veth-a"
	IfaceB = "veth-b"
)

// dialTimeout bounds Dial; on a veth a connect takes microseconds, under
// the VM's emulation milliseconds.
const dialTimeout = 30 * time.Second

// Pair is two network namespaces joined by a veth pair.
type Pair struct {
	A, B *Peer
}

// Peer is one side of a Pair: a network namespace with lo up and one end
// of the veth, up, with an address.
type Peer struct {
	Name   string       // "a" or "b"
	Addr   netip.Addr   // the veth end's address
	Prefix netip.Prefix // Addr with the subnet's length
	Iface  string       // the veth end's name (IfaceA or IfaceB)
	Index  int          // the veth end's interface index, in the namespace
	MAC    net.HardwareAddr

	ns nsHandle
}

// Option changes what NewPair builds.
type Option func(*pairConfig)

type pairConfig struct {
	subnet netip.Prefix
	mtu    int
}

// WithSubnet gives the pair another subnet (IPv4 or IPv6, at most /30 or
// /126): A gets the first host address, B the second.
func WithSubnet(p netip.Prefix) Option { return func(c *pairConfig) { c.subnet = p.Masked() } }

// WithMTU sets both veth ends' MTU (default the kernel's, 1500).
func WithMTU(mtu int) Option { return func(c *pairConfig) { c.mtu = mtu } }

func (c *pairConfig) addrs() (a, b netip.Prefix, err error) {
	p := c.subnet
	if !p.IsValid() || p.Bits() > p.Addr().BitLen()-2 {
		return a, b, fmt.Errorf("subnet %v: want a valid prefix with room for two hosts", p)
	}
	first := p.Addr().Next()
	return netip.PrefixFrom(first, p.Bits()), netip.PrefixFrom(first.Next(), p.Bits()), nil
}

// NewPair creates two fresh network namespaces, A and B, joined by a veth
// pair (IfaceA in A, IfaceB in B) with addresses from DefaultSubnet (or
// WithSubnet), both ends and both lo devices up. Nothing appears in the
// caller's namespace and no name is registered under /run/netns: the
// namespaces live as long as the Pair's handles and the sockets opened in
// them. t.Cleanup deletes the veth and closes the handles. NewPair skips
// the test unless it runs as root, and fails it if the pair cannot be
// built.
func NewPair(t testing.TB, opts ...Option) *Pair {
	t.Helper()
	testenv.NeedRoot(t)
	cfg := pairConfig{subnet: DefaultSubnet}
	for _, o := range opts {
		o(&cfg)
	}
	p, err := newPair(cfg)
	if err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	t.Cleanup(func() {
		if err := p.close(); err != nil {
			t.Errorf("netnstest: remove pair: %v", err)
		}
	})
	return p
}

// Peer returns the other side of p.
func (p *Pair) Peer(of *Peer) *Peer {
	if of == p.A {
		return p.B
	}
	return p.A
}

// AddrPort returns the peer's address with port.
func (p *Peer) AddrPort(port uint16) netip.AddrPort { return netip.AddrPortFrom(p.Addr, port) }

// Do runs fn on an OS thread switched into the peer's namespace and
// returns its error. Sockets fn creates (net.Listen, net.Dial, socket(2))
// belong to the namespace and keep it afterwards, from any goroutine; fn
// must not expect goroutines it starts to run in the namespace. A panic
// in fn is re-raised in the caller.
func (p *Peer) Do(fn func() error) error {
	return p.ns.do(fn)
}

// Listen opens a TCP listener on the peer's address and port (0 picks
// one) and closes it at the end of the test.
func (p *Peer) Listen(t testing.TB, port uint16) net.Listener {
	t.Helper()
	var ln net.Listener
	err := p.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", p.AddrPort(port).String())
		return err
	})
	if err != nil {
		t.Fatalf("netnstest: listen in %s: %v", p.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// Dial connects from the peer's namespace to addr over TCP and closes the
// connection at the end of the test.
func (p *Peer) Dial(t testing.TB, addr netip.AddrPort) *net.TCPConn {
	t.Helper()
	var c net.Conn
	err := p.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr.String(), dialTimeout)
		return err
	})
	if err != nil {
		t.Fatalf("netnstest: dial %v from %s: %v", addr, p.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// CaptureConfig says what a Capture keeps.
type CaptureConfig struct {
	// MaxBytes is the payload each Stream keeps in Data: 0 means
	// DefaultMaxBytes, a negative value none (Sink and Len still see
	// every byte).
	MaxBytes int
	// Port keeps only TCP segments from or to this port; 0 keeps all.
	Port uint16
	// Sink, if set, is called when a direction first appears and returns
	// a writer (or nil) that gets all of its payload, in order, beyond
	// MaxBytes too: a TLSRecordChecker, a PlaintextScanner, or an
	// io.MultiWriter of them. Each direction's writer is used from its
	// own goroutine, so different directions' writers run concurrently,
	// and Sink itself from the capture's reader. A sink slower than the
	// traffic makes the capture fall behind and drop frames (gaps): in
	// the VM, hash the data at the endpoints, not here.
	Sink func(src, dst netip.AddrPort) io.Writer
}

// CaptureResult is what a Capture saw.
type CaptureResult struct {
	// Streams has one entry per direction of each TCP connection, in
	// the order their first segments were seen.
	Streams []*Stream
	// Frames counts the frames read, NonTCP those without TCP, and
	// Malformed those that did not parse.
	Frames, NonTCP, Malformed int
	// Dropped is the kernel's count of frames the capture socket had
	// no room for (PACKET_STATISTICS); each leaves a Gap.
	Dropped int
}

// Stream returns the direction from src to dst, or nil.
func (r *CaptureResult) Stream(src, dst netip.AddrPort) *Stream {
	for _, s := range r.Streams {
		if s.Src == src && s.Dst == dst {
			return s
		}
	}
	return nil
}

// Conn returns both directions of the connection whose one end is local
// (out: from local, in: to local); either is nil if not seen.
func (r *CaptureResult) Conn(local, remote netip.AddrPort) (out, in *Stream) {
	return r.Stream(local, remote), r.Stream(remote, local)
}

// Capture starts recording the TCP traffic on the peer's veth end (both
// directions, AF_PACKET) and returns once it is recording. Call Stop after
// the traffic, when both ends have read what they expect (every frame
// that reached them was recorded by then); t.Cleanup stops a capture the
// test did not. Capture fails the test if it cannot start.
func (p *Peer) Capture(t testing.TB, cfg CaptureConfig) *Capture {
	t.Helper()
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	c, err := startCapture(p, cfg)
	if err != nil {
		t.Fatalf("netnstest: capture on %s: %v", p.Iface, err)
	}
	t.Cleanup(func() { c.Stop() })
	return c
}
