package proxy

import (
	"context"
	"errors"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// L7. A connection whose filter chain is an HTTP connection manager is
// not relayed as bytes: it is handed to one of the pod's two net/http
// servers, which read its requests (HTTP/1.1, or HTTP/2 with prior
// knowledge: h2c) and call the outbound or inbound handler per request.
//
//   - outbound (15001): the app's connections; each request is routed
//     (RDS), balanced over the cluster's endpoints and sent over the
//     pod's pooled HTTP/2 tunnel to the endpoint (httpTunnels), or in
//     plaintext to a plaintext endpoint.
//   - inbound: pooled HTTP/2 tunnels from other agents (15008, ALPN
//     slowpath.TunnelALPNHTTP2), plaintext connections to PERMISSIVE
//     ports (15006) and single-stream tunnels (ALPN slowpath.TunnelALPN)
//     to HTTP ports, which carry upgrades; each request is authorized
//     (HTTP RBAC) and sent to the app.

// httpConn is a connection handed to a pod's HTTP server: the downstream
// (the app's TCP socket, or the tunnel's TLS), its row in the table, and
// what the handlers need to know about it. It counts the bytes both ways
// and tells serveHTTP when the server is done with it.
type httpConn struct {
	net.Conn
	c    *conn
	meta *connMeta
	// fromDown and fromUp are the row's counters of the bytes read from
	// this connection and written to it (by direction: c.out, c.in).
	fromDown, fromUp *atomic.Uint64
	bytes            interface{ Add(float64) }
	done             chan struct{}
	closeOnce        sync.Once
}

func (h *httpConn) Read(p []byte) (int, error) {
	n, err := h.Conn.Read(p)
	if n > 0 {
		h.fromDown.Add(uint64(n))
		h.bytes.Add(float64(n))
	}
	return n, err
}

func (h *httpConn) Write(p []byte) (int, error) {
	n, err := h.Conn.Write(p)
	if n > 0 {
		h.fromUp.Add(uint64(n))
		h.bytes.Add(float64(n))
	}
	return n, err
}

func (h *httpConn) Close() error {
	err := h.Conn.Close()
	h.closeOnce.Do(func() { close(h.done) })
	return err
}

// connMeta is what the request handlers know of the connection a request
// came on.
type connMeta struct {
	c *conn
	// chain is the filter chain the connection matched, in snap; a
	// request made after the config changed matches again (chainFor).
	chain *xdsconf.FilterChain
	snap  *xdsconf.Snapshot
	cur   atomic.Pointer[chainAt]
	// Source and Destination as the apps see them: the caller's address
	// and the VIP:port (outbound) or pod IP:port (inbound) called.
	src, dst netip.AddrPort
	// principal is the peer's verified SPIFFE ID (inbound over the
	// tunnel; "" in plaintext), local the pod's own.
	principal, local string
	// peerCert is the peer's leaf certificate (DER), for the
	// x-forwarded-client-cert hash.
	peerCert []byte
	// xfcc is the x-forwarded-client-cert element of the peer (made
	// once per connection; "" in plaintext).
	xfcc string
	// tunnel: the connection came over the mesh's tunnel (the calling
	// agent speaks for the caller: its x-fibmesh-protocol is trusted).
	tunnel bool
}

// chainAt is a connection's filter chain in one snapshot.
type chainAt struct {
	snap  *xdsconf.Snapshot
	chain *xdsconf.FilterChain
}

// chainFor returns the connection's filter chain in snap: the one it
// matched when it opened while the config is the same, else matched
// again (an edited AuthorizationPolicy, route or port mode applies to
// the next request of a connection open before, as Envoy applies a
// listener update). nil when no HTTP chain matches any more.
func (m *connMeta) chainFor(snap *xdsconf.Snapshot, inbound bool) *xdsconf.FilterChain {
	if snap == m.snap || snap == nil {
		return m.chain
	}
	if ca := m.cur.Load(); ca != nil && ca.snap == snap {
		return ca.chain
	}
	l := snap.Outbound
	if inbound {
		l = snap.InboundPlaintext
		if m.tunnel {
			l = snap.Inbound
		}
	}
	var chain *xdsconf.FilterChain
	if l != nil {
		chain = l.Match(xdsconf.MatchInput{Destination: m.dst, Source: m.src})
	}
	if chain != nil && (chain.HTTP == nil || inbound && m.tunnel && chain.TLS == nil) {
		chain = nil
	}
	m.cur.Store(&chainAt{snap: snap, chain: chain})
	return chain
}

type metaKey struct{}

// metaOf returns the connection metadata of a request's context.
func metaOf(ctx context.Context) *connMeta {
	m, _ := ctx.Value(metaKey{}).(*connMeta)
	return m
}

// chanListener is the net.Listener of a pod's HTTP server: the
// connections the proxy hands it, after their chain was chosen.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }

// push hands a connection to the server; false when it is closed.
func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

// Defaults of the HTTP servers and clients.
const (
	// httpIdleTimeout closes a downstream HTTP connection without
	// requests for that long (Envoy's HCM idle_timeout default is 1h).
	httpIdleTimeout = time.Hour
	// httpHeaderTimeout bounds the reading of a request's headers once
	// its first byte arrived.
	httpHeaderTimeout = 30 * time.Second
	// maxStreams is the HTTP/2 concurrent streams each server allows per
	// connection (the pooled tunnel carries a whole pod's requests to
	// one endpoint).
	maxStreams = 4096
	// tunnelConnWindow and tunnelStreamWindow are the HTTP/2 flow
	// control windows of the tunnels (and the apps' h2c connections):
	// 16 streams at full window before the connection's is full.
	tunnelConnWindow   = 4 << 20
	tunnelStreamWindow = 256 << 10
	// maxHeaderBytes bounds a request's headers (Envoy's
	// max_request_headers_kb default is 60): beyond, 431.
	maxHeaderBytes = 60 << 10
	// appIdleConns is how many idle keep-alive connections to one app
	// (or plaintext endpoint) a pod keeps.
	appIdleConns = 256
)

// handoff is a connection whose chain is an HTTP connection manager,
// ready for a pod's HTTP server.
type handoff struct {
	conn     net.Conn // the downstream: TCP, or the tunnel's TLS
	inbound  bool
	meta     *connMeta
	tunnelH2 bool // the pooled HTTP/2 tunnel
}

// l7 is a pod's HTTP machinery.
type l7 struct {
	out, in     *http.Server
	outLn, inLn *chanListener
	// appH1 and appH2 reach the app (inbound) and plaintext endpoints
	// (outbound) from the pod's namespace: HTTP/1.1 and h2c.
	appH1, appH2 *http.Transport
	// tunnels are the pod's pooled HTTP/2 tunnels, by endpoint.
	tunnels *tunnelPool
	// breakers and outliers are per cluster name, kept across config
	// snapshots (a sidecar's view: this pod's requests only).
	breakers sync.Map // string → *resilience.Breaker
	outliers sync.Map // string → *resilience.Outlier
	wg       sync.WaitGroup
}

// newL7 builds a pod's servers and clients; start serves them.
func (ps *podState) newL7() *l7 {
	l := &l7{outLn: newChanListener(), inLn: newChanListener()}
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	// A pooled tunnel carries a whole pod's requests to one endpoint:
	// one slow reader must not stall the others, so the connection's
	// window is much larger than a stream's.
	h2cfg := &http.HTTP2Config{MaxConcurrentStreams: maxStreams,
		MaxReceiveBufferPerConnection: tunnelConnWindow, MaxReceiveBufferPerStream: tunnelStreamWindow}
	connCtx := func(ctx context.Context, c net.Conn) context.Context {
		if hc, ok := c.(*httpConn); ok {
			return context.WithValue(ctx, metaKey{}, hc.meta)
		}
		return ctx
	}
	base := func(h http.HandlerFunc) *http.Server {
		return &http.Server{
			Handler:           h,
			Protocols:         protos,
			HTTP2:             h2cfg,
			IdleTimeout:       httpIdleTimeout,
			ReadHeaderTimeout: httpHeaderTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			ConnContext:       connCtx,
			// net/http's own reports (a handler's panic, an HTTP/2
			// protocol error) go to the Events hook.
			ErrorLog: log.New(serverErrors{ps}, "", 0),
			BaseContext: func(net.Listener) context.Context {
				return ps.ctx
			},
		}
	}
	l.out = base(ps.serveOutboundHTTP)
	l.in = base(ps.serveInboundHTTP)
	dial := func(ctx context.Context, _, addr string) (net.Conn, error) {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, err
		}
		return ps.dial(ctx, ap, ps.p.cfg.ConnectTimeout)
	}
	h1 := new(http.Protocols)
	h1.SetHTTP1(true)
	h2c := new(http.Protocols)
	h2c.SetUnencryptedHTTP2(true)
	l.appH1 = &http.Transport{DialContext: dial, Protocols: h1, MaxIdleConnsPerHost: appIdleConns,
		IdleConnTimeout: 90 * time.Second, DisableCompression: true}
	l.appH2 = &http.Transport{DialContext: dial, Protocols: h2c, IdleConnTimeout: 90 * time.Second,
		DisableCompression: true, HTTP2: &http.HTTP2Config{MaxConcurrentStreams: maxStreams,
			MaxReceiveBufferPerConnection: tunnelConnWindow, MaxReceiveBufferPerStream: tunnelStreamWindow}}
	l.tunnels = newTunnelPool(ps)
	return l
}

