package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/fibmesh/fibmesh/fastpath/ktls"
	"github.com/fibmesh/fibmesh/internal/netns"
	"github.com/fibmesh/fibmesh/slowpath"
	"github.com/fibmesh/fibmesh/slowpath/proxyproto"
	"github.com/fibmesh/fibmesh/slowpath/resilience"
	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// verifyError is a peer certificate the tunnel refuses, with the counted
// reason.
type verifyError struct {
	reason string
	err    error
}

func (e *verifyError) Error() string { return "peer certificate: " + e.err.Error() }
func (e *verifyError) Unwrap() error { return e.err }

// verifyPeer checks a peer's chain: a leaf with one SPIFFE ID of the
// mesh's trust domain, chaining to the current trust bundle (go-spiffe's
// x509svid.Verify: key usages, not a CA, validity).
func (p *Proxy) verifyPeer(certs []*x509.Certificate) (spiffeid.ID, error) {
	if len(certs) == 0 {
		return spiffeid.ID{}, &verifyError{ReasonNoClientCert, errors.New("none presented")}
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return spiffeid.ID{}, &verifyError{ReasonBadCertificate, err}
	}
	if id.TrustDomain() != p.cfg.TrustDomain {
		return id, &verifyError{ReasonBadTrustDomain, fmt.Errorf("SPIFFE ID %s is not of trust domain %s", id, p.cfg.TrustDomain)}
	}
	roots := p.cfg.TrustBundle()
	if p.verified.ok(certs, roots, time.Now()) {
		return id, nil
	}
	bundle := x509bundle.FromX509Authorities(p.cfg.TrustDomain, roots)
	if _, _, err := x509svid.Verify(certs, bundle); err != nil {
		return id, &verifyError{ReasonBadCertificate, err}
	}
	p.verified.add(certs, roots)
	return id, nil
}

// verifiedChains remembers the peer chains that verified against the
// current trust bundle, until the first of their certificates expires:
// the same SVID comes back on every tunnel (and on every resumption), and
// its chain's signature check is the costliest step left. A new bundle
// (another slice) starts over.
type verifiedChains struct {
	mu     sync.Mutex
	roots  []*x509.Certificate // the bundle the entries were verified against
	chains map[[32]byte]time.Time
}

// maxVerifiedChains bounds the cache; when full it starts over.
const maxVerifiedChains = 4096

