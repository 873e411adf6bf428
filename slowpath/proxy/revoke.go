package proxy

import (
	"net/netip"
	"slices"
	"time"

	"github.com/fibmesh/fibmesh/slowpath"
	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// l4Decision is what admitted an L4 connection: Reevaluate asks the same
// questions of every new config.
type l4Decision struct {
	port     int // the listener: OutboundPort, TunnelPort, InboundPlaintextPort
	src, dst netip.AddrPort
	// serverName is the SNI the outbound chain was matched with.
	serverName string
	// principal is the peer's SPIFFE ID (inbound, tunnel port).
	principal string
	// cluster is the outbound chain's cluster; endpoint the endpoint
	// picked from it (zero for original-destination and DNS clusters).
	cluster  string
	endpoint netip.Addr
	// snap is the config the decision was made with: a change that
	// arrives during the connection's setup, when Reevaluate skips it,
	// is caught by recheck once it is established.
	snap *xdsconf.Snapshot
}

// Revocation reasons (fibmesh_agent_proxy_revocations_total's reason).
const (
	RevokeRBAC            = "rbac"             // the inbound chain's RBAC denies it now
	RevokeNoChain         = "no-chain"         // no filter chain (route) matches it any more
	RevokeNoCluster       = "no-cluster"       // its cluster is gone or no longer the chain's
	RevokeEndpointRemoved = "endpoint-removed" // its endpoint left the cluster
)

// Reevaluate checks every established L4 connection (offloaded or not)
// against the current config, as if it were new: the inbound chain and
// its RBAC with the peer's identity; the outbound chain, its cluster and
// the endpoint in use. One that is no longer allowed is revoked: its XDP
// flow entry toward the local pod turns to drop, both of its sockets are
// reset, and it is counted (fibmesh_agent_proxy_revocations_total) and
// reported (EventRevoked). pushed is when the config change arrived: a
// revocation's latency is measured from it. HTTP connections are not
// revoked: their requests are authorized one by one. Reevaluate returns
// how many connections it revoked.
func (p *Proxy) Reevaluate(pushed time.Time) int {
	snap := p.cfg.Snapshot()
	if snap == nil {
		return 0
	}
	p.mu.Lock()
	pods := make([]*podState, 0, len(p.pods))
	for _, ps := range p.pods {
		pods = append(pods, ps)
	}
	p.mu.Unlock()
	n := 0
	for _, ps := range pods {
		ps.mu.Lock()
		conns := make([]*conn, 0, len(ps.conns))
		for _, c := range ps.conns {
			conns = append(conns, c)
		}
		ps.mu.Unlock()
		for _, c := range conns {
			c.mu.Lock()
			d, state := c.l4, c.info.State
			c.mu.Unlock()
			if d == nil || (state != StateEstablished && state != StateOffloaded) {
				continue
			}
			if why, detail := d.check(snap); why != "" {
				if p.revoke(c, why, detail, pushed) {
					n++
				}
			}
		}
	}
	return n
}

// check returns why the connection is no longer allowed ("" if it is)
// and the detail for its row.
func (d *l4Decision) check(snap *xdsconf.Snapshot) (why, detail string) {
	if d.port != slowpath.OutboundPort {
		l := snap.Inbound
		if d.port == slowpath.InboundPlaintextPort {
			l = snap.InboundPlaintext
		}
		chain := l.Match(xdsconf.MatchInput{Destination: d.dst, Source: d.src})
		switch {
		case chain == nil:
			return RevokeNoChain, "no " + listenerNames[d.port] + " filter chain for " + d.dst.String()
		case d.port == slowpath.TunnelPort && chain.TLS == nil:
			return RevokeNoChain, "inbound filter chain " + chain.Name + " has no TLS context"
		case chain.HTTP != nil:
			// Now an HTTP port: new connections are authorized request
			// by request; this byte stream has no requests, so only a
			// DENY that matches it without one revokes it (an ALLOW
			// with request rules would fail closed on it).
			if r := chain.HTTP.RBAC; r != nil && r.Deny != nil {
				if dec := (&xdsconf.RBAC{Deny: r.Deny}).Evaluate(xdsconf.AuthzInput{Principal: d.principal, Source: d.src, Destination: d.dst}); !dec.Allowed {
					return RevokeRBAC, "rbac " + dec.Policy
				}
			}
			return "", ""
		}
		if dec := chain.RBAC.Evaluate(xdsconf.AuthzInput{Principal: d.principal, Source: d.src, Destination: d.dst}); !dec.Allowed {
			policy := dec.Policy
			if policy == "" {
				policy = "default-deny"
			}
			return RevokeRBAC, "rbac " + policy
		}
		return "", ""
	}
	if snap.Outbound == nil {
		return RevokeNoChain, "no outbound listener"
	}
	chain := snap.Outbound.Match(xdsconf.MatchInput{Destination: d.dst, Source: d.src, ServerName: d.serverName})
	if chain == nil {
		return RevokeNoChain, "no outbound filter chain for " + d.dst.String()
	}
	if d.cluster == "" {
		return "", ""
	}
	// A route that now sends new connections elsewhere (weights, a
	// subset, a ServiceEntry taking over a passthrough address) is a
	// routing change, not a revocation: the connection stays while its
	// cluster and endpoint exist.
	cl := snap.Clusters[d.cluster]
	if cl == nil {
		return RevokeNoCluster, "cluster " + d.cluster + " removed"
	}
	if d.endpoint.IsValid() && cl.Endpoints != nil && (cl.Type == xdsconf.ClusterEDS || cl.Type == xdsconf.ClusterStatic) {
		if !slices.ContainsFunc(cl.Endpoints.Hosts, func(e *xdsconf.Endpoint) bool { return e.Addr.Addr() == d.endpoint }) {
			return RevokeEndpointRemoved, "endpoint " + d.endpoint.String() + " left cluster " + d.cluster
		}
	}
	return "", ""
}

// revoke ends a connection a config change no longer allows; false if
// it was already revoked or ended.
func (p *Proxy) revoke(c *conn, why, detail string, pushed time.Time) bool {
	reason := "revoked: " + detail
	c.mu.Lock()
	if c.revokeReason != "" || c.info.State == StateClosed {
		c.mu.Unlock()
		return false
	}
	c.revokeReason, c.revokePushed = reason, pushed
	c.info.Reason, c.info.State = reason, StateRevoked
	off := c.off
	c.mu.Unlock()
	where := "userspace"
	if off != nil {
		where = "offloaded"
	}
	p.m.revoked.WithLabelValues(why, where).Inc()
	if p.cfg.Events != nil {
		// Before the teardown, so that it comes before EventClosed.
		p.cfg.Events(Event{Kind: EventRevoked, Conn: c.snapshot(), PeerWorkload: c.peerWorkload(), EndpointWorkload: c.endpointWorkload(), Reason: reason})
	}
	close(c.revokeCh)
	if off == nil {
		// A userspace relay (or one being offloaded: it sees the abort)
		// ends on the resets.
		c.abort(reason)
	}
	return true
}

// recheck runs the revocation check for a connection that has just
// become established, if the config changed since its setup decided:
// Reevaluate skipped it while it was in setup. The store publishes a
// config before Reevaluate runs, so every change is seen by one of them.
func (p *Proxy) recheck(c *conn) {
	c.mu.Lock()
	d := c.l4
	c.mu.Unlock()
	if d == nil {
		return
	}
	cur := p.cfg.Snapshot()
	if cur == nil || cur == d.snap {
		return
	}
	if why, detail := d.check(cur); why != "" {
		p.revoke(c, why, detail, time.Now())
	}
}
