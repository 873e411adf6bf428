package proxy

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/internal/netnstest"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/slowpath"
	"github.com/fibmesh/fibmesh/slowpath/capture"
	"github.com/fibmesh/fibmesh/slowpath/proxyproto"
	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// The lab: pod "client" in namespace A and pod "server" in namespace B of
// a netnstest pair, both served by one Proxy; apps listen in B. There is
// no nftables capture: apps call the proxy's ports directly and the
// OriginalDestination hook says where they "meant" to go.
var (
	vip      = netip.MustParseAddrPort("10.96.0.10:80")
	vip6     = netip.MustParseAddrPort("[fd96::10]:80")
	appPort  = uint16(8080) // STRICT: only a tunnel chain
	permPort = uint16(9090) // PERMISSIVE: a plaintext chain too
	outPort  = uint16(9999) // in B, but called as a destination outside the mesh
)

type lab struct {
	pairOpts     []netnstest.Option
	evMu         sync.Mutex
	events       []Event
	pair         *netnstest.Pair
	ca           *testCA
	client, srv  Pod
	clientID     spiffeid.ID
	serverID     spiffeid.ID
	p            *Proxy
	snap         atomic.Pointer[xdsconf.Snapshot]
	orig         sync.Map // origKey → netip.AddrPort
	certs        sync.Map // "ns/name" → *tls.Certificate
	serverRemote chan netip.AddrPort
}

type origKey struct {
	pod  string
	port int
}

func nsFile(t testing.TB, peer *netnstest.Peer) *os.File {
	t.Helper()
	var f *os.File
	if err := peer.Do(func() (err error) { f, err = os.Open("/proc/thread-self/ns/net"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// fdCount counts the process's sockets and namespace descriptors, what
// the proxy opens (not pipes: io.Copy between TCP sockets keeps a pool of
// splice pipes).
func fdCount(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		if strings.HasPrefix(l, "socket:") || strings.HasPrefix(l, "net:") {
			n++
		}
	}
	return n
}

func fdList() []string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		out = append(out, e.Name()+"="+l)
	}
	return out
}

// newLab builds the pair, the apps and a Proxy serving both pods. The
// returned check, deferred first, verifies no goroutine or fd leaked once
// everything is closed.
func newLab(t *testing.T, opts ...func(*Config)) *lab { return newLabTB(t, nil, opts...) }

// newLabB is newLab for a benchmark, with the VIP as every outbound
// connection's original destination.
func newLabB(b *testing.B) *lab {
	l := newLabTB(b, nil)
	l.orig.Store(origKey{"client", 15001}, vip)
	return l
}

func newLabTB(t testing.TB, pairOpts []netnstest.Option, opts ...func(*Config)) *lab {
	t.Helper()
	testenv.NeedRoot(t)
	l := &lab{ca: newTestCA(t, "cluster.local"), serverRemote: make(chan netip.AddrPort, 16), pairOpts: pairOpts}
	l.pair = netnstest.NewPair(t, l.pairOpts...)
	for _, peer := range []*netnstest.Peer{l.pair.A, l.pair.B} {
		// The kernel adds an IPv6 address's local route (table local)
		// from a work queue, after the address: until then a
		// connection to it goes out the veth and fails with "no route
		// to host" after neighbour discovery gives up. (netnstest
		// should wait for it: reported.)
		testenv.Eventually(t, 10*time.Second, "local route of "+peer.Addr.String(), func() error {
			return peer.Do(func() error {
				rs, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_LOCAL}, netlink.RT_FILTER_TABLE)
				if err != nil {
					return err
				}
				for _, r := range rs {
					if r.Dst != nil {
						if ip, ok := netip.AddrFromSlice(r.Dst.IP); ok && ip.Unmap() == peer.Addr {
							return nil
						}
					}
				}
				return errors.New("not yet")
			})
		})
	}
	l.client = Pod{Namespace: "default", Name: "client", Netns: nsFile(t, l.pair.A), IPs: []netip.Addr{l.pair.A.Addr}}
	l.srv = Pod{Namespace: "default", Name: "server", Netns: nsFile(t, l.pair.B), IPs: []netip.Addr{l.pair.B.Addr}}
	l.clientID = spiffeid.RequireFromPath(l.ca.td, "/ns/default/sa/client")
	l.serverID = spiffeid.RequireFromPath(l.ca.td, "/ns/default/sa/server")
	l.startApps(t)
	l.snap.Store(l.snapshot(nil))

	goroutines := goleak.IgnoreCurrent()
	fds := fdCount(t)
	cfg := Config{
		Snapshot: l.snap.Load,
		Certificate: func(ns, pod string) (*tls.Certificate, spiffeid.ID, error) {
			key := ns + "/" + pod
			id := spiffeid.RequireFromPath(l.ca.td, "/ns/"+ns+"/sa/"+pod)
			if c, ok := l.certs.Load(key); ok {
				return c.(*tls.Certificate), id, nil
			}
			c, _ := l.ca.svid(t, id.Path())
			l.certs.Store(key, c)
			return c, id, nil
		},
		TrustBundle: func() []*x509.Certificate { return []*x509.Certificate{l.ca.cert} },
		TrustDomain: l.ca.td,
		Events: func(e Event) {
			l.evMu.Lock()
			l.events = append(l.events, e)
			l.evMu.Unlock()
		},
		OriginalDestination: func(c *net.TCPConn, pod Pod, port int) (netip.AddrPort, error) {
			if v, ok := l.orig.Load(origKey{pod.Name, port}); ok {
				return v.(netip.AddrPort), nil
			}
			return netip.AddrPort{}, fmt.Errorf("test set no original destination for %s port %d", pod.Name, port)
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l.p = p
	for _, pod := range []Pod{l.client, l.srv} {
		if err := p.AddPod(pod); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		p.Close()
		if t.Failed() {
			return
		}
		// No goroutine and no descriptor of the proxy may outlive Close.
		if err := goleak.Find(goroutines); err != nil {
			t.Errorf("goroutines leaked: %v", err)
		}
		if n := fdCount(t); n > fds {
			t.Errorf("%d descriptors open after Close, %d before New: %v", n, fds, fdList())
		}
	})
	return l
}

