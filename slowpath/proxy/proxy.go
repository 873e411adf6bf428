package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fibmesh/fibmesh/internal/netns"
	"github.com/fibmesh/fibmesh/slowpath"
	"github.com/fibmesh/fibmesh/slowpath/proxyproto"
)

// Proxy serves the captured pods' listeners. Its methods are safe for
// concurrent use.
type Proxy struct {
	cfg    Config
	m      *metrics
	nextID atomic.Uint64
	// userspaceOnly: the kernel has no kTLS or the offload is off, so
	// tunnels keep no record accounting for an offload
	// (ktls.TLSConn.KeepInUserspace); offloadOff says why.
	userspaceOnly bool
	offloadOff    string
	// dials bounds the connects in progress (each holds a thread).
	dials chan struct{}
	// verified caches peer chains already verified (verifyPeer).
	verified verifiedChains

	mu     sync.Mutex
	pods   map[string]*podState
	closed bool
}

// New returns a Proxy serving no pod yet. It fails if cfg lacks a
// required field.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	p := &Proxy{cfg: cfg, m: newMetrics(), pods: map[string]*podState{}, dials: make(chan struct{}, cfg.MaxConcurrentDials)}
	// Without kTLS in the kernel (or with the offload off) no tunnel
	// can ever leave userspace: give up the record accounting an
	// offload needs (a system call per record saved).
	p.offloadOff = offloadOffReason(cfg.Offload)
	p.userspaceOnly = p.offloadOff != ""
	return p, nil
}

// listener kinds, by port.
var listenerNames = map[int]string{
	slowpath.OutboundPort:         "outbound",
	slowpath.InboundPlaintextPort: "inbound-plaintext",
	slowpath.TunnelPort:           "inbound",
}

// podState is one pod's listeners and connections.
type podState struct {
	p      *Proxy
	pod    Pod // Netns is the proxy's own duplicate
	ctx    context.Context
	cancel context.CancelFunc
	lns    []net.Listener
	// sessions and ticketKey let this pod's tunnels resume (TLS 1.3
	// tickets) where tunnels stay in userspace: the client cache is the
	// pod's own (a session carries the pod's identity), the ticket key
	// too (a ticket issued by this pod's listener is good only here).
	sessions  tls.ClientSessionCache
	ticketKey [32]byte
	// pending bounds, per listener (by port), the connections accepted
	// and not yet established: a flood of slow handshakes on the tunnel
	// port, which anyone can reach, must not starve the pod's own
	// outbound connections.
	pending map[int]chan struct{}
	wg      sync.WaitGroup
	// l7 serves the pod's HTTP connections (http.go).
	l7 *l7
	// meta is the pod's workload (Config.Workload), metaHdr its hdrPeer
	// value, sent to the peer agents of its HTTP requests.
	meta    WorkloadMeta
	metaHdr string
	// metaTLV carries metaHdr in the PROXY header of the pod's L4
	// tunnels (nil when empty or too long to be accepted).
	metaTLV []proxyproto.TLV

	// clusterConns counts the pod's outbound connections per cluster
	// name (*atomic.Int64), for the clusters' max_connections.
	clusterConns sync.Map

	mu     sync.Mutex
	conns  map[uint64]*conn
	closed []ConnInfo // recently closed, oldest first, at most keepClosed
}

// keepClosed is how many closed connections a pod's table keeps, and
// keepClosedFor for how long, so that a short connection can still be
// seen (fibctl conns) after it ended.
const (
	keepClosed    = 128
	keepClosedFor = time.Minute
)

