package proxy

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/fibmesh/fibmesh/fastpath/ktls"
	"github.com/fibmesh/fibmesh/fastpath/splice"
)

// Offload configures the socket fast path: once an L4 tunnel connection
// (a tcp_proxy chain, no HTTP) is established and authorized, its TLS
// record layer is handed to the kernel (fastpath/ktls) and its bytes are
// moved between the app's socket and the tunnel's in the kernel
// (fastpath/splice); the XDP FIB gets flow entries for the tunnel's
// 5-tuple. Both agents of a connection decide alone, by the same rule, so
// nothing is signalled: one side that cannot offload stays in userspace
// and the other still can (kTLS and crypto/tls interoperate on the wire).
type Offload struct {
	// Disabled keeps every connection in userspace.
	Disabled bool
	// Flows, if set, installs the XDP flow entries of each offloaded
	// connection and turns them to drop when it is revoked.
	Flows FlowTable
	// NICTLS, if set, reports whether a tunnel with peer (the other
	// end's pod IP) runs where both nodes' NICs offload kTLS record
	// crypto (mainline device offload: TLS 1.2 AES-128-GCM only). The
	// client then offers TLS 1.2 AES-128-GCM besides TLS 1.3, and a
	// server whose own NICTLS of the client agrees picks it; otherwise
	// TLS 1.3 (so a disagreement costs the NIC offload, never the
	// connection).
	NICTLS func(peer netip.Addr) bool
	// LocalNICTLS, if set, reports whether this node's NIC offloads kTLS
	// record crypto (for the connection table and logs; the choice is
	// NICTLS's).
	LocalNICTLS func() bool
}

// FlowTable installs the XDP flow entries of offloaded connections (the
// agent's FIB; fastpath/fib is the only code that touches BPF maps).
type FlowTable interface {
	// Install adds forward entries for both directions of the tunnel's
	// 5-tuple (Local ↔ Remote, TCP), carrying the identities. Two
	// connections of the same node may install the same tuple (both ends
	// on one node): the table counts references.
	Install(f TunnelFlow) (FlowHandle, error)
}

// TunnelFlow is an offloaded connection's tunnel, as Install sees it.
type TunnelFlow struct {
	// ConnID and Pod name the connection in the proxy's table.
	ConnID uint64
	Pod    string
	// Local is this side's tunnel socket (the local pod's IP and port),
	// Remote the peer's: the client's pod IP:ephemeral port and the
	// server pod's IP:15008, one way or the other.
	Local, Remote netip.AddrPort
	// LocalIdentity and PeerIdentity are the SPIFFE IDs of both ends.
	LocalIdentity, PeerIdentity string
}

// FlowHandle is one connection's reference to its flow entries.
type FlowHandle interface {
	// Revoke turns the entry of the direction toward the local pod
	// (Remote → Local) to drop, so that no byte of the peer's reaches
	// the local pod any more; pushed is when the change that revoked the
	// connection arrived (the measure of revocation latency runs from it
	// to the first packet dropped). The other direction keeps
	// forwarding, so the resets the proxy sends reach the peer.
	Revoke(pushed time.Time) error
	// Counters returns the packets and bytes the XDP FIB counted for
	// the tunnel, both directions together.
	Counters() (packets, bytes uint64)
	// Release drops the connection's reference; the last one removes the
	// entries (a revoked connection's stay as drop entries for a grace
	// period, so that the peer's retransmissions are dropped too).
	Release()
}

// offloaded is a connection whose bytes the kernel moves.
type offloaded struct {
	pair *splice.Pair
	flow FlowHandle // nil: no flow table, or Install failed
}

// offloadTick is how often an offloaded connection's counters are read:
// for the bytes metric and its idle timeout.
const offloadTick = time.Second

// offloadOffReason says why no connection leaves userspace ("" when they
// may): the Config, or what the kernel lacks.
func offloadOffReason(cfg Offload) string {
	if cfg.Disabled {
		return "offload disabled (fibmesh-agent --offload=off)"
	}
	caps, err := ktls.Probe()
	switch {
	case err != nil:
		return "kTLS probe failed: " + err.Error()
	case !caps.ULP:
		r := "kernel " + caps.Kernel + " has no kTLS (no tls in tcp_available_ulp)"
		if caps.ULPError != "" {
			r += ": " + caps.ULPError
		}
		return r
	}
	return ""
}