// startApps runs, in B, an echo server on appPort and permPort (it
// echoes until EOF, then half-closes) and one on outPort.
func (l *lab) startApps(t testing.TB) {
	for _, port := range []uint16{appPort, permPort, outPort} {
		ln := l.pair.B.Listen(t, port)
		var wg sync.WaitGroup
		t.Cleanup(func() { ln.Close(); wg.Wait() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				select {
				case l.serverRemote <- addrPortOf(c.RemoteAddr()):
				default:
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer c.Close()
					io.Copy(c, c)
					c.(*net.TCPConn).CloseWrite()
					io.Copy(io.Discard, c)
				}()
			}
		}()
	}
}

// snapshot is the lab's config: the VIP's chain to an EDS cluster whose
// one endpoint is the server pod (mTLS, SAN the server's ID), a
// passthrough default, an inbound tunnel chain for appPort and permPort
// with rbac, a plaintext chain for permPort only.
func (l *lab) snapshot(rbac *xdsconf.RBAC) *xdsconf.Snapshot {
	B := l.pair.B.Addr
	svc := &xdsconf.Cluster{Name: "outbound|80||echo.default.svc.cluster.local", Type: xdsconf.ClusterEDS, LB: xdsconf.RoundRobin,
		ConnectTimeout: 5 * time.Second, TLS: &xdsconf.UpstreamTLS{SANs: []spiffeid.ID{l.serverID}}, Endpoints: endpoints(netip.AddrPortFrom(B, appPort))}
	pass := &xdsconf.Cluster{Name: "PassthroughCluster", Type: xdsconf.ClusterOriginalDst, ConnectTimeout: 5 * time.Second}
	tcp := func(c string) *xdsconf.TCPProxy {
		return &xdsconf.TCPProxy{Clusters: []xdsconf.WeightedCluster{{Name: c, Weight: 1}}}
	}
	return &xdsconf.Snapshot{
		Outbound: &xdsconf.Listener{Name: xdsconf.OutboundListener,
			Chains: []*xdsconf.FilterChain{
				{Name: "10.96.0.10_80", Prefixes: []netip.Prefix{netip.PrefixFrom(vip.Addr(), 32)}, Port: uint32(vip.Port()), TCP: tcp(svc.Name)},
				{Name: "fd96::10_80", Prefixes: []netip.Prefix{netip.PrefixFrom(vip6.Addr(), 128)}, Port: uint32(vip6.Port()), TCP: tcp(svc.Name)},
			},
			Default: &xdsconf.FilterChain{Name: "PassthroughFilterChain", TCP: tcp(pass.Name)}},
		Inbound: &xdsconf.Listener{Name: xdsconf.InboundListener, Chains: []*xdsconf.FilterChain{
			{Name: "inbound|8080", Port: uint32(appPort), TLS: &xdsconf.DownstreamTLS{Identity: l.serverID, RequireClientCert: true}, RBAC: rbac, TCP: tcp("inbound|8080||")},
			{Name: "inbound|9090", Port: uint32(permPort), TLS: &xdsconf.DownstreamTLS{Identity: l.serverID, RequireClientCert: true}, RBAC: rbac, TCP: tcp("inbound|9090||")},
			{Name: "inbound|7070-plaintext-chain", Port: 7070, TCP: tcp("inbound|7070||")},
		}},
		InboundPlaintext: &xdsconf.Listener{Name: xdsconf.InboundPlaintextListener, Chains: []*xdsconf.FilterChain{
			{Name: "inbound|9090", Port: uint32(permPort), RBAC: rbac, TCP: tcp("inbound|9090||")},
		}},
		Clusters:  map[string]*xdsconf.Cluster{svc.Name: svc, pass.Name: pass},
		Endpoints: map[netip.Addr]*xdsconf.Cluster{},
	}
}

func endpoints(addrs ...netip.AddrPort) *xdsconf.Endpoints {
	e := &xdsconf.Endpoints{}
	for _, a := range addrs {
		ep := &xdsconf.Endpoint{Addr: a, Healthy: true, Weight: 1}
		e.Hosts = append(e.Hosts, ep)
		e.Healthy = append(e.Healthy, ep)
	}
	return e
}

// callOutbound connects the client app to its outbound port as if it had
// called dst.
func (l *lab) callOutbound(t *testing.T, dst netip.AddrPort) *net.TCPConn {
	t.Helper()
	l.orig.Store(origKey{"client", slowpath.OutboundPort}, dst)
	return dialMaybe(t, l.pair.A, l.pair.A.AddrPort(slowpath.OutboundPort))
}

// echo sends n random bytes through c while reading the echo, half-closes,
// and checks the echo to EOF by SHA-256.
func echo(t *testing.T, c *net.TCPConn, n int) {
	t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	echoData(t, c, data)
}

func echoData(t *testing.T, c *net.TCPConn, data []byte) {
	t.Helper()
	n := len(data)
	if c == nil {
		t.Fatal("connection reset while connecting")
	}
	want := sha256.Sum256(data)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		errc <- err
	}()
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	h := sha256.New()
	got, err := io.Copy(h, c)
	if err != nil {
		t.Fatalf("read echo after %d bytes: %v", got, err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if got != int64(n) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("echo: %d bytes, sha256 %x; want %d bytes, %x", got, h.Sum(nil), n, want)
	}
}