func chainKey(certs []*x509.Certificate) [32]byte {
	h := sha256.New()
	for _, c := range certs {
		h.Write(c.Raw)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

func sameBundle(a, b []*x509.Certificate) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

func (v *verifiedChains) ok(certs []*x509.Certificate, roots []*x509.Certificate, now time.Time) bool {
	if len(roots) == 0 {
		return false
	}
	k := chainKey(certs)
	v.mu.Lock()
	defer v.mu.Unlock()
	if !sameBundle(v.roots, roots) {
		return false
	}
	until, ok := v.chains[k]
	return ok && now.Before(until)
}

func (v *verifiedChains) add(certs []*x509.Certificate, roots []*x509.Certificate) {
	until := certs[0].NotAfter
	for _, c := range certs[1:] {
		if c.NotAfter.Before(until) {
			until = c.NotAfter
		}
	}
	for _, r := range roots {
		if r.NotAfter.Before(until) {
			until = r.NotAfter
		}
	}
	k := chainKey(certs)
	v.mu.Lock()
	defer v.mu.Unlock()
	if !sameBundle(v.roots, roots) || len(v.chains) >= maxVerifiedChains {
		v.roots, v.chains = roots, map[[32]byte]time.Time{}
	}
	v.chains[k] = until
}

// nicSuites are the TLS 1.2 suites of a tunnel between two nodes whose
// NICs offload kTLS: AES-128-GCM with ECDHE (forward secrecy), the one
// cipher mainline kTLS device offload takes.
var nicSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}

// nicConfig is the tunnel server's answer to a client that offers TLS
// 1.2 besides 1.3, which it does when its rule says both nodes' NICs
// offload kTLS: where this side's rule (Offload.NICTLS of the client's
// address) agrees, the handshake is capped at TLS 1.2 with nicSuites, so
// both ends' NICs can take the record crypto; otherwise (nil) TLS 1.3 as
// always. A disagreement, such as one agent with a stale flow table,
// costs the NIC offload, never the connection.
func (ps *podState) nicConfig(chi *tls.ClientHelloInfo, base *tls.Config) (*tls.Config, error) {
	nic := ps.p.cfg.Offload.NICTLS
	// Only an L4 tunnel can be offloaded; the pooled HTTP/2 tunnel
	// keeps TLS 1.3.
	if nic == nil || ps.p.userspaceOnly || !slices.Contains(chi.SupportedVersions, tls.VersionTLS12) || !slices.Contains(chi.SupportedProtos, slowpath.TunnelALPN) {
		return nil, nil
	}
	peer, ok := chi.Conn.RemoteAddr().(*net.TCPAddr)
	if !ok || !nic(peer.AddrPort().Addr().Unmap()) {
		return nil, nil
	}
	cfg := base.Clone()
	cfg.GetConfigForClient = nil
	cfg.MinVersion, cfg.MaxVersion, cfg.CipherSuites = tls.VersionTLS12, tls.VersionTLS12, nicSuites
	return cfg, nil
}

// errALPN: the ClientHello offered neither tunnel protocol.
var errALPN = fmt.Errorf("the client offered neither ALPN %q nor %q", slowpath.TunnelALPN, slowpath.TunnelALPNHTTP2)

// podCert returns the pod's SVID for a handshake and records its ID.
func (ps *podState) podCert(id *spiffeid.ID) (*tls.Certificate, error) {
	cert, sid, err := ps.p.cfg.Certificate(ps.pod.Namespace, ps.pod.Name)
	if err != nil {
		return nil, fmt.Errorf("SVID of pod %s: %w", ps.key(), err)
	}
	if cert == nil {
		return nil, fmt.Errorf("SVID of pod %s: none yet", ps.key())
	}
	*id = sid
	return cert, nil
}

// dial connects from the pod's namespace: the socket is created there,
// marked slowpath.Mark (capture skips it) and bound to the pod's IP of
// dst's family.
func (ps *podState) dial(ctx context.Context, dst netip.AddrPort, timeout time.Duration) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: timeout, Control: slowpath.MarkSocket}
	for _, ip := range ps.pod.IPs {
		if ip.Is4() == dst.Addr().Unmap().Is4() {
			d.LocalAddr = &net.TCPAddr{IP: ip.AsSlice()}
			break
		}
	}
	// A dial holds an OS thread (locked in the pod's namespace) until it
	// connects: bounded, so that destinations that black-hole SYNs
	// cannot exhaust the process's threads.
	select {
	case ps.p.dials <- struct{}{}:
		defer func() { <-ps.p.dials }()
	default:
		return nil, refuse(ReasonOverload, fmt.Errorf("%d connects in progress in the agent: refused (MaxConcurrentDials)", cap(ps.p.dials)))
	}
	var c net.Conn
	err := netns.Do(int(ps.pod.Netns.Fd()), ps.key(), func() error {
		var err error
		// One address: DialContext creates the socket on this
		// thread (no Happy Eyeballs goroutine), so in the namespace.
		c, err = d.DialContext(ctx, "tcp", dst.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// tunnel opens the mTLS tunnel to endpoint (a pod IP:target port): TCP to
// its IP:TunnelPort, the TLS 1.3 handshake with the pod's SVID, the
// server's SPIFFE ID checked against sans (empty: any of the trust
// domain), then the PROXY header for src → endpoint.
func (ps *podState) tunnel(ctx context.Context, c *conn, sans []spiffeid.ID, endpoint, src netip.AddrPort, connectTimeout time.Duration) (stream, error) {
	s, err := ps.tunnelALPN(ctx, c, sans, endpoint, src, connectTimeout, slowpath.TunnelALPN)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// tunnelALPN opens a tunnel with the given ALPN protocol: TunnelALPN for
// one stream, TunnelALPNHTTP2 for the pooled HTTP/2 tunnel.
func (ps *podState) tunnelALPN(ctx context.Context, c *conn, sans []spiffeid.ID, endpoint, src netip.AddrPort, connectTimeout time.Duration, alpn string) (tlsStream, error) {
	target := netip.AddrPortFrom(endpoint.Addr(), slowpath.TunnelPort)
	raw, err := ps.dial(ctx, target, connectTimeout)
	if err != nil {
		return tlsStream{}, fmt.Errorf("connect to %v: %w", target, err)
	}
	if !c.setUpstream(raw) {
		return tlsStream{}, errors.New("aborted")
	}
	raw.SetDeadline(time.Now().Add(ps.p.cfg.HandshakeTimeout))
	var local, peer spiffeid.ID
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		NextProtos: []string{alpn},
		// X25519 alone: the hybrid post-quantum share Go offers by default
		// (X25519MLKEM768) costs ~10% of a tunnel setup; Istio's Envoy
		// tunnels use X25519 too.
		CurvePreferences: []tls.CurveID{tls.X25519},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return ps.podCert(&local)
		},
		// The server is verified by VerifyConnection below against
		// the SPIFFE bundle, not by host name.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := ps.p.verifyPeer(cs.PeerCertificates)
			if err != nil {
				return err
			}
			if len(sans) > 0 && !slices.Contains(sans, id) {
				return &verifyError{ReasonBadCertificate, fmt.Errorf("server SPIFFE ID %s is none of the cluster's %v", id, sans)}
			}
			peer = id
			return nil
		},
	}
	if nic := ps.p.cfg.Offload.NICTLS; nic != nil && !ps.p.userspaceOnly && alpn == slowpath.TunnelALPN && nic(endpoint.Addr()) {
		// Both nodes' NICs offload kTLS record crypto, which mainline
		// drivers do for TLS 1.2 AES-128-GCM only: offered besides TLS
		// 1.3, and chosen by a server that agrees (inboundTunnel).
		cfg.MinVersion, cfg.CipherSuites = tls.VersionTLS12, nicSuites
	}
	if ps.p.userspaceOnly {
		// Resumption (TLS 1.3 tickets) skips the certificate signatures;
		// VerifyConnection still checks the session's peer chain and
		// SANs, now.
		cfg.ClientSessionCache = ps.sessions
	}
	// The local identity is known before the handshake (a resumed one
	// asks for no certificate).
	if _, err := ps.podCert(&local); err != nil {
		c.clearUpstream(raw)
		return tlsStream{}, err
	}
	hctx, cancel := context.WithTimeout(ctx, ps.p.cfg.HandshakeTimeout)
	defer cancel()
	var under net.Conn = raw
	var batch *batchConn
	if ps.p.userspaceOnly {
		batch = &batchConn{TCPConn: raw}
		under = batch
	}
	tc, err := ktls.Client(hctx, under, cfg)
	if err != nil {
		c.clearUpstream(raw)
		return tlsStream{}, fmt.Errorf("TLS handshake with %v: %w", target, err)
	}
	if ps.p.userspaceOnly {
		tc.KeepInUserspace()
	}
	st := tc.ConnectionState()
	if st.NegotiatedProtocol != alpn {
		c.clearUpstream(raw)
		return tlsStream{}, fmt.Errorf("TLS handshake with %v: ALPN %q, want %q", target, st.NegotiatedProtocol, alpn)
	}
	h := proxyproto.Header{Command: proxyproto.Proxy, Source: src, Destination: endpoint}
	if alpn == slowpath.TunnelALPN {
		// The pod's workload, for the called agent's metrics and access
		// log (an HTTP/2 tunnel's requests carry it in hdrPeer).
		h.TLVs = ps.metaTLV
	}
	hdr, err := h.Marshal()
	if err == nil {
		_, err = tc.Write(hdr)
	}
	if err != nil {
		c.clearUpstream(raw)
		return tlsStream{}, fmt.Errorf("PROXY header to %v: %w", target, err)
	}
	raw.SetDeadline(time.Time{})
	c.setTLS(local, peer, st)
	c.update(func(i *ConnInfo) { i.Endpoint, i.Mode = endpoint, ModeTunnel })
	return tlsStream{tc: tc, raw: raw, batch: batch}, nil
}

// plain connects to dst in plaintext (a plaintext endpoint, passthrough,
// or the app).
func (ps *podState) plain(ctx context.Context, c *conn, dst netip.AddrPort, mode string, connectTimeout time.Duration) (stream, error) {
	up, err := ps.dial(ctx, dst, connectTimeout)
	if err != nil {
		return nil, fmt.Errorf("connect to %v: %w", dst, err)
	}
	if !c.setUpstream(up) {
		return nil, errors.New("aborted")
	}
	c.update(func(i *ConnInfo) { i.Mode = mode })
	return tcpStream{up}, nil
}

// inboundTunnel runs the tunnel port's side: handshake, PROXY header,
// destination check, chain, RBAC, then the app; or, for an HTTP chain,
// the handoff to the pod's inbound HTTP server (RBAC per request).
func (ps *podState) inboundTunnel(ctx context.Context, c *conn, down *net.TCPConn) (stream, stream, *handoff, error) {
	var local, peer spiffeid.ID
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		NextProtos: []string{slowpath.TunnelALPN, slowpath.TunnelALPNHTTP2},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return ps.podCert(&local)
		},
		// Requested, then required and verified in VerifyConnection,
		// so that a missing certificate is counted as such.
		ClientAuth: tls.RequestClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := ps.p.verifyPeer(cs.PeerCertificates)
			if err != nil {
				return err
			}
			peer = id
			return nil
		},
	}
	cfg.GetConfigForClient = func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		if !slices.Contains(chi.SupportedProtos, slowpath.TunnelALPN) && !slices.Contains(chi.SupportedProtos, slowpath.TunnelALPNHTTP2) {
			return nil, errALPN
		}
		return ps.nicConfig(chi, cfg)
	}
	// The local identity is known before the handshake (a resumption
	// asks for no certificate).
	if _, err := ps.podCert(&local); err != nil {
		return nil, nil, nil, refuse(ReasonHandshake, err)
	}
	hctx, cancel := context.WithTimeout(ctx, ps.p.cfg.HandshakeTimeout)
	defer cancel()
	handshake := ktls.Server
	if ps.p.userspaceOnly {
		// Tickets under this pod's own key: callers resume, skipping the
		// certificate signatures; VerifyConnection still checks the
		// session's client chain, and RBAC runs as for any connection.
		cfg.SetSessionTicketKeys([][32]byte{ps.ticketKey})
		handshake = ktls.ServerUserspace
	}
	var under net.Conn = down
	var batch *batchConn
	if ps.p.userspaceOnly {
		batch = &batchConn{TCPConn: down}
		under = batch
	}
	tc, err := handshake(hctx, under, cfg)
	if err != nil {
		var ve *verifyError
		switch {
		case errors.As(err, &ve):
			return nil, nil, nil, refuse(ve.reason, err)
		case errors.Is(err, errALPN):
			return nil, nil, nil, refuse(ReasonALPN, err)
		}
		return nil, nil, nil, refuse(ReasonHandshake, err)
	}
	st := tc.ConnectionState()
	c.setTLS(local, peer, st)
	h2 := st.NegotiatedProtocol == slowpath.TunnelALPNHTTP2
	if st.NegotiatedProtocol != slowpath.TunnelALPN && !h2 {
		tc.Close()
		return nil, nil, nil, refuse(ReasonALPN, errALPN)
	}
	hdr, err := proxyproto.Read(tc, MaxProxyHeader)
	if err != nil {
		return nil, nil, nil, refuse(ReasonProxyHeader, err)
	}
	if hdr.Command != proxyproto.Proxy {
		return nil, nil, nil, refuse(ReasonProxyHeader, fmt.Errorf("command %v, want PROXY", hdr.Command))
	}
	// The calling agent's socket carries its pod's IP: a header that
	// claims another source would let a peer pass ipBlocks rules as
	// someone else.
	if from := addrPortOf(down.RemoteAddr()).Addr(); hdr.Source.Addr().Unmap() != from.Unmap() {
		return nil, nil, nil, refuse(ReasonProxyHeader, fmt.Errorf("PROXY header source %v is not the tunnel's peer %v", hdr.Source.Addr(), from))
	}
	var peerMeta WorkloadMeta
	if v, ok := hdr.TLV(proxyproto.TypeWorkload); ok && !h2 {
		peerMeta = peerWorkloadTLV(v, peer)
	}
	c.mu.Lock()
	c.info.Source, c.info.Destination, c.peerMeta = hdr.Source, hdr.Destination, peerMeta
	c.mu.Unlock()
	dn := tlsStream{tc: tc, raw: down, batch: batch}
	up, meta, err := ps.toApp(ctx, c, slowpath.TunnelPort, hdr.Source, hdr.Destination, peer.String())
	if err != nil {
		return nil, nil, nil, err
	}
	if meta == nil {
		if h2 {
			up.tcp().Close()
			return nil, nil, nil, refuse(ReasonNoChain, fmt.Errorf("an HTTP/2 tunnel to %v, whose filter chain is not HTTP", hdr.Destination))
		}
		return dn, up, nil, nil
	}
	meta.tunnel = true
	if len(st.PeerCertificates) > 0 {
		meta.peerCert = st.PeerCertificates[0].Raw
	}
	meta.local = c.snapshot().LocalIdentity
	meta.xfcc = resilience.XFCC(meta.local, meta.principal, meta.peerCert)
	return nil, nil, &handoff{conn: &streamConn{tlsStream: dn}, inbound: true, meta: meta, tunnelH2: h2}, nil
}

