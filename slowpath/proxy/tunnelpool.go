package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/fibmesh/fibmesh/slowpath"
)

// tunnelPool is a pod's pooled HTTP/2 tunnels: one per endpoint (pod
// IP:port), carrying every request of the pod to it, one stream each.
// A tunnel is opened on the first request to an endpoint and replaced
// when it fails, receives a GOAWAY, has no stream left, or has carried
// the cluster's max_requests_per_connection.
type tunnelPool struct {
	ps *podState
	// t dials nothing itself: NewClientConn calls its DialContext, which
	// opens the tunnel (tunnelDial) described by the context.
	t *http.Transport

	mu     sync.Mutex
	m      map[netip.AddrPort]*tunnelEntry
	closed bool
}

// tunnelEntry is one endpoint's tunnel, or the dial in progress.
type tunnelEntry struct {
	cc       *http.ClientConn
	peer     spiffeid.ID
	requests uint32
	dialing  *tunnelDialing
}

type tunnelDialing struct {
	done chan struct{}
	cc   *http.ClientConn
	peer spiffeid.ID
	err  error
}

// tunnelDialKey carries a dial's parameters through NewClientConn to
// the transport's DialContext.
type tunnelDialKey struct{}

type tunnelDialParams struct {
	endpoint netip.AddrPort
	sans     []spiffeid.ID
	timeout  time.Duration
	peer     *spiffeid.ID // set by the dial
}

func newTunnelPool(ps *podState) *tunnelPool {
	tp := &tunnelPool{ps: ps, m: map[netip.AddrPort]*tunnelEntry{}}
	h2c := new(http.Protocols)
	h2c.SetUnencryptedHTTP2(true)
	tp.t = &http.Transport{
		Protocols:          h2c,
		DisableCompression: true,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          maxStreams,
			MaxReceiveBufferPerConnection: tunnelConnWindow,
			MaxReceiveBufferPerStream:     tunnelStreamWindow,
			// A tunnel whose peer vanished (a node gone without a
			// FIN) is found by a PING after 30s without frames.
			SendPingTimeout: 30 * time.Second,
			PingTimeout:     15 * time.Second,
		},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			dp, _ := ctx.Value(tunnelDialKey{}).(*tunnelDialParams)
			if dp == nil {
				return nil, errors.New("tunnel dial without parameters")
			}
			return ps.tunnelDial(ctx, dp)
		},
	}
	return tp
}

// errTunnelIdentity: the endpoint's tunnel presents an identity the
// cluster does not accept.
var errTunnelIdentity = errors.New("tunnel peer identity")

// get returns a tunnel to endpoint that can take one more request (the
// stream is reserved: the caller must RoundTrip on it or Release it),
// dialling one when needed. The peer must be one of sans (empty: any of
// the trust domain). maxRequests is the cluster's
// max_requests_per_connection (0: no limit). peer is the identity the
// tunnel's server presented.
func (tp *tunnelPool) get(ctx context.Context, endpoint netip.AddrPort, sans []spiffeid.ID, timeout time.Duration, maxRequests uint32) (*http.ClientConn, spiffeid.ID, error) {
	tp.mu.Lock()
	for {
		if tp.closed {
			tp.mu.Unlock()
			return nil, spiffeid.ID{}, errors.New("pod removed")
		}
		e := tp.m[endpoint]
		if e == nil {
			e = &tunnelEntry{}
			tp.m[endpoint] = e
		}
		if cc := e.cc; cc != nil {
			if cc.Err() == nil && (maxRequests == 0 || e.requests < maxRequests) && cc.Reserve() == nil {
				e.requests++
				if maxRequests > 0 && e.requests >= maxRequests {
					// Its last request: no other may start on it,
					// and it closes when that one ends.
					e.cc = nil
					closeWhenIdle(cc)
				}
				peer := e.peer
				tp.mu.Unlock()
				if len(sans) > 0 && !slices.Contains(sans, peer) {
					cc.Release()
					return nil, spiffeid.ID{}, fmt.Errorf("%w: %s presents %s, none of the cluster's %v", errTunnelIdentity, endpoint, peer, sans)
				}
				return cc, peer, nil
			}
			// Failed, at its request limit, or with no stream free:
			// another tunnel takes the new requests; this one closes
			// when its last stream ends.
			e.cc = nil
			closeWhenIdle(cc)
		}
		if d := e.dialing; d != nil {
			tp.mu.Unlock()
			select {
			case <-d.done:
			case <-ctx.Done():
				return nil, spiffeid.ID{}, ctx.Err()
			}
			if d.err != nil {
				return nil, spiffeid.ID{}, d.err
			}
			tp.mu.Lock()
			continue
		}
		d := &tunnelDialing{done: make(chan struct{})}
		e.dialing = d
		tp.mu.Unlock()
		tp.dialFor(ctx, d, e, endpoint, sans, timeout)
		tp.mu.Lock()
		if d.err != nil {
			if e.cc == nil && tp.m[endpoint] == e {
				// Nothing pooled for it: an endpoint gone leaves no entry.
				delete(tp.m, endpoint)
			}
			tp.mu.Unlock()
			return nil, spiffeid.ID{}, d.err
		}
		if tp.closed {
			tp.mu.Unlock()
			d.cc.Close()
			return nil, spiffeid.ID{}, errors.New("pod removed")
		}
		// e.cc is the new tunnel (dialFor set it): reserve on it.
	}
}