// dialMaybe connects from peer to addr; nil when the connection was
// reset before connect returned (a refusal that quick races Go's check of
// SO_ERROR).
func dialMaybe(t testing.TB, peer *netnstest.Peer, addr netip.AddrPort) *net.TCPConn {
	t.Helper()
	var c net.Conn
	err := peer.Do(func() (err error) { c, err = net.DialTimeout("tcp", addr.String(), 10*time.Second); return err })
	if errors.Is(err, unix.ECONNRESET) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// expectClosed waits for the peer to close c (EOF, reset or alert) with
// nothing relayed; nil is a connection reset while connecting.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	if c == nil || (reflect.ValueOf(c).Kind() == reflect.Pointer && reflect.ValueOf(c).IsNil()) {
		return
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection still open after 10s")
	}
	if n != 0 {
		t.Fatalf("read %d bytes from a connection that should have been refused", n)
	}
}

func (l *lab) refused(listener, reason string) float64 {
	return testutil.ToFloat64(l.p.m.refused.WithLabelValues(listener, reason))
}

func (l *lab) waitRefused(t *testing.T, listener, reason string, want float64) {
	t.Helper()
	testenv.Until(t, 10*time.Second, fmt.Sprintf("refused_total{%s,%s} = %v", listener, reason, want), func() bool {
		return l.refused(listener, reason) == want
	})
}

func TestEndToEnd(t *testing.T) {
	l := newLab(t)
	// 8 MiB each way through outbound → tunnel → inbound → app, with a
	// half-close carried both ways (the echo server answers until the
	// client's FIN, then half-closes itself).
	data := make([]byte, 8<<20)
	rand.Read(data)
	// On the wire between the pods: TLS records only, both ways, and no
	// window of the payload in clear.
	type wire struct {
		rec  *netnstest.TLSRecordChecker
		scan *netnstest.PlaintextScanner
	}
	var wmu sync.Mutex
	wires := map[[2]netip.AddrPort]wire{}
	capture := l.pair.B.Capture(t, netnstest.CaptureConfig{Port: slowpath.TunnelPort, MaxBytes: -1,
		Sink: func(src, dst netip.AddrPort) io.Writer {
			scan, err := netnstest.NewPlaintextScanner(data, 0, 0)
			if err != nil {
				t.Error(err)
				return nil
			}
			w := wire{&netnstest.TLSRecordChecker{}, scan}
			wmu.Lock()
			wires[[2]netip.AddrPort{src, dst}] = w
			wmu.Unlock()
			return io.MultiWriter(w.rec, w.scan)
		}})
	c := l.callOutbound(t, vip)
	var rows []ConnInfo
	echoDone := make(chan struct{})
	go func() {
		defer close(echoDone)
		// While bytes flow both rows are established (offloaded where
		// the kernel has kTLS) with both IDs.
		testenv.Until(t, 10*time.Second, "two established rows", func() bool {
			rows = nil
			for _, r := range l.p.Connections() {
				if r.State == l.wantState() {
					rows = append(rows, r)
				}
			}
			return len(rows) == 2
		})
	}()
	echoData(t, c, data)
	<-echoDone
	c.Close()
	res, err := capture.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Streams) != 2 || len(wires) != 2 {
		t.Fatalf("captured %d streams on port %d, want the tunnel's two directions", len(res.Streams), slowpath.TunnelPort)
	}
	for _, st := range res.Streams {
		w := wires[[2]netip.AddrPort{st.Src, st.Dst}]
		if err := st.Complete(); err != nil {
			t.Errorf("capture %v→%v: %v", st.Src, st.Dst, err)
		}
		if st.Len < 8<<20 {
			t.Errorf("capture %v→%v: %d bytes, want the 8 MiB at least", st.Src, st.Dst, st.Len)
		}
		if err := w.rec.Close(); err != nil {
			t.Errorf("capture %v→%v is not TLS records only: %v", st.Src, st.Dst, err)
		}
		if m, found := w.scan.Found(); found {
			t.Errorf("capture %v→%v carries the payload in clear: %+v", st.Src, st.Dst, m)
		}
	}
	if got := <-l.serverRemote; got.Addr() != l.pair.B.Addr {
		t.Errorf("the app saw source %v, want the pod's own IP %v (the proxy's socket in its netns)", got, l.pair.B.Addr)
	}
	var out, in ConnInfo
	testenv.Until(t, 10*time.Second, "both rows closed", func() bool {
		n := 0
		for _, r := range l.p.Connections() {
			if r.State == StateClosed {
				n++
				if r.Direction == DirectionOutbound {
					out = r
				} else {
					in = r
				}
			}
		}
		return n == 2
	})
	wantOut := ConnInfo{Direction: DirectionOutbound, Listener: "outbound", Pod: "default/client", Destination: vip,
		Upstream: l.pair.B.AddrPort(slowpath.TunnelPort), Endpoint: l.pair.B.AddrPort(appPort), Mode: ModeTunnel,
		Cluster: "outbound|80||echo.default.svc.cluster.local", Chain: "10.96.0.10_80",
		LocalIdentity: l.clientID.String(), PeerIdentity: l.serverID.String(), TLSVersion: "TLS 1.3", State: StateClosed, Reason: "done",
		Offload: l.wantOffload(), OffloadReason: l.p.offloadOff, BytesOut: 8 << 20, BytesIn: 8 << 20}
	wantIn := ConnInfo{Direction: DirectionInbound, Listener: "inbound", Pod: "default/server", Source: out.Source,
		Destination: l.pair.B.AddrPort(appPort), Upstream: l.pair.B.AddrPort(appPort), Mode: ModePlaintext, Cluster: "inbound|8080||", Chain: "inbound|8080",
		LocalIdentity: l.serverID.String(), PeerIdentity: l.clientID.String(), TLSVersion: "TLS 1.3", State: StateClosed, Reason: "done",
		Offload: l.wantOffload(), OffloadReason: l.p.offloadOff, BytesOut: 8 << 20, BytesIn: 8 << 20}
	for _, tc := range []struct{ got, want ConnInfo }{{out, wantOut}, {in, wantIn}} {
		got := tc.got
		if got.Source.Addr() != l.pair.A.Addr {
			t.Errorf("%s source %v, want the client pod's %v", got.Direction, got.Source, l.pair.A.Addr)
		}
		if got.TLSCipher == "" || got.Start.IsZero() || got.End.Before(got.Start) {
			t.Errorf("%s: cipher %q start %v end %v", got.Direction, got.TLSCipher, got.Start, got.End)
		}
		got.ID, got.Source, got.TLSCipher, got.Start, got.End = 0, tc.want.Source, "", time.Time{}, time.Time{}
		if got != tc.want {
			t.Errorf("%s row:\n got %+v\nwant %+v", got.Direction, got, tc.want)
		}
	}
	testenv.Eventually(t, 10*time.Second, "events: 2 established, 2 closed", func() error {
		l.evMu.Lock()
		defer l.evMu.Unlock()
		kinds := map[EventKind]int{}
		for _, e := range l.events {
			kinds[e.Kind]++
		}
		if kinds[EventEstablished] != 2 || kinds[EventClosed] != 2 || len(kinds) != 2 {
			return fmt.Errorf("events %v", kinds)
		}
		return nil
	})
	for _, d := range []string{DirectionOutbound, DirectionInbound} {
		if v := testutil.ToFloat64(l.p.m.conns.WithLabelValues(d, resultEstablished)); v != 1 {
			t.Errorf("connections_total{%s,established} = %v, want 1", d, v)
		}
		if v := testutil.ToFloat64(l.p.m.bytes.WithLabelValues(d)); v != 16<<20 {
			t.Errorf("bytes_total{%s} = %v, want %d", d, v, 16<<20)
		}
		if v := testutil.ToFloat64(l.p.m.active.WithLabelValues(d)); v != 0 {
			t.Errorf("active_connections{%s} = %v after close", d, v)
		}
	}
}

