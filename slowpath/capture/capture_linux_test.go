package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/internal/netnstest"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/slowpath"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// ioTimeout bounds every accept, read and dial of these tests; on a veth
// they take microseconds.
const ioTimeout = 10 * time.Second

// families are the address families every traffic test runs in: the
// pod is the pair's A, the rest of the world its B.
var families = []struct {
	name string
	opts []netnstest.Option
}{
	{"ipv4", nil},
	{"ipv6", []netnstest.Option{netnstest.WithSubnet(netip.MustParsePrefix("fd00:199::/64"))}},
}

// nsFile returns an open handle to p's network namespace, closed at the
// end of the test.
func nsFile(t *testing.T, p *netnstest.Peer) *os.File {
	t.Helper()
	var f *os.File
	if err := p.Do(func() (err error) {
		f, err = os.Open("/proc/thread-self/ns/net")
		return err
	}); err != nil {
		t.Fatalf("open namespace of %s: %v", p.Name, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// listen opens a listener (network "tcp" or "udp") in p's namespace.
func listen(t *testing.T, p *netnstest.Peer, network, addr string) io.Closer {
	t.Helper()
	var c io.Closer
	err := p.Do(func() error {
		var err error
		if network == "udp" {
			c, err = net.ListenPacket("udp", addr)
		} else {
			c, err = net.Listen("tcp", addr)
		}
		return err
	})
	if err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, p.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialer returns a dialer whose sockets carry mark (0: none).
func dialer(mark int) *net.Dialer {
	d := &net.Dialer{Timeout: ioTimeout}
	if mark != 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	return d
}

// dial connects from p's namespace (network "tcp" or "udp").
func dial(p *netnstest.Peer, network string, to netip.AddrPort, mark int) (net.Conn, error) {
	var c net.Conn
	err := p.Do(func() error {
		var err error
		c, err = dialer(mark).DialContext(context.Background(), network, to.String())
		return err
	})
	return c, err
}

// accept accepts one connection on ln within ioTimeout.
func accept(t *testing.T, ln net.Listener) *net.TCPConn {
	t.Helper()
	tl := ln.(*net.TCPListener)
	tl.SetDeadline(time.Now().Add(ioTimeout))
	c, err := tl.AcceptTCP()
	if err != nil {
		t.Fatalf("accept on %v: %v", ln.Addr(), err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func addrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// wildcard is the dual-stack wildcard address with port, as the agent
// listens.
func wildcard(port uint16) string { return fmt.Sprintf(":%d", port) }

func TestInstallRemoveInstalled(t *testing.T) {
	pair := netnstest.NewPair(t)
	ns := nsFile(t, pair.A)
	fd := int(ns.Fd())
	installed := func(want bool) {
		t.Helper()
		got, err := Installed(fd)
		if err != nil || got != want {
			t.Fatalf("Installed = %v, %v; want %v", got, err, want)
		}
	}
	installed(false)
	if err := Remove(fd); err != nil {
		t.Fatalf("Remove without a table: %v", err)
	}
	for range 2 { // the second Install replaces the first
		if err := Install(fd, Config{DNS: true}); err != nil {
			t.Fatalf("Install: %v", err)
		}
		installed(true)
	}
	if err := Remove(fd); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	installed(false)
	if err := Install(-1, Config{}); err == nil {
		t.Error("Install(-1) succeeded")
	}
}

// TestCapture dials every kind of connection a pod sees and checks where
// it lands and what OriginalDst says.
func TestCapture(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			pair := netnstest.NewPair(t, fam.opts...)
			pod, world := pair.A, pair.B
			loop := netip.MustParseAddr("127.0.0.1")
			if pod.Addr.Is6() {
				loop = netip.IPv6Loopback()
			}
			if err := Install(int(nsFile(t, pod).Fd()), Config{
				DNS:                  true,
				ExcludeOutboundPorts: []uint16{9999},
				ExcludeInboundPorts:  []uint16{7777},
			}); err != nil {
				t.Fatalf("Install: %v", err)
			}
			ln := func(p *netnstest.Peer, addr string) net.Listener {
				return listen(t, p, "tcp", addr).(net.Listener)
			}
			var (
				outbound  = ln(pod, wildcard(slowpath.OutboundPort))
				inbound   = ln(pod, wildcard(slowpath.InboundPlaintextPort))
				tunnel    = ln(pod, wildcard(slowpath.TunnelPort))
				dns       = ln(pod, wildcard(slowpath.DNSPort))
				excludedI = ln(pod, pod.AddrPort(7777).String())
				podLoop   = ln(pod, netip.AddrPortFrom(loop, 5000).String())
				podSelf   = ln(pod, pod.AddrPort(5001).String())
				remote    = ln(world, world.AddrPort(80).String())
				excludedO = ln(world, world.AddrPort(9999).String())
			)
			for _, tc := range []struct {
				name     string
				from     *netnstest.Peer
				to       netip.AddrPort
				mark     int
				want     net.Listener
				wantOrig netip.AddrPort
			}{
				{"outbound", pod, world.AddrPort(80), 0, outbound, world.AddrPort(80)},
				// No NAT in the world's namespace: no conntrack, no
				// original destination to check there.
				{"outbound excluded port", pod, world.AddrPort(9999), 0, excludedO, netip.AddrPort{}},
				{"outbound marked", pod, world.AddrPort(80), slowpath.Mark, remote, netip.AddrPort{}},
				{"outbound other mark", pod, world.AddrPort(80), slowpath.Mark + 1, outbound, world.AddrPort(80)},
				{"loopback", pod, netip.AddrPortFrom(loop, 5000), 0, podLoop, netip.AddrPortFrom(loop, 5000)},
				{"own pod address", pod, pod.AddrPort(5001), 0, podSelf, pod.AddrPort(5001)},
				{"dns over tcp", pod, world.AddrPort(53), 0, dns, world.AddrPort(53)},
				{"dns over tcp to loopback", pod, netip.AddrPortFrom(loop, 53), 0, dns, netip.AddrPortFrom(loop, 53)},
				{"inbound", world, pod.AddrPort(8080), 0, inbound, pod.AddrPort(8080)},
				{"inbound tunnel", world, pod.AddrPort(slowpath.TunnelPort), 0, tunnel, pod.AddrPort(slowpath.TunnelPort)},
				{"inbound excluded port", world, pod.AddrPort(7777), 0, excludedI, pod.AddrPort(7777)},
				{"inbound to the outbound port", world, pod.AddrPort(slowpath.OutboundPort), 0, inbound, pod.AddrPort(slowpath.OutboundPort)},
			} {
				t.Run(tc.name, func(t *testing.T) {
					c, err := dial(tc.from, "tcp", tc.to, tc.mark)
					if err != nil {
						t.Fatalf("dial %v from %s: %v", tc.to, tc.from.Name, err)
					}
					defer c.Close()
					got := accept(t, tc.want)
					if g, w := addrPort(got.RemoteAddr()), addrPort(c.LocalAddr()); g != w {
						t.Fatalf("%v accepted a connection from %v, want the dialer's %v", tc.want.Addr(), g, w)
					}
					if !tc.wantOrig.IsValid() {
						return
					}
					orig, err := OriginalDst(got)
					if err != nil {
						t.Fatalf("OriginalDst: %v", err)
					}
					if orig != tc.wantOrig {
						t.Errorf("OriginalDst = %v, want %v", orig, tc.wantOrig)
					}
				})
			}
		})
	}
}

// TestFailClosed: with the rules in place and nothing listening on the
// redirect ports, captured connections are refused and never reach their
// destination.
func TestFailClosed(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			pair := netnstest.NewPair(t, fam.opts...)
			pod, world := pair.A, pair.B
			if err := Install(int(nsFile(t, pod).Fd()), Config{}); err != nil {
				t.Fatalf("Install: %v", err)
			}
			remote := listen(t, world, "tcp", world.AddrPort(80).String()).(net.Listener)
			app := listen(t, pod, "tcp", pod.AddrPort(8080).String()).(net.Listener)
			for _, tc := range []struct {
				name     string
				from     *netnstest.Peer
				to       netip.AddrPort
				listener net.Listener    // the real destination
				sentinel *netnstest.Peer // where an uncaptured connection comes from
			}{
				{"outbound", pod, world.AddrPort(80), remote, pod},
				// Inbound from the pod itself: through lo, not captured.
				{"inbound", world, pod.AddrPort(8080), app, pod},
			} {
				t.Run(tc.name, func(t *testing.T) {
					for range 3 {
						c, err := dial(tc.from, "tcp", tc.to, 0)
						if err == nil {
							c.Close()
							t.Fatalf("dial %v from %s succeeded with no agent listening, want refused", tc.to, tc.from.Name)
						}
						if !errors.Is(err, syscall.ECONNREFUSED) {
							t.Fatalf("dial %v from %s: %v, want connection refused", tc.to, tc.from.Name, err)
						}
					}
					// An uncaptured connection is the first the real
					// destination accepts: the refused ones never reached
					// it.
					s, err := dial(tc.sentinel, "tcp", tc.to, slowpath.Mark)
					if err != nil {
						t.Fatalf("marked dial %v: %v", tc.to, err)
					}
					defer s.Close()
					got := accept(t, tc.listener)
					if g, w := addrPort(got.RemoteAddr()), addrPort(s.LocalAddr()); g != w {
						t.Errorf("the real destination accepted %v first, want the marked sentinel %v: a captured connection got through", g, w)
					}
				})
			}
		})
	}
}

// serve answers every connection on ln with b and closes it, until ln is
// closed.
func serve(ln net.Listener, b byte, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte{b})
			c.Close()
		}
	}()
}