// dialFor dials for an entry and releases its waiters, whatever happens
// (a panic too: they must not wait for a dial that is gone).
func (tp *tunnelPool) dialFor(ctx context.Context, d *tunnelDialing, e *tunnelEntry, endpoint netip.AddrPort, sans []spiffeid.ID, timeout time.Duration) {
	d.err = errors.New("tunnel dial failed")
	defer func() {
		tp.mu.Lock()
		e.dialing = nil
		if d.err == nil && !tp.closed {
			e.cc, e.peer, e.requests = d.cc, d.peer, 0
		}
		close(d.done)
		tp.mu.Unlock()
	}()
	d.cc, d.peer, d.err = tp.dial(ctx, endpoint, sans, timeout)
}

func (tp *tunnelPool) dial(ctx context.Context, endpoint netip.AddrPort, sans []spiffeid.ID, timeout time.Duration) (*http.ClientConn, spiffeid.ID, error) {
	var peer spiffeid.ID
	dp := &tunnelDialParams{endpoint: endpoint, sans: sans, timeout: timeout, peer: &peer}
	// The dial is the first request's, but the tunnel outlives it: a
	// cancelled request must not cut a handshake others wait for.
	dctx, cancel := context.WithTimeout(context.WithValue(context.WithoutCancel(ctx), tunnelDialKey{}, dp), timeout+tp.ps.p.cfg.HandshakeTimeout)
	defer cancel()
	cc, err := tp.t.NewClientConn(dctx, "http", endpoint.String())
	if err != nil {
		return nil, peer, err
	}
	return cc, peer, nil
}

// closeWhenIdle closes a retired tunnel once no request is in flight on
// it (its state hook runs as each request ends).
func closeWhenIdle(cc *http.ClientConn) {
	cc.SetStateHook(func(cc *http.ClientConn) {
		if cc.InFlight() == 0 || cc.Err() != nil {
			cc.Close()
		}
	})
}

// close closes every tunnel.
func (tp *tunnelPool) close() {
	tp.mu.Lock()
	tp.closed = true
	m := tp.m
	tp.m = map[netip.AddrPort]*tunnelEntry{}
	tp.mu.Unlock()
	for _, e := range m {
		if e.cc != nil {
			e.cc.Close()
		}
	}
}

// tunnelDial opens one pooled tunnel: TLS 1.3 with ALPN
// slowpath.TunnelALPNHTTP2 to the endpoint's 15008, the PROXY header
// (this pod's IP → the endpoint), and returns the TLS connection for
// HTTP/2. The tunnel has its own row in the connection table.
func (ps *podState) tunnelDial(ctx context.Context, dp *tunnelDialParams) (net.Conn, error) {
	c := ps.newTunnelConn(dp.endpoint)
	if c == nil {
		return nil, errors.New("pod removed")
	}
	var src netip.AddrPort
	for _, ip := range ps.pod.IPs {
		if ip.Is4() == dp.endpoint.Addr().Is4() {
			src = netip.AddrPortFrom(ip, 0)
			break
		}
	}
	s, err := ps.tunnelALPN(ctx, c, dp.sans, dp.endpoint, src, dp.timeout, slowpath.TunnelALPNHTTP2)
	if err != nil {
		ps.p.fail(c, refuse(ReasonUpstream, err))
		return nil, err
	}
	c.mu.Lock()
	peer, _ := spiffeid.FromString(c.info.PeerIdentity)
	c.mu.Unlock()
	*dp.peer = peer
	c.update(func(i *ConnInfo) { i.State, i.Mode = StateEstablished, ModeTunnelH2 })
	p := ps.p
	p.m.conns.WithLabelValues(c.direction, resultEstablished).Inc()
	active := p.m.active.WithLabelValues(c.direction)
	active.Inc()
	if p.cfg.Events != nil {
		p.cfg.Events(Event{Kind: EventEstablished, Conn: c.snapshot()})
	}
	tc := &tunnelNetConn{tlsStream: s, c: c}
	tc.onEnd = func(reason string) {
		active.Dec()
		info := c.finish(reason)
		if p.cfg.Events != nil {
			p.cfg.Events(Event{Kind: EventClosed, Conn: info, Reason: reason})
		}
	}
	return tc, nil
}

// newTunnelConn registers a pooled tunnel in the pod's table: outbound,
// from the pod's IP.
func (ps *podState) newTunnelConn(endpoint netip.AddrPort) *conn {
	now := time.Now()
	c := &conn{ps: ps, id: ps.p.nextID.Add(1), port: slowpath.OutboundPort, direction: DirectionOutbound, start: now}
	c.info = ConnInfo{ID: c.id, Direction: c.direction, Listener: listenerNames[slowpath.OutboundPort], Pod: ps.key(),
		Endpoint: endpoint, State: StateHandshake, Start: now}
	for _, ip := range ps.pod.IPs {
		if ip.Is4() == endpoint.Addr().Is4() {
			c.info.Source = netip.AddrPortFrom(ip, 0)
		}
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.ctx.Err() != nil {
		return nil
	}
	ps.conns[c.id] = c
	return c
}

// tunnelNetConn is a pooled tunnel as net/http's HTTP/2 client sees it:
// the TLS stream (its writes batched into one system call), counting
// bytes; its row closes when the client stops reading it or closes it.
type tunnelNetConn struct {
	tlsStream
	c     *conn
	onEnd func(reason string)
	once  sync.Once
	ended atomic.Bool
}

func (t *tunnelNetConn) Read(p []byte) (int, error) {
	n, err := t.tlsStream.Read(p)
	if n > 0 {
		// The row's count; bytes_total counts the apps' side (once).
		t.c.in.Add(uint64(n))
	}
	if err != nil {
		t.end("reset")
	}
	return n, err
}

func (t *tunnelNetConn) Write(p []byte) (int, error) {
	n, err := t.tlsStream.Write(p)
	if n > 0 {
		t.c.out.Add(uint64(n))
	}
	return n, err
}

func (t *tunnelNetConn) end(reason string) {
	t.once.Do(func() {
		t.ended.Store(true)
		t.onEnd(reason)
	})
}

func (t *tunnelNetConn) Close() error {
	err := t.tc.Close()
	t.raw.Close()
	t.end("done")
	return err
}

func (t *tunnelNetConn) LocalAddr() net.Addr                { return t.raw.LocalAddr() }
func (t *tunnelNetConn) RemoteAddr() net.Addr               { return t.raw.RemoteAddr() }
func (t *tunnelNetConn) SetDeadline(d time.Time) error      { return t.raw.SetDeadline(d) }
func (t *tunnelNetConn) SetReadDeadline(d time.Time) error  { return t.raw.SetReadDeadline(d) }
func (t *tunnelNetConn) SetWriteDeadline(d time.Time) error { return t.raw.SetWriteDeadline(d) }