func TestOutboundModes(t *testing.T) {
	l := newLab(t)
	B := l.pair.B.Addr
	tests := []struct {
		name     string
		snap     func(*xdsconf.Snapshot)
		dst      netip.AddrPort
		mode     string
		endpoint netip.AddrPort
		refused  string
		repeat   int
	}{
		{name: "VIP through the tunnel", dst: vip, mode: ModeTunnel, endpoint: netip.AddrPortFrom(B, appPort)},
		{name: "outside the mesh: passthrough", dst: netip.AddrPortFrom(B, outPort), mode: ModePassthrough},
		{name: "pod called by IP: tunnel", dst: netip.AddrPortFrom(B, appPort), mode: ModeTunnel, endpoint: netip.AddrPortFrom(B, appPort),
			snap: func(s *xdsconf.Snapshot) { s.Endpoints[B] = s.Clusters["outbound|80||echo.default.svc.cluster.local"] }},
		{name: "retry on another endpoint", dst: vip, mode: ModeTunnel, endpoint: netip.AddrPortFrom(B, appPort), repeat: 2,
			snap: func(s *xdsconf.Snapshot) {
				// One endpoint is an address on the veth's subnet that
				// no host has: its connect times out. Round robin tries
				// it first for one of the two connections.
				c := s.Clusters["outbound|80||echo.default.svc.cluster.local"]
				c.ConnectTimeout = 200 * time.Millisecond
				c.Endpoints = endpoints(netip.AddrPortFrom(netip.MustParseAddr("10.199.0.77"), appPort), netip.AddrPortFrom(B, appPort))
			}},
		{name: "plaintext endpoint", dst: vip, mode: ModePlaintext, endpoint: netip.AddrPortFrom(B, appPort),
			snap: func(s *xdsconf.Snapshot) {
				cl := s.Clusters["outbound|80||echo.default.svc.cluster.local"]
				cl.TLS.PlaintextMatch = true
				cl.Endpoints.Hosts[0].Plaintext = true
			}},
		{name: "plaintext metadata without the tlsMode match", dst: vip, mode: ModeTunnel, endpoint: netip.AddrPortFrom(B, appPort),
			snap: func(s *xdsconf.Snapshot) {
				// Envoy honours the metadata only through
				// transport_socket_matches: mTLS stays.
				s.Clusters["outbound|80||echo.default.svc.cluster.local"].Endpoints.Hosts[0].Plaintext = true
			}},
		{name: "REGISTRY_ONLY refuses", dst: netip.AddrPortFrom(B, outPort), refused: ReasonPassthroughOff,
			snap: func(s *xdsconf.Snapshot) { s.Outbound.Default = nil }},
		{name: "no endpoint", dst: vip, refused: ReasonNoEndpoint,
			snap: func(s *xdsconf.Snapshot) {
				s.Clusters["outbound|80||echo.default.svc.cluster.local"].Endpoints = &xdsconf.Endpoints{}
			}},
		{name: "unknown cluster", dst: vip, refused: ReasonNoCluster,
			snap: func(s *xdsconf.Snapshot) { delete(s.Clusters, "outbound|80||echo.default.svc.cluster.local") }},
		{name: "server ID not in SANs", dst: vip, refused: ReasonUpstream,
			snap: func(s *xdsconf.Snapshot) {
				s.Clusters["outbound|80||echo.default.svc.cluster.local"].TLS.SANs = []spiffeid.ID{l.clientID}
			}},
		{name: "no config", dst: vip, refused: ReasonNoConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := l.snapshot(nil)
			if tt.snap != nil {
				tt.snap(s)
			}
			if tt.name == "no config" {
				s = nil
			}
			l.snap.Store(s)
			before := l.refused("outbound", tt.refused)
			for range max(tt.repeat, 1) {
				c := l.callOutbound(t, tt.dst)
				if tt.refused != "" {
					expectClosed(t, c)
					l.waitRefused(t, "outbound", tt.refused, before+1)
					return
				}
				echo(t, c, 64<<10)
				var row ConnInfo
				for _, r := range l.p.Connections() {
					if r.Direction == DirectionOutbound && r.ID > row.ID {
						row = r
					}
				}
				if row.Mode != tt.mode || row.Endpoint != tt.endpoint || row.Destination != tt.dst {
					t.Errorf("row mode %q endpoint %v destination %v; want %q, %v, %v", row.Mode, row.Endpoint, row.Destination, tt.mode, tt.endpoint, tt.dst)
				}
			}
		})
	}
	if v := testutil.ToFloat64(l.p.m.conns.WithLabelValues(DirectionOutbound, resultPassthrough)); v != 1 {
		t.Errorf("connections_total{outbound,passthrough} = %v, want 1", v)
	}
}