func (l *l7) start() {
	for _, s := range []struct {
		srv *http.Server
		ln  *chanListener
	}{{l.out, l.outLn}, {l.in, l.inLn}} {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			s.srv.Serve(s.ln)
		}()
	}
}

// stop closes the servers (and every connection they hold), the pooled
// tunnels and the idle app connections.
func (l *l7) stop() {
	l.out.Close()
	l.in.Close()
	l.outLn.Close()
	l.inLn.Close()
	l.tunnels.close()
	l.appH1.CloseIdleConnections()
	l.appH2.CloseIdleConnections()
	l.wg.Wait()
}

// serveHTTP hands an established L7 connection to the pod's server and
// returns when the server is done with it.
func (ps *podState) serveHTTP(c *conn, h *handoff) {
	p := ps.p
	c.update(func(i *ConnInfo) {
		i.State = StateL7
		if i.Mode == "" {
			i.Mode = ModeHTTP
		}
	})
	p.m.conns.WithLabelValues(c.direction, resultEstablished).Inc()
	active := p.m.active.WithLabelValues(c.direction)
	active.Inc()
	if p.cfg.Events != nil {
		p.cfg.Events(Event{Kind: EventEstablished, Conn: c.snapshot()})
	}
	hc := &httpConn{Conn: h.conn, c: c, meta: h.meta, done: make(chan struct{}),
		bytes: p.m.bytes.WithLabelValues(c.direction)}
	// Outbound the app is downstream; inbound the peer is.
	hc.fromDown, hc.fromUp = &c.out, &c.in
	if c.direction == DirectionInbound {
		hc.fromDown, hc.fromUp = &c.in, &c.out
	}
	ln := ps.l7.outLn
	if h.inbound {
		ln = ps.l7.inLn
	}
	if ln.push(hc) {
		<-hc.done
	} else {
		hc.Close()
	}
	active.Dec()
	info := c.finish("done")
	if p.cfg.Events != nil {
		p.cfg.Events(Event{Kind: EventClosed, Conn: info, Reason: "done"})
	}
}