// TestReinstallNoBypass installs again and again while connections run
// both ways: every connection lands on the agent's ports, none reaches
// its destination directly.
func TestReinstallNoBypass(t *testing.T) {
	// Connections run until minInstalls installs have run during them
	// (at least minRounds, at most maxRounds rounds: an install waits for
	// an RCU grace period, whose length depends on the machine's load).
	const (
		minRounds, maxRounds = 100, 20000 // each a connection out and one in
		minInstalls          = 50
		maxInstalls          = 1000000
	)
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			pair := netnstest.NewPair(t, fam.opts...)
			pod, world := pair.A, pair.B
			fd := int(nsFile(t, pod).Fd())
			if err := Install(fd, Config{}); err != nil {
				t.Fatalf("Install: %v", err)
			}
			var wg sync.WaitGroup
			t.Cleanup(wg.Wait) // after the listeners' cleanups close them
			serve(listen(t, pod, "tcp", wildcard(slowpath.OutboundPort)).(net.Listener), 'O', &wg)
			serve(listen(t, pod, "tcp", wildcard(slowpath.InboundPlaintextPort)).(net.Listener), 'I', &wg)
			serve(listen(t, world, "tcp", world.AddrPort(80).String()).(net.Listener), 'X', &wg)
			serve(listen(t, pod, "tcp", pod.AddrPort(8080).String()).(net.Listener), 'X', &wg)

			// The installer runs until the connections are done (bounded
			// by maxInstalls).
			stop, done := make(chan struct{}), make(chan error, 1)
			var installs atomic.Int64
			go func() {
				for i := range maxInstalls {
					select {
					case <-stop:
						done <- nil
						return
					default:
					}
					if err := Install(fd, Config{}); err != nil {
						done <- fmt.Errorf("install %d: %w", i, err)
						return
					}
					installs.Add(1)
				}
				done <- nil
			}()
			var installErr error
			stopInstalls := sync.OnceFunc(func() { close(stop); installErr = <-done })
			defer stopInstalls()
			check := func(from *netnstest.Peer, to netip.AddrPort, want byte) error {
				c, err := dial(from, "tcp", to, 0)
				if err != nil {
					return fmt.Errorf("dial %v from %s: %w", to, from.Name, err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(ioTimeout))
				var b [1]byte
				if _, err := io.ReadFull(c, b[:]); err != nil {
					return fmt.Errorf("read from %v: %w", to, err)
				}
				if b[0] != want {
					return fmt.Errorf("connection to %v from %s answered %q, want %q: it bypassed capture", to, from.Name, b[0], want)
				}
				return nil
			}
			rounds := 0
			for ; rounds < maxRounds && (rounds < minRounds || installs.Load() < minInstalls); rounds++ {
				if err := check(pod, world.AddrPort(80), 'O'); err != nil {
					t.Fatal(err)
				}
				if err := check(world, pod.AddrPort(8080), 'I'); err != nil {
					t.Fatal(err)
				}
			}
			stopInstalls()
			if installErr != nil {
				t.Fatal(installErr)
			}
			if n := installs.Load(); n < minInstalls {
				t.Errorf("only %d installs ran during %d connections: the test proved little", n, 2*rounds)
			} else {
				t.Logf("%d connections during %d installs, none bypassed", 2*rounds, n)
			}
		})
	}
}