func TestInboundPlaintext(t *testing.T) {
	l := newLab(t)
	B := l.pair.B
	for _, tt := range []struct {
		name    string
		dst     netip.AddrPort
		refused string
	}{
		{"PERMISSIVE port", B.AddrPort(permPort), ""},
		{"STRICT port", B.AddrPort(appPort), ReasonNoChain},
		{"another pod's IP", l.pair.A.AddrPort(permPort), ReasonBadDestination},
		{"the agent's own port", B.AddrPort(slowpath.TunnelPort), ReasonBadDestination},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l.orig.Store(origKey{"server", slowpath.InboundPlaintextPort}, tt.dst)
			before := l.refused("inbound-plaintext", tt.refused)
			c := dialMaybe(t, l.pair.A, B.AddrPort(slowpath.InboundPlaintextPort))
			if tt.refused == "" {
				echo(t, c, 64<<10)
				return
			}
			expectClosed(t, c)
			l.waitRefused(t, "inbound-plaintext", tt.refused, before+1)
		})
	}
}

func TestRBAC(t *testing.T) {
	l := newLab(t)
	principalIs := func(id spiffeid.ID) func(xdsconf.AuthzInput) bool {
		return func(in xdsconf.AuthzInput) bool { return in.Principal == id.String() }
	}
	tests := []struct {
		name   string
		rbac   *xdsconf.RBAC
		port   int // the listener the client comes in by
		policy string
		allow  bool
	}{
		{"DENY matches", &xdsconf.RBAC{Deny: &xdsconf.RBACFilter{Policies: []*xdsconf.Policy{{Name: "ns[default]-policy[deny-client]-rule[0]", Match: principalIs(l.clientID)}}}},
			slowpath.TunnelPort, "ns[default]-policy[deny-client]-rule[0]", false},
		{"empty ALLOW denies", &xdsconf.RBAC{Allow: &xdsconf.RBACFilter{}}, slowpath.TunnelPort, "default-deny", false},
		{"ALLOW matches", &xdsconf.RBAC{Allow: &xdsconf.RBACFilter{Policies: []*xdsconf.Policy{{Name: "allow-client", Match: principalIs(l.clientID)}}}},
			slowpath.TunnelPort, "", true},
		{"plaintext has no principal", &xdsconf.RBAC{Allow: &xdsconf.RBACFilter{Policies: []*xdsconf.Policy{{Name: "allow-client", Match: principalIs(l.clientID)}}}},
			slowpath.InboundPlaintextPort, "default-deny", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l.snap.Store(l.snapshot(tt.rbac))
			before := testutil.ToFloat64(l.p.m.denied.WithLabelValues(tt.policy))
			var c *net.TCPConn
			if tt.port == slowpath.TunnelPort {
				c = l.callOutbound(t, vip)
			} else {
				l.orig.Store(origKey{"server", slowpath.InboundPlaintextPort}, l.pair.B.AddrPort(permPort))
				c = dialMaybe(t, l.pair.A, l.pair.B.AddrPort(slowpath.InboundPlaintextPort))
			}
			if tt.allow {
				echo(t, c, 1<<10)
				return
			}
			if c != nil {
				c.Write([]byte("hello"))
			}
			expectClosed(t, c)
			testenv.Until(t, 10*time.Second, "rbac_denied_total{"+tt.policy+"}", func() bool {
				return testutil.ToFloat64(l.p.m.denied.WithLabelValues(tt.policy)) >= before+1
			})
		})
	}
}

// rawTunnel dials the server pod's tunnel port from the client pod's
// namespace.
func (l *lab) rawTunnel(t *testing.T) *net.TCPConn {
	return dialMaybe(t, l.pair.A, l.pair.B.AddrPort(slowpath.TunnelPort))
}