// serverErrors turns net/http's log lines into EventHTTPError events
// (and counts them): the library does not log, and a recovered panic
// must not go unseen.
type serverErrors struct{ ps *podState }

func (e serverErrors) Write(p []byte) (int, error) {
	px := e.ps.p
	px.m.httpErrors.Inc()
	if px.cfg.Events != nil {
		px.cfg.Events(Event{Kind: EventHTTPError, Conn: ConnInfo{Pod: e.ps.key()},
			Err: errors.New(strings.TrimSpace(string(p)))})
	}
	return len(p), nil
}

// streamConn is a tunnel's TLS stream as a net.Conn, for the HTTP server.
type streamConn struct{ tlsStream }

func (s *streamConn) Close() error {
	err := s.tc.Close()
	s.raw.Close()
	return err
}

func (s *streamConn) LocalAddr() net.Addr                { return s.raw.LocalAddr() }
func (s *streamConn) RemoteAddr() net.Addr               { return s.raw.RemoteAddr() }
func (s *streamConn) SetDeadline(d time.Time) error      { return s.raw.SetDeadline(d) }
func (s *streamConn) SetReadDeadline(d time.Time) error  { return s.raw.SetReadDeadline(d) }
func (s *streamConn) SetWriteDeadline(d time.Time) error { return s.raw.SetWriteDeadline(d) }