// inboundPlaintext runs the plaintext port's side.
func (ps *podState) inboundPlaintext(ctx context.Context, c *conn, down *net.TCPConn) (stream, *handoff, error) {
	src := addrPortOf(down.RemoteAddr())
	dst, err := ps.p.cfg.OriginalDestination(down, ps.pod, slowpath.InboundPlaintextPort)
	if err != nil {
		return nil, nil, refuse(ReasonNoOriginalDst, err)
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	c.update(func(i *ConnInfo) { i.Destination = dst })
	up, meta, err := ps.toApp(ctx, c, slowpath.InboundPlaintextPort, src, dst, "")
	if err != nil || meta == nil {
		return up, nil, err
	}
	return nil, &handoff{conn: down, inbound: true, meta: meta}, nil
}

// agentPort reports whether port is one the agent listens on in the pod:
// never a destination to relay to (it would loop).
func agentPort(port uint16) bool {
	switch port {
	case slowpath.OutboundPort, slowpath.InboundPlaintextPort, slowpath.TunnelPort, slowpath.DNSPort:
		return true
	}
	return false
}

// toApp checks an inbound destination, matches the chain, applies RBAC and
// connects to the app. For an HTTP chain it returns the connection's
// metadata instead: its requests are authorized and sent one by one.
func (ps *podState) toApp(ctx context.Context, c *conn, port int, src, dst netip.AddrPort, principal string) (stream, *connMeta, error) {
	if !slices.Contains(ps.pod.IPs, dst.Addr().Unmap()) || agentPort(dst.Port()) || dst.Port() == 0 {
		return nil, nil, refuse(ReasonBadDestination, fmt.Errorf("destination %v is not an app port of pod %s (IPs %v)", dst, ps.key(), ps.pod.IPs))
	}
	snap := ps.p.cfg.Snapshot()
	if snap == nil {
		return nil, nil, refuse(ReasonNoConfig, nil)
	}
	l := snap.Inbound
	if port == slowpath.InboundPlaintextPort {
		l = snap.InboundPlaintext
	}
	chain := l.Match(xdsconf.MatchInput{Destination: dst, Source: src})
	if chain == nil {
		return nil, nil, refuse(ReasonNoChain, fmt.Errorf("no %s filter chain for %v", listenerNames[port], dst))
	}
	if port == slowpath.TunnelPort && chain.TLS == nil {
		return nil, nil, refuse(ReasonNoChain, fmt.Errorf("inbound filter chain %s for %v has no TLS context", chain.Name, dst))
	}
	c.update(func(i *ConnInfo) { i.Chain, i.Cluster = chain.Name, chainCluster(chain) })
	if chain.TCP != nil && chain.TCP.IdleTimeout != 0 {
		c.mu.Lock()
		c.idle = chain.TCP.IdleTimeout
		c.mu.Unlock()
	}
	if chain.HTTP != nil {
		return nil, &connMeta{c: c, chain: chain, snap: snap, src: src, dst: dst, principal: principal}, nil
	}
	d := chain.RBAC.Evaluate(xdsconf.AuthzInput{Principal: principal, Source: src, Destination: dst})
	if !d.Allowed {
		return nil, nil, &denial{policy: d.Policy}
	}
	up, err := ps.plain(ctx, c, dst, ModePlaintext, ps.p.cfg.ConnectTimeout)
	if err != nil {
		return nil, nil, refuse(ReasonUpstreamApp, err)
	}
	c.mu.Lock()
	c.l4 = &l4Decision{port: port, src: src, dst: dst, principal: principal, snap: snap}
	c.mu.Unlock()
	return up, nil, nil
}