func TestTunnelRefusals(t *testing.T) {
	l := newLab(t, func(c *Config) { c.HandshakeTimeout = 2 * time.Second })
	other := newTestCA(t, "other.local")
	good, _ := l.ca.svid(t, "/ns/default/sa/client")
	foreign, _ := other.svid(t, "/ns/default/sa/client")
	B := l.pair.B
	tlsCfg := func(cert *tls.Certificate, alpn ...string) *tls.Config {
		c := &tls.Config{InsecureSkipVerify: true, NextProtos: alpn, MinVersion: tls.VersionTLS12}
		if cert != nil {
			c.Certificates = []tls.Certificate{*cert}
		}
		return c
	}
	header := func(src, dst netip.AddrPort) []byte {
		b, err := proxyproto.Header{Command: proxyproto.Proxy, Source: src, Destination: dst}.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	src := l.pair.A.AddrPort(40000)
	tests := []struct {
		name   string
		tls    *tls.Config // nil: no TLS at all
		send   []byte
		reason string
	}{
		{"garbage", nil, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ReasonHandshake},
		{"no client certificate", tlsCfg(nil, slowpath.TunnelALPN), header(src, B.AddrPort(appPort)), ReasonNoClientCert},
		{"other trust domain", tlsCfg(foreign, slowpath.TunnelALPN), header(src, B.AddrPort(appPort)), ReasonBadTrustDomain},
		{"wrong ALPN", tlsCfg(good, "h2"), header(src, B.AddrPort(appPort)), ReasonALPN},
		{"no ALPN", tlsCfg(good), header(src, B.AddrPort(appPort)), ReasonALPN},
		{"TLS 1.2", func() *tls.Config { c := tlsCfg(good, slowpath.TunnelALPN); c.MaxVersion = tls.VersionTLS12; return c }(), nil, ReasonHandshake},
		{"truncated PROXY header", tlsCfg(good, slowpath.TunnelALPN), header(src, B.AddrPort(appPort))[:20], ReasonProxyHeader},
		{"garbage PROXY header", tlsCfg(good, slowpath.TunnelALPN), []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), ReasonProxyHeader},
		{"LOCAL command", tlsCfg(good, slowpath.TunnelALPN), []byte(proxyproto.Signature + "\x20\x00\x00\x00"), ReasonProxyHeader},
		{"source not the peer", tlsCfg(good, slowpath.TunnelALPN), header(netip.MustParseAddrPort("10.199.0.99:40000"), B.AddrPort(appPort)), ReasonProxyHeader},
		{"destination not this pod", tlsCfg(good, slowpath.TunnelALPN), header(src, l.pair.A.AddrPort(appPort)), ReasonBadDestination},
		{"destination the agent", tlsCfg(good, slowpath.TunnelALPN), header(src, B.AddrPort(slowpath.OutboundPort)), ReasonBadDestination},
		{"no chain for the port", tlsCfg(good, slowpath.TunnelALPN), header(src, B.AddrPort(6000)), ReasonNoChain},
		{"chain without TLS", tlsCfg(good, slowpath.TunnelALPN), header(src, B.AddrPort(7070)), ReasonNoChain},
		{"slow PROXY header", tlsCfg(good, slowpath.TunnelALPN), nil, ReasonProxyHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := l.refused("inbound", tt.reason)
			l.evMu.Lock()
			evBefore := len(l.events)
			l.evMu.Unlock()
			raw := l.rawTunnel(t)
			if raw == nil {
				t.Fatal("the tunnel port reset the connection before it sent anything")
			}
			var c net.Conn = raw
			if tt.tls != nil {
				tc := tls.Client(raw, tt.tls)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				// The handshake fails on the client already for some
				// (alerts); the server's count is what matters.
				if err := tc.HandshakeContext(ctx); err == nil {
					c = tc
				}
			}
			if c != net.Conn(raw) || tt.tls == nil {
				if len(tt.send) > 0 {
					c.Write(tt.send)
				}
				if tt.name == "truncated PROXY header" {
					c.(*tls.Conn).CloseWrite()
				}
			}
			expectClosed(t, c)
			l.waitRefused(t, "inbound", tt.reason, before+1)
			testenv.Until(t, 10*time.Second, "a refused event with reason "+tt.reason, func() bool {
				l.evMu.Lock()
				defer l.evMu.Unlock()
				for _, e := range l.events[evBefore:] {
					if e.Kind == EventRefused && e.Reason == tt.reason && e.Conn.Listener == "inbound" && e.Conn.State == StateClosed {
						return true
					}
				}
				return false
			})
		})
	}
}

func TestSlowHandshakesBounded(t *testing.T) {
	const pending = 4
	l := newLab(t, func(c *Config) {
		c.HandshakeTimeout = 500 * time.Millisecond
		c.MaxPendingHandshakes = pending
	})
	base := runtime.NumGoroutine()
	// Connections that never send a byte: the first ones hold pending
	// slots until the handshake deadline, the rest are refused at once.
	const n = 20
	conns := make([]*net.TCPConn, n)
	for i := range conns {
		conns[i] = l.rawTunnel(t) // nil when refused that fast
	}
	l.waitRefused(t, "inbound", ReasonOverload, n-pending)
	if g := runtime.NumGoroutine() - base; g > 2*pending {
		t.Errorf("%d goroutines more with %d slow clients, want at most %d", g, n, 2*pending)
	}
	start := time.Now()
	for _, c := range conns {
		expectClosed(t, c)
	}
	l.waitRefused(t, "inbound", ReasonHandshake, pending)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("slow handshakes closed after %v, deadline 500ms", d)
	}
	// The slots are free again: a good connection goes through.
	echo(t, l.callOutbound(t, vip), 1<<10)
}