// TestRemoveRestores: after Remove, connections go where they were sent.
func TestRemoveRestores(t *testing.T) {
	pair := netnstest.NewPair(t)
	pod, world := pair.A, pair.B
	fd := int(nsFile(t, pod).Fd())
	if err := Install(fd, Config{}); err != nil {
		t.Fatalf("Install: %v", err)
	}
	if c, err := dial(pod, "tcp", world.AddrPort(80), 0); err == nil {
		c.Close()
		t.Fatal("dial with capture and no agent succeeded")
	}
	if err := Remove(fd); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	remote := listen(t, world, "tcp", world.AddrPort(80).String()).(net.Listener)
	c, err := dial(pod, "tcp", world.AddrPort(80), 0)
	if err != nil {
		t.Fatalf("dial after Remove: %v", err)
	}
	defer c.Close()
	got := accept(t, remote)
	if g, w := addrPort(got.RemoteAddr()), addrPort(c.LocalAddr()); g != w {
		t.Errorf("destination accepted %v, want %v", g, w)
	}
}

// TestDNSUDP: UDP to port 53 lands on DNSPort, and the reply reaches the
// app's connected socket from the address it queried (conntrack undoes the
// redirect). Without Config.DNS, UDP 53 is not touched.
func TestDNSUDP(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			pair := netnstest.NewPair(t, fam.opts...)
			pod, world := pair.A, pair.B
			fd := int(nsFile(t, pod).Fd())
			if err := Install(fd, Config{DNS: true}); err != nil {
				t.Fatalf("Install: %v", err)
			}
			// Bound to loopback, where the redirect sends the query, so
			// that the answer leaves from the address conntrack expects
			// (from a wildcard socket it would leave from the pod's).
			loop := "127.0.0.1"
			if pod.Addr.Is6() {
				loop = "::1"
			}
			proxy := listen(t, pod, "udp", net.JoinHostPort(loop, fmt.Sprint(slowpath.DNSPort))).(net.PacketConn)
			server := listen(t, world, "udp", world.AddrPort(53).String()).(net.PacketConn)
			read := func(pc net.PacketConn) ([]byte, net.Addr) {
				t.Helper()
				pc.SetReadDeadline(time.Now().Add(ioTimeout))
				buf := make([]byte, 64)
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					t.Fatalf("read on %v: %v", pc.LocalAddr(), err)
				}
				return buf[:n], from
			}
			exchange := func(c net.Conn, q string) []byte {
				t.Helper()
				if _, err := c.Write([]byte(q)); err != nil {
					t.Fatalf("write: %v", err)
				}
				return nil
			}

			app, err := dial(pod, "udp", world.AddrPort(53), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer app.Close()
			exchange(app, "query")
			got, from := read(proxy)
			if string(got) != "query" || addrPort(from) != addrPort(app.LocalAddr()) {
				t.Fatalf("DNS port got %q from %v, want %q from %v", got, from, "query", app.LocalAddr())
			}
			if _, err := proxy.WriteTo([]byte("answer"), from); err != nil {
				t.Fatal(err)
			}
			app.SetReadDeadline(time.Now().Add(ioTimeout))
			buf := make([]byte, 64)
			n, err := app.Read(buf)
			if err != nil || string(buf[:n]) != "answer" {
				t.Fatalf("app read %q, %v; want the answer, from %v", buf[:n], err, world.AddrPort(53))
			}

			// The server never saw the query: a marked datagram is the
			// first to reach it.
			sentinel, err := dial(pod, "udp", world.AddrPort(53), slowpath.Mark)
			if err != nil {
				t.Fatal(err)
			}
			defer sentinel.Close()
			exchange(sentinel, "sentinel")
			if got, _ := read(server); !bytes.Equal(got, []byte("sentinel")) {
				t.Fatalf("server got %q first, want the marked sentinel", got)
			}

			// Without DNS capture the query goes to the server.
			if err := Install(fd, Config{DNS: false}); err != nil {
				t.Fatal(err)
			}
			plain, err := dial(pod, "udp", world.AddrPort(53), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer plain.Close()
			exchange(plain, "plain")
			if got, from := read(server); string(got) != "plain" || addrPort(from) != addrPort(plain.LocalAddr()) {
				t.Fatalf("server got %q from %v, want %q from %v", got, from, "plain", plain.LocalAddr())
			}
		})
	}
}