// offload hands an established L4 tunnel connection to the kernel: kTLS
// on the tunnel socket, then the byte path joining it to the app's
// socket, then the XDP flow entries. It returns nil, with the reason in
// the connection's row, when the connection stays in userspace; then up
// or down may have been replaced by the kTLS connection (keys installed,
// but the byte path refused it: the proxy copies through the kernel's
// crypto).
func (p *Proxy) offload(c *conn, down, up *stream) (*offloaded, error) {
	var tunnel *tlsStream
	var app tcpStream
	var tside *stream
	switch d, u := *down, *up; {
	case isTLS(u) && isTCP(d):
		t := u.(tlsStream)
		tunnel, app, tside = &t, d.(tcpStream), up
	case isTLS(d) && isTCP(u):
		t := d.(tlsStream)
		tunnel, app, tside = &t, u.(tcpStream), down
	default:
		return nil, nil // no TLS on this connection
	}
	userspace := func(reason string) (*offloaded, error) {
		c.update(func(i *ConnInfo) { i.Offload, i.OffloadReason = OffloadUserspace, reason })
		p.m.offloadDecisions.WithLabelValues(OffloadUserspace).Inc()
		return nil, nil
	}
	if p.offloadOff != "" {
		return userspace(p.offloadOff)
	}
	kc, err := tunnel.tc.Offload()
	if err != nil {
		if !errors.Is(err, ktls.ErrUnsupported) {
			// The kernel took part of it and Offload closed the
			// socket: the connection cannot go on.
			return nil, err
		}
		// Unsupported leaves the socket untouched: the userspace
		// relay goes on.
		return userspace("kTLS: " + err.Error())
	}
	*tside = ktlsStream{kc}
	// splice.DefaultMode: the sockmap engine cannot carry kTLS on
	// Debian 12's kernel and half of it runs in userspace on 6.12
	// (docs/splice.md), so the proxy does not offer it.
	pair, err := splice.Join(app.TCPConn, kc, splice.Options{})
	if err != nil {
		if !errors.Is(err, splice.ErrUnsupported) {
			// Join reset both sockets (a pipe it could not get).
			return nil, err
		}
		// The kernel has the keys now and Join left the sockets as
		// they were: the copy loop goes on through the kTLS
		// connection.
		return userspace("byte path: " + err.Error())
	}
	o := &offloaded{pair: pair}
	tcp := kc.TCPConn()
	local, remote := addrPortOf(tcp.LocalAddr()), addrPortOf(tcp.RemoteAddr())
	// The XDP FIB is IPv4: an IPv6 tunnel is offloaded without entries.
	if ft := p.cfg.Offload.Flows; ft != nil && local.Addr().Is4() && remote.Addr().Is4() {
		info := c.snapshot()
		f := TunnelFlow{ConnID: c.id, Pod: info.Pod, Local: local, Remote: remote,
			LocalIdentity: info.LocalIdentity, PeerIdentity: info.PeerIdentity}
		if h, err := ft.Install(f); err == nil {
			o.flow = h
		} else {
			p.m.flowErrors.Inc()
		}
	}
	mode := OffloadSplice
	if pair.Mode() == splice.ModeSockmap {
		mode = OffloadSockmap
	}
	c.mu.Lock()
	c.off = o
	aborted := c.aborted
	c.info.Offload, c.info.OffloadReason = mode, ""
	c.mu.Unlock()
	if aborted {
		// abort ran before c.off was set: it closed the sockets under
		// the pair, which fails; make sure it is torn down.
		pair.Close()
	}
	p.m.offloadDecisions.WithLabelValues(mode).Inc()
	return o, nil
}

func isTLS(s stream) bool { _, ok := s.(tlsStream); return ok }
func isTCP(s stream) bool { _, ok := s.(tcpStream); return ok }

// ktlsStream is a tunnel whose record layer the kernel runs but whose
// bytes the proxy still copies (the byte path refused the pair).
type ktlsStream struct{ kc *ktls.Conn }

func (s ktlsStream) Read(p []byte) (int, error)  { return s.kc.Read(p) }
func (s ktlsStream) Write(p []byte) (int, error) { return s.kc.Write(p) }
func (s ktlsStream) closeWrite() error           { return s.kc.CloseWrite() }
func (s ktlsStream) tcp() *net.TCPConn           { return s.kc.TCPConn() }

// relayOffloaded waits for an offloaded connection's end: the pair's
// (both directions done, or one failed), its idle timeout (no byte
// either way for that long), a revocation, or an abort.
func (p *Proxy) relayOffloaded(c *conn, o *offloaded, idle time.Duration) {
	c.update(func(i *ConnInfo) { i.State = StateOffloaded })
	p.recheck(c) // a revocation is picked up by the loop below
	p.m.conns.WithLabelValues(c.direction, c.result()).Inc()
	active := p.m.active.WithLabelValues(c.direction)
	active.Inc()
	mode := c.snapshot().Offload
	offActive := p.m.offloaded.WithLabelValues(mode)
	offActive.Inc()
	if p.cfg.Events != nil {
		p.cfg.Events(Event{Kind: EventEstablished, Conn: c.snapshot(), PeerWorkload: c.peerWorkload(), EndpointWorkload: c.endpointWorkload()})
	}
	bytes := p.m.bytes.WithLabelValues(c.direction)
	offBytes := p.m.offloadedBytes.WithLabelValues(mode)
	var counted uint64
	account := func() uint64 {
		ctr := o.pair.Counters()
		total := ctr.PlainToTLS + ctr.TLSToPlain
		if d := total - counted; d > 0 {
			bytes.Add(float64(d))
			offBytes.Add(float64(d))
			counted = total
		}
		return total
	}
	tick := time.NewTicker(offloadTick)
	defer tick.Stop()
	last, lastChange := uint64(0), time.Now()
	reason := ""
wait:
	for {
		select {
		case <-o.pair.Done():
			break wait
		case <-c.revokeCh:
			c.mu.Lock()
			pushed, why := c.revokePushed, c.revokeReason
			c.mu.Unlock()
			if o.flow != nil {
				if err := o.flow.Revoke(pushed); err != nil {
					p.m.flowErrors.Inc()
				}
			}
			o.pair.Close()
			reason = why
			break wait
		case now := <-tick.C:
			if total := account(); total != last {
				last, lastChange = total, now
			} else if idle > 0 && now.Sub(lastChange) >= idle {
				o.pair.Close()
				reason = "idle timeout"
				break wait
			}
		}
	}
	err := o.pair.Wait()
	account()
	if reason == "" {
		reason = "done"
		if err != nil {
			reason = "reset"
		}
	}
	if o.flow != nil {
		o.flow.Release()
	}
	active.Dec()
	offActive.Dec()
	info := c.finish(reason)
	if p.cfg.Events != nil {
		p.cfg.Events(Event{Kind: EventClosed, Conn: info, PeerWorkload: c.peerWorkload(), EndpointWorkload: c.endpointWorkload(), Reason: reason, Err: err})
	}
}