func TestRemovePodAndReAdd(t *testing.T) {
	l := newLab(t)
	c := l.callOutbound(t, vip)
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	// AddPod again (an agent restart) changes nothing: the connection
	// lives on.
	if err := l.p.AddPod(l.srv); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("after a repeated AddPod: %q, %v", buf, err)
	}
	l.p.RemovePod("default", "server")
	// The tunnel's server side is gone, so the client's connection ends
	// and the server pod has no listener left.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(buf); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after RemovePod: %v, want the connection closed", err)
	}
	err := l.pair.A.Do(func() error {
		c, err := net.DialTimeout("tcp", l.pair.B.AddrPort(slowpath.TunnelPort).String(), 5*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("dial the removed pod's tunnel port: %v, want connection refused", err)
	}
	for _, r := range l.p.Connections() {
		if r.Pod == "default/server" {
			t.Errorf("removed pod still has a row: %+v", r)
		}
	}
	if got := l.p.Pods(); len(got) != 1 || got[0] != "default/client" {
		t.Errorf("Pods() = %v", got)
	}
	// Served again, it works again.
	if err := l.p.AddPod(l.srv); err != nil {
		t.Fatal(err)
	}
	echo(t, l.callOutbound(t, vip), 1<<10)
}

func TestMarkedSockets(t *testing.T) {
	testenv.NeedRoot(t)
	pair := netnstest.NewPair(t)
	ln := pair.B.Listen(t, 7000)
	defer ln.Close()
	ps := &podState{p: &Proxy{dials: make(chan struct{}, 1)}, pod: Pod{Namespace: "ns", Name: "p", Netns: nsFile(t, pair.A), IPs: []netip.Addr{pair.A.Addr}}}
	c, err := ps.dial(context.Background(), pair.B.AddrPort(7000), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, _ := c.SyscallConn()
	var mark int
	var serr error
	rc.Control(func(fd uintptr) { mark, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) })
	if serr != nil || mark != slowpath.Mark {
		t.Errorf("SO_MARK = %#x, %v; want %#x", mark, serr, slowpath.Mark)
	}
	if got := addrPortOf(c.LocalAddr()).Addr(); got != pair.A.Addr {
		t.Errorf("source %v, want the pod's IP %v", got, pair.A.Addr)
	}
}

// clientHello returns the ClientHello crypto/tls sends for serverName.
func clientHello(t *testing.T, serverName string) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		tls.Client(b, &tls.Config{ServerName: serverName}).Handshake()
		b.Close()
	}()
	// One record: header, then its length.
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(a, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(a, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr, body...)
}

func TestOutboundServerName(t *testing.T) {
	l := newLab(t)
	B := l.pair.B.Addr
	tlsVIP := netip.MustParseAddrPort("10.96.0.30:443")
	s := l.snapshot(nil)
	sni := &xdsconf.Cluster{Name: "outbound|443||api.example.com", Type: xdsconf.ClusterEDS, LB: xdsconf.RoundRobin,
		ConnectTimeout: 5 * time.Second, Endpoints: endpoints(netip.AddrPortFrom(B, outPort))}
	none := &xdsconf.Cluster{Name: "outbound|443||other", Type: xdsconf.ClusterEDS, Endpoints: &xdsconf.Endpoints{}}
	s.Clusters[sni.Name], s.Clusters[none.Name] = sni, none
	vipPrefix := []netip.Prefix{netip.PrefixFrom(tlsVIP.Addr(), 32)}
	s.Outbound.Chains = append(s.Outbound.Chains,
		&xdsconf.FilterChain{Name: "10.96.0.30_443|api.example.com", Prefixes: vipPrefix, Port: 443, ServerNames: []string{"api.example.com"},
			TCP: &xdsconf.TCPProxy{Clusters: []xdsconf.WeightedCluster{{Name: sni.Name, Weight: 1}}}},
		&xdsconf.FilterChain{Name: "10.96.0.30_443", Prefixes: vipPrefix, Port: 443,
			TCP: &xdsconf.TCPProxy{Clusters: []xdsconf.WeightedCluster{{Name: none.Name, Weight: 1}}}})
	l.snap.Store(s)

	// The ClientHello chooses the chain, and reaches the upstream
	// unchanged, before the rest.
	payload := make([]byte, 256<<10)
	rand.Read(payload)
	echoData(t, l.callOutbound(t, tlsVIP), append(clientHello(t, "api.example.com"), payload...))
	var row ConnInfo
	for _, r := range l.p.Connections() {
		if r.Direction == DirectionOutbound {
			row = r
		}
	}
	if row.ServerName != "api.example.com" || row.Cluster != sni.Name || row.Chain != "10.96.0.30_443|api.example.com" {
		t.Errorf("row server name %q cluster %q chain %q", row.ServerName, row.Cluster, row.Chain)
	}
	// Another name, and no TLS at all, take the chain without names.
	for _, first := range [][]byte{clientHello(t, "other.example.com"), []byte("plain text, not TLS\n")} {
		before := l.refused("outbound", ReasonNoEndpoint)
		c := l.callOutbound(t, tlsVIP)
		c.Write(first)
		expectClosed(t, c)
		l.waitRefused(t, "outbound", ReasonNoEndpoint, before+1)
	}
}

func TestMaxConnections(t *testing.T) {
	l := newLab(t)
	s := l.snapshot(nil)
	s.Clusters["outbound|80||echo.default.svc.cluster.local"].MaxConnections = 1
	l.snap.Store(s)
	held := l.callOutbound(t, vip)
	if _, err := held.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	one := make([]byte, 1)
	if _, err := io.ReadFull(held, one); err != nil {
		t.Fatal(err)
	}
	// The one connection allowed is in use: the next overflows.
	expectClosed(t, l.callOutbound(t, vip))
	l.waitRefused(t, "outbound", ReasonOverflow, 1)
	// Once it is closed, a new one goes through.
	held.Close()
	testenv.Until(t, 10*time.Second, "the held connection's rows closed", func() bool {
		for _, r := range l.p.Connections() {
			if r.State != StateClosed {
				return false
			}
		}
		return true
	})
	echo(t, l.callOutbound(t, vip), 1<<10)
}