// AddPod starts serving pod: it opens, inside the pod's network
// namespace, TCP listeners on 0.0.0.0 (and [::] when the pod has an IPv6
// address) on slowpath.OutboundPort, InboundPlaintextPort and TunnelPort.
// AddPod is idempotent: a pod already served with the same namespace
// file and IPs is left as it is (an agent that restarted calls it for
// every enrolled pod); one with a different namespace or IPs is removed
// and served anew.
func (p *Proxy) AddPod(pod Pod) error {
	if pod.Namespace == "" || pod.Name == "" {
		return fmt.Errorf("proxy: add pod %q/%q: namespace and name are required", pod.Namespace, pod.Name)
	}
	if pod.Netns == nil {
		return fmt.Errorf("proxy: add pod %s: Netns is nil", pod.key())
	}
	if len(pod.IPs) == 0 {
		return fmt.Errorf("proxy: add pod %s: no IPs (the tunnel port accepts only destinations among them)", pod.key())
	}
	ips := make([]netip.Addr, 0, len(pod.IPs))
	for _, ip := range pod.IPs {
		if !ip.IsValid() {
			return fmt.Errorf("proxy: add pod %s: invalid IP in IPs", pod.key())
		}
		ips = append(ips, ip.Unmap())
	}
	// The new descriptor first: a bad one (closed by its owner) must not
	// stop the pod that runs.
	fd, err := dupFD(int(pod.Netns.Fd()))
	if err != nil {
		return fmt.Errorf("proxy: add pod %s: duplicate netns descriptor: %w", pod.key(), err)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		closeFD(fd)
		return fmt.Errorf("proxy: add pod %s: proxy closed", pod.key())
	}
	old := p.pods[pod.key()]
	if old != nil {
		if netns.Same(int(old.pod.Netns.Fd()), fd) && slices.Equal(old.pod.IPs, ips) {
			p.mu.Unlock()
			closeFD(fd)
			return nil
		}
		delete(p.pods, pod.key())
	}
	p.mu.Unlock()
	if old != nil {
		old.stop()
	}
	ps := &podState{
		p:   p,
		pod: Pod{Namespace: pod.Namespace, Name: pod.Name, Netns: os.NewFile(uintptr(fd), "netns "+pod.key()), IPs: ips},
		pending: map[int]chan struct{}{
			slowpath.OutboundPort:         make(chan struct{}, p.cfg.MaxPendingHandshakes),
			slowpath.InboundPlaintextPort: make(chan struct{}, p.cfg.MaxPendingHandshakes),
			slowpath.TunnelPort:           make(chan struct{}, p.cfg.MaxPendingHandshakes),
		},
		conns: map[uint64]*conn{},
	}
	if p.cfg.Workload != nil {
		ps.meta = p.cfg.Workload(pod.Namespace, pod.Name)
	}
	if ps.meta.Namespace == "" {
		ps.meta.Namespace = pod.Namespace
	}
	ps.metaHdr = ps.meta.encode()
	if ps.metaHdr != "" && len(ps.metaHdr) <= maxPeerMeta {
		ps.metaTLV = []proxyproto.TLV{{Type: proxyproto.TypeWorkload, Value: []byte(ps.metaHdr)}}
	}
	ps.sessions = tls.NewLRUClientSessionCache(256)
	if _, err := rand.Read(ps.ticketKey[:]); err != nil {
		ps.pod.Netns.Close()
		return fmt.Errorf("proxy: add pod %s: session ticket key: %w", pod.key(), err)
	}
	ps.ctx, ps.cancel = context.WithCancel(context.Background())
	ps.l7 = ps.newL7()
	ps.l7.start()
	if err := ps.listen(); err != nil {
		ps.stop()
		return fmt.Errorf("proxy: add pod %s: %w", pod.key(), err)
	}
	p.mu.Lock()
	if p.closed || p.pods[pod.key()] != nil {
		// Closed, or another AddPod of the same pod won the race.
		closed := p.closed
		p.mu.Unlock()
		ps.stop()
		if closed {
			return fmt.Errorf("proxy: add pod %s: proxy closed", pod.key())
		}
		return p.AddPod(pod)
	}
	p.pods[pod.key()] = ps
	p.mu.Unlock()
	for _, ln := range ps.lns {
		ps.wg.Add(1)
		go ps.accept(ln)
	}
	return nil
}

// RemovePod stops serving a pod: it closes its listeners and every
// connection of it, and returns when their goroutines have ended. It is a
// no-op for a pod not served.
func (p *Proxy) RemovePod(namespace, name string) {
	p.mu.Lock()
	ps := p.pods[namespace+"/"+name]
	delete(p.pods, namespace+"/"+name)
	p.mu.Unlock()
	if ps != nil {
		ps.stop()
	}
}

// Close removes every pod and refuses AddPod afterwards.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	pods := p.pods
	p.pods = map[string]*podState{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, ps := range pods {
		wg.Add(1)
		go func() { defer wg.Done(); ps.stop() }()
	}
	wg.Wait()
	return nil
}