// TestDNSPortClosedToWorld: with DNS capture, UDP from outside to the DNS
// port is dropped (the server would forward for anyone); without it, it
// is not (so the check can tell).
func TestDNSPortClosedToWorld(t *testing.T) {
	pair := netnstest.NewPair(t)
	pod, world := pair.A, pair.B
	fd := int(nsFile(t, pod).Fd())
	server := listen(t, pod, "udp", wildcard(slowpath.DNSPort)).(net.PacketConn)
	send := func(from *netnstest.Peer, msg string) {
		t.Helper()
		c, err := dial(from, "udp", pod.AddrPort(slowpath.DNSPort), 0)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	first := func() string {
		t.Helper()
		server.SetReadDeadline(time.Now().Add(ioTimeout))
		buf := make([]byte, 64)
		n, _, err := server.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	// Without DNS capture the world's datagram arrives (in either order
	// with the pod's own: they take different paths).
	if err := Install(fd, Config{DNS: false}); err != nil {
		t.Fatal(err)
	}
	send(world, "outside")
	send(pod, "inside")
	got := []string{first(), first()}
	slices.Sort(got)
	if !slices.Equal(got, []string{"inside", "outside"}) {
		t.Fatalf("without DNS capture the DNS port got %q, want both datagrams", got)
	}
	// With it, the drop rule counts the world's datagram, and the pod's
	// own is the only one that arrives.
	if err := Install(fd, Config{DNS: true}); err != nil {
		t.Fatal(err)
	}
	send(world, "outside")
	testenv.Eventually(t, ioTimeout, "the drop rule counts the world's datagram", func() error {
		n, err := dropped(fd)
		if err == nil && n == 0 {
			err = errors.New("0 packets dropped")
		}
		return err
	})
	send(pod, "inside")
	if got := first(); got != "inside" {
		t.Errorf("with DNS capture the DNS port got %q, want only the pod's own datagram", got)
	}
}

// dropped returns the packets counted by the prerouting chain's drop rule.
func dropped(fd int) (uint64, error) {
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		return 0, err
	}
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	rules, err := c.GetRules(t, &nftables.Chain{Name: PreroutingChain, Table: t})
	if err != nil {
		return 0, err
	}
	for _, r := range rules {
		var n uint64
		drop := false
		for _, e := range r.Exprs {
			switch e := e.(type) {
			case *expr.Counter:
				n = e.Packets
			case *expr.Verdict:
				drop = e.Kind == expr.VerdictDrop
			}
		}
		if drop {
			return n, nil
		}
	}
	return 0, errors.New("no drop rule in the prerouting chain")
}