func TestEndToEndIPv6(t *testing.T) {
	l := newLabTB(t, []netnstest.Option{netnstest.WithSubnet(netip.MustParsePrefix("fd00:199::/64"))})
	// Outbound by an IPv6 VIP, the tunnel over IPv6, the PROXY header's
	// INET6 block, and the app's connection from the pod's IPv6 address.
	echo(t, l.callOutbound(t, vip6), 1<<20)
	if got := <-l.serverRemote; got.Addr() != l.pair.B.Addr {
		t.Errorf("the app saw source %v, want the pod's %v", got, l.pair.B.Addr)
	}
	testenv.Until(t, 10*time.Second, "both rows closed with IPv6 addresses", func() bool {
		n := 0
		for _, r := range l.p.Connections() {
			if r.State == StateClosed && r.Source.Addr() == l.pair.A.Addr && r.PeerIdentity != "" {
				n++
			}
		}
		return n == 2
	})
	// Plaintext inbound over IPv6 to the PERMISSIVE port.
	l.orig.Store(origKey{"server", slowpath.InboundPlaintextPort}, l.pair.B.AddrPort(permPort))
	echo(t, dialMaybe(t, l.pair.A, l.pair.B.AddrPort(slowpath.InboundPlaintextPort)), 1<<10)
}

// TestWithCapture runs the proxy behind the real capture rules
// (slowpath/capture, nftables) and the real SO_ORIGINAL_DST: apps call
// addresses, not the proxy.
func TestWithCapture(t *testing.T) {
	l := newLab(t, func(c *Config) { c.OriginalDestination = nil })
	for _, pod := range []Pod{l.client, l.srv} {
		if err := capture.Install(int(pod.Netns.Fd()), capture.Config{}); err != nil {
			t.Fatal(err)
		}
	}
	// The VIP is routed out of the client pod, as a cluster's service
	// range is; capture redirects it before it leaves.
	if err := l.pair.A.Do(func() error {
		_, dst, _ := net.ParseCIDR("10.96.0.0/16")
		return netlink.RouteAdd(&netlink.Route{Dst: dst, LinkIndex: l.pair.A.Index})
	}); err != nil {
		t.Fatal(err)
	}
	B := l.pair.B
	call := func(dst netip.AddrPort) *net.TCPConn { return dialMaybe(t, l.pair.A, dst) }

	// By VIP: outbound capture → tunnel → the app, which is not
	// redirected again (the proxy's socket is marked).
	echo(t, call(vip), 1<<20)
	var tunnelled bool
	for _, r := range l.p.Connections() {
		tunnelled = tunnelled || (r.Direction == DirectionOutbound && r.Destination == vip && r.Mode == ModeTunnel && r.PeerIdentity == l.serverID.String())
	}
	if !tunnelled {
		t.Errorf("no tunnelled outbound row for %v (SO_ORIGINAL_DST): %+v", vip, l.p.Connections())
	}
	// By pod IP to a STRICT port: the client's outbound capture sends it
	// to the passthrough chain (the pod is not in Endpoints), whose
	// plaintext connection the server's inbound capture sends to 15006,
	// where STRICT has no chain.
	before := l.refused("inbound-plaintext", ReasonNoChain)
	expectClosed(t, call(B.AddrPort(appPort)))
	l.waitRefused(t, "inbound-plaintext", ReasonNoChain, before+1)
	// The same to a PERMISSIVE port goes through.
	echo(t, call(B.AddrPort(permPort)), 1<<10)
	testenv.Until(t, 10*time.Second, fmt.Sprintf("a closed inbound-plaintext row for %v", B.AddrPort(permPort)), func() bool {
		for _, r := range l.p.Connections() {
			if r.Listener == "inbound-plaintext" && r.Destination == B.AddrPort(permPort) && r.State == StateClosed && r.Reason == "done" {
				return true
			}
		}
		return false
	})

	// Fail closed: without the proxy the rules stay and nothing
	// listens, so the app's connection is refused, never sent in clear.
	l.p.RemovePod("default", "client")
	err := l.pair.A.Do(func() error {
		c, err := net.DialTimeout("tcp", vip.String(), 5*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("call the VIP with the client pod not served: %v, want connection refused", err)
	}
}

// Where tunnels stay in userspace, a second tunnel between the same pods
// resumes the first one's TLS session (no certificate signatures), and
// is still verified: both identities in its row.
func TestTunnelResumes(t *testing.T) {
	l := newLab(t)
	if !l.p.userspaceOnly {
		t.Skip("this kernel has kTLS: tunnels keep the offload option and do not resume")
	}
	var outbound []ConnInfo
	for i := range 2 {
		c := l.callOutbound(t, vip)
		echo(t, c, 1<<10)
		c.Close()
		testenv.Until(t, 10*time.Second, fmt.Sprintf("outbound row %d closed", i+1), func() bool {
			outbound = outbound[:0]
			for _, r := range l.p.Connections() {
				if r.Direction == DirectionOutbound && r.State == StateClosed {
					outbound = append(outbound, r)
				}
			}
			return len(outbound) == i+1
		})
	}
	slices.SortFunc(outbound, func(a, b ConnInfo) int { return cmp.Compare(a.ID, b.ID) })
	first, second := outbound[0], outbound[1]
	if first.TLSResumed || !second.TLSResumed {
		t.Errorf("resumed: first %v, second %v; want a full handshake, then a resumption", first.TLSResumed, second.TLSResumed)
	}
	if second.PeerIdentity == "" || second.LocalIdentity == "" || second.PeerIdentity != first.PeerIdentity {
		t.Errorf("resumed tunnel identities local %q peer %q (first peer %q): want both, as verified again", second.LocalIdentity, second.PeerIdentity, first.PeerIdentity)
	}
}