// Pods returns the served pods' keys ("namespace/name").
func (p *Proxy) Pods() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for k := range p.pods {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (ps *podState) key() string { return ps.pod.key() }

// listen opens the pod's listeners inside its namespace.
func (ps *podState) listen() error {
	hasV6 := slices.ContainsFunc(ps.pod.IPs, netip.Addr.Is6)
	return netns.Do(int(ps.pod.Netns.Fd()), ps.key(), func() error {
		for _, port := range []int{slowpath.OutboundPort, slowpath.InboundPlaintextPort, slowpath.TunnelPort} {
			nets := [][2]string{{"tcp4", "0.0.0.0"}}
			if hasV6 {
				// tcp6 sets IPV6_V6ONLY: IPv4 stays on the tcp4
				// socket, where SO_ORIGINAL_DST is SOL_IP's.
				nets = append(nets, [2]string{"tcp6", "::"})
			}
			for _, n := range nets {
				ln, err := net.Listen(n[0], net.JoinHostPort(n[1], strconv.Itoa(port)))
				if err != nil {
					return fmt.Errorf("listen on %s port %d (%s) in the pod's namespace: %w", n[0], port, listenerNames[port], err)
				}
				ps.lns = append(ps.lns, ln)
			}
		}
		return nil
	})
}

// stop closes the listeners and connections, waits for the goroutines
// and closes the namespace descriptor.
func (ps *podState) stop() {
	ps.cancel()
	for _, ln := range ps.lns {
		ln.Close()
	}
	ps.mu.Lock()
	conns := make([]*conn, 0, len(ps.conns))
	for _, c := range ps.conns {
		conns = append(conns, c)
	}
	ps.mu.Unlock()
	for _, c := range conns {
		c.abort("pod removed")
	}
	if ps.l7 != nil {
		ps.l7.stop()
	}
	ps.wg.Wait()
	ps.pod.Netns.Close()
}

func (ps *podState) accept(ln net.Listener) {
	defer ps.wg.Done()
	port := ln.Addr().(*net.TCPAddr).Port
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ps.ctx.Err() != nil {
				return
			}
			// EMFILE and the like: back off as net/http does, so a
			// full fd table does not spin the CPU.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
			case <-ps.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		tc := c.(*net.TCPConn)
		select {
		case ps.pending[port] <- struct{}{}:
		default:
			ps.p.refuseEarly(ps, port, tc)
			continue
		}
		ps.wg.Add(1)
		go func() {
			defer ps.wg.Done()
			ps.serve(port, tc)
		}()
	}
}

// refuseEarly closes a connection beyond MaxPendingHandshakes.
func (p *Proxy) refuseEarly(ps *podState, port int, c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
	name := listenerNames[port]
	p.m.refused.WithLabelValues(name, ReasonOverload).Inc()
	p.m.conns.WithLabelValues(directionOf(port), resultRefused).Inc()
	if p.cfg.Events != nil {
		p.cfg.Events(Event{Kind: EventRefused, Reason: ReasonOverload, Conn: ConnInfo{
			Direction: directionOf(port), Listener: name, Pod: ps.key(),
			Source: addrPortOf(c.RemoteAddr()), State: StateClosed, Start: time.Now()}})
	}
}

func directionOf(port int) string {
	if port == slowpath.OutboundPort {
		return DirectionOutbound
	}
	return DirectionInbound
}

// serve runs one accepted connection from setup to the end of the relay.
func (ps *podState) serve(port int, down *net.TCPConn) {
	released := false
	release := func() {
		if !released {
			released = true
			<-ps.pending[port]
		}
	}
	defer release()
	cn := ps.newConn(port, down)
	if cn == nil {
		down.Close()
		return
	}
	// Everything before the relay (original destination, handshake,
	// PROXY header, upstream connect) is bounded by one deadline: a
	// slow client holds a pending slot for HandshakeTimeout at most.
	ctx, cancel := context.WithTimeout(ps.ctx, ps.p.cfg.HandshakeTimeout+ps.p.cfg.ConnectTimeout)
	down.SetDeadline(time.Now().Add(ps.p.cfg.HandshakeTimeout))
	var (
		dn, up stream
		h      *handoff
		err    error
	)
	switch port {
	case slowpath.OutboundPort:
		dn = tcpStream{down}
		up, h, err = ps.outbound(ctx, cn, down)
	case slowpath.TunnelPort:
		dn, up, h, err = ps.inboundTunnel(ctx, cn, down)
	case slowpath.InboundPlaintextPort:
		dn = tcpStream{down}
		up, h, err = ps.inboundPlaintext(ctx, cn, down)
	}
	cancel()
	if err != nil {
		ps.p.fail(cn, err)
		return
	}
	down.SetDeadline(time.Time{})
	release()
	cn.mu.Lock()
	peeked := cn.peeked
	cn.peeked = nil
	cn.mu.Unlock()
	if h != nil {
		if len(peeked) > 0 {
			// Read to choose the chain (a port that also routes TLS by
			// SNI): the HTTP server reads them first.
			h.conn = &prefixConn{Conn: h.conn, r: io.MultiReader(bytes.NewReader(peeked), h.conn)}
		}
		ps.serveHTTP(cn, h)
		return
	}
	if len(peeked) > 0 {
		// The ClientHello read to choose the chain goes first.
		up.tcp().SetWriteDeadline(time.Now().Add(ps.p.cfg.HandshakeTimeout))
		n, err := up.Write(peeked)
		cn.out.Add(uint64(n))
		ps.p.m.bytes.WithLabelValues(cn.direction).Add(float64(n))
		up.tcp().SetWriteDeadline(time.Time{})
		if err != nil {
			ps.p.fail(cn, refuse(ReasonUpstream, err))
			return
		}
	}
	ps.p.relay(cn, dn, up)
}

// prefixConn is a connection whose first bytes were already read.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }
