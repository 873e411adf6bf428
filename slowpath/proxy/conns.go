package proxy

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Directions.
const (
	DirectionOutbound = "outbound" // the pod called out (15001)
	DirectionInbound  = "inbound"  // a peer called the pod (15008, 15006)
)

// States of a connection: handshake → l7 (HTTP, routed per request in
// userspace), or handshake → established (relayed in userspace) →
// offloaded (kTLS and the kernel byte path) → revoked (a policy change
// forbade it) → closed.
const (
	StateHandshake   = "handshake"   // accepted, not yet relayed
	StateEstablished = "established" // bytes flow, relayed in userspace
	StateOffloaded   = "offloaded"   // bytes flow in the kernel (kTLS + splice/sockmap)
	StateL7          = "l7"          // an HTTP connection: its requests are routed one by one
	StateRevoked     = "revoked"     // a policy change forbade it: being torn down
	StateClosed      = "closed"
)

// Offload modes of an L4 tunnel connection (ConnInfo.Offload).
const (
	OffloadSplice    = "splice"    // kTLS, bytes moved by splice(2)
	OffloadSockmap   = "sockmap"   // kTLS, bytes moved by the sockmap verdict
	OffloadUserspace = "userspace" // crypto/tls and the proxy's copy loop: OffloadReason says why
)

// Modes of a connection's upstream.
const (
	ModeTunnel      = "tunnel"      // mTLS to the peer agent's 15008
	ModePlaintext   = "plaintext"   // a plaintext cluster's endpoint, or the app (inbound)
	ModePassthrough = "passthrough" // the original destination, outside the mesh
	ModeHTTP        = "http"        // an HTTP connection: its requests are routed one by one (L7)
	ModeTunnelH2    = "tunnel-h2"   // a pod's pooled HTTP/2 tunnel to one endpoint (L7)
)

// ConnInfo is one row of the connection table.
type ConnInfo struct {
	ID uint64 `json:"id"`
	// Direction is DirectionOutbound or DirectionInbound; Listener the
	// listener that accepted it ("outbound", "inbound" for the tunnel,
	// "inbound-plaintext").
	Direction string `json:"direction"`
	Listener  string `json:"listener"`
	// Pod is the local pod, "namespace/name".
	Pod string `json:"pod"`
	// Source and Destination are the stream's original endpoints as the
	// apps see them: the calling app's address, and the VIP:port
	// (outbound) or the pod IP:port (inbound) it called.
	Source      netip.AddrPort `json:"source,omitzero"`
	Destination netip.AddrPort `json:"destination,omitzero"`
	// Upstream is where the proxy connected: the endpoint pod's IP:15008
	// (tunnel), a plaintext endpoint or the original destination, or the
	// app (inbound). Endpoint is the endpoint the stream is for (pod
	// IP:target port) when a cluster picked one.
	Upstream netip.AddrPort `json:"upstream,omitzero"`
	Endpoint netip.AddrPort `json:"endpoint,omitzero"`
	Mode     string         `json:"mode,omitempty"`
	// ServerName is the SNI of the app's ClientHello, read on ports
	// where the outbound listener routes by it.
	ServerName string `json:"serverName,omitempty"`
	// Cluster and Chain are the xDS cluster and filter chain used.
	Cluster string `json:"cluster,omitempty"`
	Chain   string `json:"chain,omitempty"`
	// LocalIdentity is the local pod's SPIFFE ID presented in the
	// handshake, PeerIdentity the peer's, verified ("" in plaintext).
	LocalIdentity string `json:"localIdentity,omitempty"`
	PeerIdentity  string `json:"peerIdentity,omitempty"`
	// TLSVersion and TLSCipher describe the tunnel ("" in plaintext).
	TLSVersion string `json:"tlsVersion,omitempty"`
	TLSCipher  string `json:"tlsCipher,omitempty"`
	// TLSResumed: the tunnel resumed an earlier session (no certificate
	// signatures; the peer's chain was verified again).
	TLSResumed bool   `json:"tlsResumed,omitempty"`
	State      string `json:"state"`
	// Offload is how an established L4 tunnel connection moves its
	// bytes (OffloadSplice, OffloadSockmap, OffloadUserspace);
	// OffloadReason says why one stays in userspace.
	Offload       string `json:"offload,omitempty"`
	OffloadReason string `json:"offloadReason,omitempty"`
	// XDPPackets and XDPBytes are what the XDP FIB's flow entries of an
	// offloaded connection's tunnel counted, both directions.
	XDPPackets uint64 `json:"xdpPackets,omitempty"`
	XDPBytes   uint64 `json:"xdpBytes,omitempty"`
	// Reason says why a connection was refused or how it ended.
	Reason string `json:"reason,omitempty"`
	// BytesOut are the bytes from the local app to the peer, BytesIn the
	// other way, counted as they are relayed (offloaded: the kernel byte
	// path's counters).
	BytesOut uint64    `json:"bytesOut"`
	BytesIn  uint64    `json:"bytesIn"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end,omitzero"`
}

// conn is one proxied connection.
type conn struct {
	ps        *podState
	id        uint64
	port      int
	direction string
	start     time.Time
	// out and in: bytes from the local app and to it.
	out, in atomic.Uint64

	mu        sync.Mutex
	info      ConnInfo // all but the byte counts
	down, up  *net.TCPConn
	aborted   bool
	onClose   []func()
	peeked    []byte        // bytes read from the app to sniff its server name, relayed first
	idle      time.Duration // the chain's idle timeout (0: the Config's; negative: none)
	closeOnce sync.Once
	// l4 is what decided an L4 connection (revoke.go checks it again on
	// every config change); nil for HTTP and while in setup.
	l4 *l4Decision
	// off is the kernel byte path of an offloaded connection.
	off *offloaded
	// peerMeta is what the peer's agent said of its workload (Event's
	// PeerWorkload).
	peerMeta WorkloadMeta
	// endpointMeta is what EDS says of the workload of the endpoint an
	// outbound connection went to (Event's EndpointWorkload).
	endpointMeta WorkloadMeta
	// revoked is closed by revoke; revokeReason says why.
	revokeCh     chan struct{}
	revokeReason string
	revokePushed time.Time
}

// result is the connections_total result of an established connection.
func (c *conn) result() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.info.Mode == ModePassthrough {
		return resultPassthrough
	}
	return resultEstablished
}

// newConn registers an accepted connection in the pod's table; nil when
// the pod is stopping.
func (ps *podState) newConn(port int, down *net.TCPConn) *conn {
	now := time.Now()
	c := &conn{ps: ps, id: ps.p.nextID.Add(1), port: port, direction: directionOf(port), start: now, down: down, revokeCh: make(chan struct{})}
	c.info = ConnInfo{ID: c.id, Direction: c.direction, Listener: listenerNames[port], Pod: ps.key(),
		Source: addrPortOf(down.RemoteAddr()), State: StateHandshake, Start: now}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.ctx.Err() != nil {
		return nil
	}
	ps.conns[c.id] = c
	return c
}

// peerWorkload is what the peer's agent said of its workload.
func (c *conn) peerWorkload() WorkloadMeta {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peerMeta
}

// endpointWorkload is what EDS said of the workload of the endpoint the
// connection went to (Event.EndpointWorkload).
func (c *conn) endpointWorkload() WorkloadMeta {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.endpointMeta
}

// update changes the connection's row.
func (c *conn) update(f func(*ConnInfo)) {
	c.mu.Lock()
	f(&c.info)
	c.mu.Unlock()
}

func (c *conn) setTLS(local, peer spiffeid.ID, st tls.ConnectionState) {
	c.update(func(i *ConnInfo) {
		if !local.IsZero() {
			i.LocalIdentity = local.String()
		}
		if !peer.IsZero() {
			i.PeerIdentity = peer.String()
		}
		i.TLSVersion = tls.VersionName(st.Version)
		i.TLSCipher = tls.CipherSuiteName(st.CipherSuite)
		i.TLSResumed = st.DidResume
	})
}

// setUpstream records the upstream socket, so abort can close it; false
// (and the socket closed) when the connection was aborted meanwhile.
func (c *conn) setUpstream(up *net.TCPConn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		up.Close()
		return false
	}
	c.up = up
	c.info.Upstream = addrPortOf(up.RemoteAddr())
	return true
}

// clearUpstream forgets an upstream socket that failed (retry).
func (c *conn) clearUpstream(up *net.TCPConn) {
	c.mu.Lock()
	if c.up == up {
		c.up = nil
	}
	c.mu.Unlock()
	up.Close()
}

// abort closes both sockets (with a reset) from outside the connection's
// goroutines: RemovePod, Close.
func (c *conn) abort(reason string) {
	c.mu.Lock()
	c.aborted = true
	if c.info.Reason == "" {
		c.info.Reason = reason
	}
	down, up, off := c.down, c.up, c.off
	c.mu.Unlock()
	if off != nil {
		off.pair.Close() // resets both
		return
	}
	for _, s := range []*net.TCPConn{down, up} {
		if s != nil {
			s.SetLinger(0)
			s.Close()
		}
	}
}

// isAborted reports whether abort was called.
func (c *conn) isAborted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.aborted
}

// snapshot returns the connection's row.
func (c *conn) snapshot() ConnInfo {
	c.mu.Lock()
	i := c.info
	off := c.off
	c.mu.Unlock()
	i.BytesOut, i.BytesIn = c.out.Load(), c.in.Load()
	if off != nil {
		// Plus what was relayed before the offload (a sniffed
		// ClientHello).
		ctr := off.pair.Counters()
		i.BytesOut += ctr.PlainToTLS
		i.BytesIn += ctr.TLSToPlain
		if off.flow != nil {
			i.XDPPackets, i.XDPBytes = off.flow.Counters()
		}
	}
	return i
}

// finish closes both sockets, runs the close hooks and moves the row to
// the pod's recently closed list. Once only.
func (c *conn) finish(reason string) ConnInfo {
	var info ConnInfo
	c.closeOnce.Do(func() {
		c.mu.Lock()
		down, up := c.down, c.up
		hooks := c.onClose
		c.info.State = StateClosed
		c.info.End = time.Now()
		if c.info.Reason == "" {
			c.info.Reason = reason
		}
		c.mu.Unlock()
		if down != nil {
			down.Close()
		}
		if up != nil {
			up.Close()
		}
		for _, h := range hooks {
			h()
		}
		info = c.snapshot()
		ps := c.ps
		ps.mu.Lock()
		delete(ps.conns, c.id)
		ps.closed = append(ps.closed, info)
		if len(ps.closed) > keepClosed {
			ps.closed = slices.Delete(ps.closed, 0, len(ps.closed)-keepClosed)
		}
		ps.mu.Unlock()
	})
	return info
}

// Connections returns the connection table: every connection in
// handshake or established, and those closed in the last minute (at most
// 128 per pod), by pod then ID.
func (p *Proxy) Connections() []ConnInfo {
	p.mu.Lock()
	pods := make([]*podState, 0, len(p.pods))
	for _, ps := range p.pods {
		pods = append(pods, ps)
	}
	p.mu.Unlock()
	var out []ConnInfo
	cutoff := time.Now().Add(-keepClosedFor)
	for _, ps := range pods {
		ps.mu.Lock()
		live := make([]*conn, 0, len(ps.conns))
		for _, c := range ps.conns {
			live = append(live, c)
		}
		for _, i := range ps.closed {
			if i.End.After(cutoff) {
				out = append(out, i)
			}
		}
		ps.mu.Unlock()
		for _, c := range live {
			out = append(out, c.snapshot())
		}
	}
	slices.SortFunc(out, func(a, b ConnInfo) int {
		if a.Pod != b.Pod {
			if a.Pod < b.Pod {
				return -1
			}
			return 1
		}
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// refusal is a setup failure with its counted reason.
type refusal struct {
	reason string
	err    error
}

func (r *refusal) Error() string {
	if r.err == nil {
		return r.reason
	}
	return r.reason + ": " + r.err.Error()
}
func (r *refusal) Unwrap() error { return r.err }

func refuse(reason string, err error) error { return &refusal{reason: reason, err: err} }

// denial is an RBAC denial.
type denial struct{ policy string }

func (d *denial) Error() string { return "denied by RBAC policy " + d.policy }

// fail ends a connection that was not established and counts why.
func (p *Proxy) fail(c *conn, err error) {
	reason := ReasonHandshake
	var r *refusal
	var d *denial
	result := resultRefused
	switch {
	case c.isAborted():
		reason = ReasonAborted
	case errors.As(err, &d):
		result = resultDenied
		policy := d.policy
		if policy == "" {
			policy = "default-deny"
		}
		reason = "rbac: " + policy
		p.m.denied.WithLabelValues(policy).Inc()
	case errors.As(err, &r):
		reason = r.reason
	}
	if result == resultRefused {
		p.m.refused.WithLabelValues(listenerNames[c.port], reason).Inc()
	}
	p.m.conns.WithLabelValues(c.direction, result).Inc()
	c.mu.Lock()
	down := c.down
	c.mu.Unlock()
	// A reset, as from a port nobody listens on: the app sees it, and on
	// the tunnel so does the calling agent's relay, which resets its app
	// (a clean EOF would read as a normal end).
	if down != nil { // a pooled tunnel's row has no downstream
		down.SetLinger(0)
	}
	info := c.finish(reason)
	if p.cfg.Events != nil {
		kind := EventRefused
		ev := reason
		if result == resultDenied {
			kind, ev = EventDenied, d.policy
		}
		p.cfg.Events(Event{Kind: kind, Conn: info, PeerWorkload: c.peerWorkload(), EndpointWorkload: c.endpointWorkload(), Reason: ev, Err: err})
	}
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
