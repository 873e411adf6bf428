package proxy

import (
	"context"
	"errors"
	"fmt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/fibmesh/fibmesh/slowpath"
	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// chainCluster is the cluster a chain sends bytes to ("" when none).
func chainCluster(fc *xdsconf.FilterChain) string {
	switch {
	case fc.TCP != nil:
		return fc.TCP.PickCluster(rand.Uint32())
	case fc.HTTP != nil:
		// At L4 an HTTP port's bytes go to the catch-all route's
		// cluster, by its weights.
		if name := fc.HTTP.PickCluster(rand.Uint32()); name != "" {
			return name
		}
		return fc.HTTP.DefaultCluster
	}
	return ""
}

// outbound runs the outbound port's side: original destination, chain,
// cluster, endpoint, then the tunnel or a plaintext connection.
func (ps *podState) outbound(ctx context.Context, c *conn, down *net.TCPConn) (stream, *handoff, error) {
	src := addrPortOf(down.RemoteAddr())
	dst, err := ps.p.cfg.OriginalDestination(down, ps.pod, slowpath.OutboundPort)
	if err != nil {
		return nil, nil, refuse(ReasonNoOriginalDst, err)
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if dst == addrPortOf(down.LocalAddr()) || !dst.IsValid() {
		// Nothing redirected this connection: it was made to the
		// outbound port itself, and relaying it would loop.
		return nil, nil, refuse(ReasonNoOriginalDst, fmt.Errorf("original destination %v is the outbound listener itself", dst))
	}
	c.update(func(i *ConnInfo) { i.Destination = dst })
	snap := ps.p.cfg.Snapshot()
	if snap == nil {
		return nil, nil, refuse(ReasonNoConfig, nil)
	}
	if snap.Outbound == nil {
		return nil, nil, refuse(ReasonNoChain, errors.New("no outbound listener"))
	}
	var sni string
	if sniffPorts(snap.Outbound).has(dst.Port()) {
		var peeked []byte
		sni, peeked = sniffServerName(down, time.Now().Add(ps.p.cfg.HandshakeTimeout))
		c.mu.Lock()
		c.peeked = peeked
		c.info.ServerName = sni
		c.mu.Unlock()
	}
	chain := snap.Outbound.Match(xdsconf.MatchInput{Destination: dst, Source: src, ServerName: sni})
	if chain == nil {
		return nil, nil, refuse(ReasonPassthroughOff, fmt.Errorf("%v matches no outbound filter chain and the listener has no default (REGISTRY_ONLY)", dst))
	}
	if chain.HTTP != nil {
		// L7: routed, balanced and retried per request (http_outbound.go).
		c.update(func(i *ConnInfo) { i.Chain = chain.Name })
		return nil, &handoff{conn: down, meta: &connMeta{c: c, chain: chain, snap: snap, src: src, dst: dst}}, nil
	}
	name := chainCluster(chain)
	c.update(func(i *ConnInfo) { i.Chain, i.Cluster = chain.Name, name })
	if chain.TCP != nil && chain.TCP.IdleTimeout != 0 {
		c.mu.Lock()
		c.idle = chain.TCP.IdleTimeout
		c.mu.Unlock()
	}
	if name == "" {
		return nil, nil, refuse(ReasonNoCluster, fmt.Errorf("filter chain %s names no cluster", chain.Name))
	}
	cl := snap.Clusters[name]
	if cl == nil {
		return nil, nil, refuse(ReasonNoCluster, fmt.Errorf("filter chain %s: cluster %s is unknown", chain.Name, name))
	}
	d := &l4Decision{port: slowpath.OutboundPort, src: src, dst: dst, serverName: sni, cluster: name, snap: snap}
	if cl.MaxConnections > 0 {
		// The circuit breaker, per pod as a sidecar's: the cluster's
		// connections from this pod, by name so that it holds across
		// snapshots.
		v, _ := ps.clusterConns.LoadOrStore(cl.Name, new(atomic.Int64))
		n := v.(*atomic.Int64)
		if n.Add(1) > int64(cl.MaxConnections) {
			n.Add(-1)
			return nil, nil, refuse(ReasonOverflow, fmt.Errorf("cluster %s has its max_connections (%d) from this pod", cl.Name, cl.MaxConnections))
		}
		c.mu.Lock()
		c.onClose = append(c.onClose, func() { n.Add(-1) })
		c.mu.Unlock()
	}
	timeout := cl.ConnectTimeout
	if timeout <= 0 {
		timeout = ps.p.cfg.ConnectTimeout
	}
	var up stream
	switch cl.Type {
	case xdsconf.ClusterOriginalDst:
		up, err = ps.originalDst(ctx, c, snap, src, dst, timeout)
	case xdsconf.ClusterDNS:
		up, err = ps.dnsCluster(ctx, c, cl, timeout)
	default:
		up, err = ps.endpoints(ctx, c, cl, src, timeout)
		if err == nil {
			d.endpoint = c.snapshot().Endpoint.Addr()
		}
	}
	if err == nil {
		c.mu.Lock()
		c.l4 = d
		c.mu.Unlock()
	}
	return up, nil, err
}

// originalDst relays to the original destination: through the tunnel
// when it is a mesh endpoint (a pod called by its IP), else in plaintext
// (passthrough, outside the mesh).
func (ps *podState) originalDst(ctx context.Context, c *conn, snap *xdsconf.Snapshot, src, dst netip.AddrPort, timeout time.Duration) (stream, error) {
	ec := snap.Endpoints[dst.Addr()]
	plaintextEndpoint := ec != nil && ec.TLS != nil && endpointPlaintext(ec, dst.Addr())
	if ep := hostAt(ec, dst.Addr()); ep != nil && ep.Workload != nil {
		// A pod called by its IP is the endpoint of a mesh cluster:
		// what EDS says of it names it, as for a picked endpoint.
		c.mu.Lock()
		c.endpointMeta = endpointWorkload(ep)
		c.mu.Unlock()
	}
	if ps.p.cfg.MeshPod != nil && !plaintextEndpoint {
		if id, ok := ps.p.cfg.MeshPod(dst.Addr()); ok {
			// A mesh pod called by its IP: tunnelled, and it must be
			// that pod's identity.
			up, err := ps.tunnel(ctx, c, []spiffeid.ID{id}, dst, src, timeout)
			if err != nil {
				return nil, refuse(ReasonUpstream, err)
			}
			return up, nil
		}
	}
	if ec != nil {
		c.update(func(i *ConnInfo) { i.Cluster = ec.Name })
		if ec.TLS != nil && !endpointPlaintext(ec, dst.Addr()) {
			up, err := ps.tunnel(ctx, c, ec.TLS.SANs, dst, src, timeout)
			if err != nil {
				return nil, refuse(ReasonUpstream, err)
			}
			return up, nil
		}
		up, err := ps.plain(ctx, c, dst, ModePlaintext, timeout)
		if err != nil {
			return nil, refuse(ReasonUpstream, err)
		}
		return up, nil
	}
	up, err := ps.plain(ctx, c, dst, ModePassthrough, timeout)
	if err != nil {
		return nil, refuse(ReasonUpstream, err)
	}
	return up, nil
}

// endpointPlaintext reports whether the cluster's endpoint at ip is
// marked tlsMode disabled.
func endpointPlaintext(cl *xdsconf.Cluster, ip netip.Addr) bool {
	// Only a cluster with the tlsMode match honours the endpoints'
	// metadata, as Envoy's transport_socket_matches.
	if cl.Endpoints == nil || cl.TLS == nil || !cl.TLS.PlaintextMatch {
		return false
	}
	e := hostAt(cl, ip)
	return e != nil && e.Plaintext
}

// hostAt is the host of cluster cl at ip (the first, whatever its
// port); nil when cl is nil or has none there.
func hostAt(cl *xdsconf.Cluster, ip netip.Addr) *xdsconf.Endpoint {
	if cl == nil || cl.Endpoints == nil {
		return nil
	}
	for _, e := range cl.Endpoints.Hosts {
		if e.Addr.Addr() == ip {
			return e
		}
	}
	return nil
}

// dnsCluster connects to a DNS cluster's hosts in order, in plaintext
// (they are outside the mesh: MESH_EXTERNAL ServiceEntries).
func (ps *podState) dnsCluster(ctx context.Context, c *conn, cl *xdsconf.Cluster, timeout time.Duration) (stream, error) {
	var errs []error
	for _, hp := range cl.DNSHosts {
		host, port, err := net.SplitHostPort(hp)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil || len(addrs) == 0 {
			errs = append(errs, fmt.Errorf("resolve %s: %w", host, err))
			continue
		}
		ap, err := netip.ParseAddrPort(net.JoinHostPort(addrs[0].Unmap().String(), port))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		up, err := ps.plain(ctx, c, ap, ModePlaintext, timeout)
		if err == nil {
			return up, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, refuse(ReasonNoEndpoint, fmt.Errorf("cluster %s has no hosts", cl.Name))
	}
	return nil, refuse(ReasonUpstream, errors.Join(errs...))
}

// endpoints picks an endpoint of an EDS or static cluster by its LB
// policy and connects; a failed connect (or tunnel handshake) is retried
// on another endpoint, connectRetries times.
func (ps *podState) endpoints(ctx context.Context, c *conn, cl *xdsconf.Cluster, src netip.AddrPort, timeout time.Duration) (stream, error) {
	var tried []*xdsconf.Endpoint
	var errs []error
	for range connectRetries + 1 {
		ep, err := cl.Pick(src, func(e *xdsconf.Endpoint) bool { return slices.Contains(tried, e) })
		if err != nil {
			if len(tried) == 0 {
				return nil, refuse(ReasonNoEndpoint, err)
			}
			break
		}
		tried = append(tried, ep)
		ep.Active.Add(1)
		// Before connecting: the connection's events from here on
		// (established, or refused after the last try) name it.
		c.mu.Lock()
		c.endpointMeta = endpointWorkload(ep)
		c.mu.Unlock()
		var up stream
		if cl.TLS != nil && !(cl.TLS.PlaintextMatch && ep.Plaintext) {
			up, err = ps.tunnel(ctx, c, cl.TLS.SANs, ep.Addr, src, timeout)
		} else {
			up, err = ps.plain(ctx, c, ep.Addr, ModePlaintext, timeout)
			if err == nil {
				c.update(func(i *ConnInfo) { i.Endpoint = ep.Addr })
			}
		}
		if err == nil {
			c.mu.Lock()
			c.onClose = append(c.onClose, func() { ep.Active.Add(-1) })
			c.mu.Unlock()
			return up, nil
		}
		ep.Active.Add(-1)
		errs = append(errs, fmt.Errorf("endpoint %v: %w", ep.Addr, err))
		if ctx.Err() != nil || c.isAborted() {
			break
		}
	}
	return nil, refuse(ReasonUpstream, fmt.Errorf("cluster %s: %w", cl.Name, errors.Join(errs...)))
}
