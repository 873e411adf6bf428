package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fibmesh/fibmesh/slowpath"
	"github.com/fibmesh/fibmesh/slowpath/resilience"
	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// Headers the proxy reads or writes.
const (
	hdrRequestID      = "X-Request-Id"
	hdrForwardedProto = "X-Forwarded-Proto"
	hdrXFCC           = "X-Forwarded-Client-Cert"
	hdrOverloaded     = "X-Envoy-Overloaded"
	// hdrProtocol is set by the calling agent on the pooled HTTP/2
	// tunnel: the protocol the calling app spoke ("h2" or "http/1.1"),
	// so that the called agent speaks the same to its app (Envoy's
	// USE_DOWNSTREAM_PROTOCOL across the tunnel). The called agent
	// removes it; it is trusted only from a tunnel.
	hdrProtocol = "X-Fibmesh-Protocol"
)

// Limits of the request path.
const (
	// maxRetryBody is how much of a request body is kept for a retry,
	// as it is sent (Envoy buffers up to the listener's 1 MiB, known
	// length or not): a retry replays it, then goes on reading. A body
	// longer than that is not retried once it was sent beyond it.
	maxRetryBody = 1 << 20
	// retryBaseInterval and retryMaxInterval are Envoy's default retry
	// back-off: fully jittered, exponential.
	retryBaseInterval = 25 * time.Millisecond
	retryMaxInterval  = 250 * time.Millisecond
)

// Envoy's local reply bodies, which users grep for.
const (
	bodyOverflow    = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
	bodyConnect     = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
	bodyReset       = "upstream connect error or disconnect/reset before headers. reset reason: remote reset"
	bodyTimeout     = "upstream request timeout"
	bodyNoHealthy   = "no healthy upstream"
	bodyFaultAbort  = "fault filter abort"
	bodyRBAC        = "RBAC: access denied"
	bodyNoCluster   = "cluster not found"
	bodyNoRoute     = "route not found"
	bodyNoConfig    = "no route configuration yet"
	bodyNoChain     = "the connection's filter chain is gone (config changed): reconnect"
	bodyUpgradeH2   = "CONNECT and upgrades over HTTP/2 from the app are not supported: use HTTP/1.1"
	bodyNoUpgradeTo = "upgrade refused: the endpoint cannot be reached in one stream"
)

// serveOutboundHTTP handles one request of the pod's app: route, fault,
// cluster, circuit breaker, then the attempts.
func (ps *podState) serveOutboundHTTP(w http.ResponseWriter, r *http.Request) {
	m := metaOf(r.Context())
	ri := ps.newRequest(DirectionOutbound, r, m)
	defer ps.requestDone(ri)
	defer ps.traceRequest(r, ri)()
	snap := ps.p.cfg.Snapshot()
	if m == nil || snap == nil {
		ps.localReply(w, r, ri, http.StatusServiceUnavailable, "NR", bodyNoConfig)
		return
	}
	if !normalizePath(r) {
		ps.localReply(w, r, ri, http.StatusBadRequest, "", "bad path")
		return
	}
	ri.Path = r.URL.Path
	if r.Header.Get(hdrRequestID) == "" {
		r.Header.Set(hdrRequestID, resilience.RequestID())
	}
	ri.RequestID = r.Header.Get(hdrRequestID)
	if r.Header.Get(hdrForwardedProto) == "" {
		r.Header.Set(hdrForwardedProto, "http")
	}
	// Only the calling agent sets them, on the tunnel.
	r.Header.Del(hdrProtocol)
	r.Header.Del(hdrPeer)
	// An app's own x-forwarded-client-cert is not forwarded (Istio's
	// outbound SANITIZE): only the called agent writes one, from the
	// certificate it verified.
	r.Header.Del(hdrXFCC)
	chain := m.chainFor(snap, false)
	if chain == nil {
		noChain(w, r)
		ps.localReply(w, r, ri, http.StatusServiceUnavailable, "NR", bodyNoChain)
		return
	}
	rc := snap.RoutesFor(chain.HTTP)
	if rc == nil {
		ps.localReply(w, r, ri, http.StatusServiceUnavailable, "NR", bodyNoConfig)
		return
	}
	route := matchRoute(rc, r)
	if route == nil {
		ps.localReply(w, r, ri, http.StatusNotFound, "NR", bodyNoRoute)
		return
	}
	ri.Route = route.Name
	ctx := r.Context()
	if f := route.Fault; f != nil {
		if f.Delay > 0 && f.DelayPercent.Hit(rand.Uint32()) {
			ri.addFlag("DI")
			ps.p.m.faults.WithLabelValues("delay").Inc()
			t := time.NewTimer(f.Delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		if (f.AbortHTTPStatus > 0 || f.AbortGRPCStatus >= 0) && f.AbortPercent.Hit(rand.Uint32()) {
			ps.p.m.faults.WithLabelValues("abort").Inc()
			status := f.AbortHTTPStatus
			if f.AbortGRPCStatus >= 0 && isGRPC(r) {
				ps.grpcReply(w, ri, f.AbortGRPCStatus, "FI", bodyFaultAbort)
				return
			}
			if status == 0 {
				status = http.StatusServiceUnavailable
			}
			ps.localReply(w, r, ri, status, "FI", bodyFaultAbort)
			return
		}
	}
	if ctx.Err() != nil {
		return // the client went away during the delay
	}
	// The route's timeout starts after the fault filter, as Envoy's
	// router's does.
	if route.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, route.Timeout)
		defer cancel()
	}
	name := route.PickCluster(rand.Uint32())
	cl := snap.Clusters[name]
	ri.Cluster = name
	if m.c != nil {
		// The connection's row shows its latest request's cluster.
		m.c.update(func(i *ConnInfo) { i.Cluster = name })
	}
	if cl == nil {
		ps.localReply(w, r, ri, http.StatusServiceUnavailable, "NC", bodyNoCluster)
		return
	}
	if kind := upgradeKind(r); kind != upgradeNone {
		if !ps.refuseUpgrade(w, r, ri, kind) {
			ps.upgradeOutbound(ctx, w, r, m, route, cl, ri)
		}
		return
	}
	ps.forward(ctx, w, r, m, route, cl, ri)
}

// matchRoute chooses the virtual host by authority, then the route.
func matchRoute(rc *xdsconf.RouteConfig, r *http.Request) *xdsconf.Route {
	vh := rc.VirtualHost(r.Host)
	if vh == nil {
		return nil
	}
	return vh.Route(r.Method, requestPath(r), headerLookup(r.Header))
}

// requestPath is the request's :path (with the query).
func requestPath(r *http.Request) string {
	if r.RequestURI != "" && r.RequestURI[0] == '/' {
		return r.RequestURI
	}
	return r.URL.RequestURI()
}

// headerLookup answers matchers' lookups by lower-case name: the values
// joined by ",".
func headerLookup(h http.Header) func(string) (string, bool) {
	return func(name string) (string, bool) {
		vv, ok := h[http.CanonicalHeaderKey(name)]
		if !ok || len(vv) == 0 {
			return "", false
		}
		if len(vv) == 1 {
			return vv[0], true
		}
		var b []byte
		for i, v := range vv {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, v...)
		}
		return string(b), true
	}
}

// outcome is how one attempt ended.
type outcome int

const (
	outResponse outcome = iota // a response (any status)
	outConnect                 // no connection to the endpoint (connect, handshake)
	outReset                   // the stream or connection reset before the response
	outRefused                 // REFUSED_STREAM
	outPerTry                  // the per-try timeout
	outTimeout                 // the route's timeout, or the client went away
)

// forward sends the request, retrying as the route's policy says.
func (ps *podState) forward(ctx context.Context, w http.ResponseWriter, r *http.Request, m *connMeta, route *xdsconf.Route, cl *xdsconf.Cluster, ri *RequestInfo) {
	ch := cl.HTTP()
	br := ps.breaker(cl, ch)
	ticket, err := br.Admit(ctx)
	if err != nil {
		var of *resilience.Overflow
		if errors.As(err, &of) {
			ps.p.m.overflow.WithLabelValues(of.Kind).Inc()
			w.Header().Set(hdrOverloaded, "true")
			ps.localReply(w, r, ri, http.StatusServiceUnavailable, "UO", bodyOverflow)
			return
		}
		ps.localReply(w, r, ri, http.StatusGatewayTimeout, "UT", bodyTimeout)
		return
	}
	defer ticket.Release()
	od := ps.outlier(cl, ch)

	// The request is ours: its headers are changed in place.
	hdr := r.Header
	removeHopByHop(hdr)
	// The protocol the endpoint's app gets: the cluster's when it is
	// explicitly HTTP/2 (port protocol http2, grpc), else the app's own
	// (Envoy's USE_DOWNSTREAM_PROTOCOL), carried across the tunnel.
	proto := "http/1.1"
	if r.ProtoMajor == 2 || ch.HTTP2 {
		proto = "h2"
	}
	// The body, read as the attempts send it and kept for a retry.
	policy := route.Retry
	keep := 0
	if policy != nil && policy.NumRetries > 0 {
		keep = maxRetryBody
	}
	rbody := &replayBody{src: r.Body, keep: keep}

	key, cookie := requestHashKey(route, m, r)
	if cookie != "" {
		// The cookie the key came from, for the client to send back (a
		// cookie hash policy with a TTL).
		w.Header().Add("Set-Cookie", cookie)
	}
	var tried []*xdsconf.Endpoint
	last, lastErr := outResponse, error(nil)
	retries := uint32(0)
	retrySlot := false // a retry's circuit breaker slot, held until its attempt answers
	ep := ps.pickEndpoint(cl, m, key, policy, od, tried)
	if ep == nil {
		ps.localReply(w, r, ri, http.StatusServiceUnavailable, "UH", bodyNoHealthy)
		return
	}
	for attempt := 1; ; attempt++ {
		ri.Attempts = attempt
		tried = append(tried, ep)
		ri.Upstream, ri.EndpointWorkload = ep.Addr, endpointWorkload(ep)
		tctx, tcancel := ctx, context.CancelFunc(func() {})
		if policy != nil && policy.PerTryTimeout > 0 {
			tctx, tcancel = context.WithTimeout(ctx, policy.PerTryTimeout)
		}
		var rb io.ReadCloser = http.NoBody
		if r.ContentLength != 0 {
			rb = rbody.attempt()
		}
		if attempt > 1 {
			// An abandoned attempt (a per-try timeout) may still be
			// writing its headers: each attempt has its own.
			hdr = hdr.Clone()
		}
		req := upstreamRequest(tctx, r, hdr, rb, ep.Addr.String())
		ep.Active.Add(1)
		resp, out, err := ps.attempt(tctx, cl, ch, ep, req, proto, ri)
		if retrySlot {
			// Envoy frees a retry's slot when its attempt is answered.
			br.DoneRetry()
			retrySlot = false
		}
		if out == outPerTry && ctx.Err() != nil {
			out = outTimeout
		}
		if od != nil {
			hosts := 0
			if cl.Endpoints != nil {
				hosts = len(cl.Endpoints.Hosts)
			}
			failure := out != outResponse && out != outTimeout || out == outResponse && resp.StatusCode >= 500
			if out != outTimeout && od.Result(ep.Addr, failure, hosts) {
				ps.p.m.ejections.Inc()
			}
		}
		var next *xdsconf.Endpoint
		retry := policy != nil && retries < policy.NumRetries && ctx.Err() == nil &&
			retriable(policy, out, resp) && rbody.replayable()
		if retry {
			// The next endpoint first: with none, the answer in hand
			// is the request's.
			if next = ps.pickEndpoint(cl, m, key, policy, od, tried); next == nil {
				retry = false
			}
		}
		if retry {
			if br.TryRetry() {
				retrySlot = true
			} else {
				ps.p.m.overflow.WithLabelValues(resilience.OverflowRetries).Inc()
				retry = false
			}
		}
		if !retry {
			if out == outResponse {
				ri.Code = resp.StatusCode
				if ri.MTLS {
					ri.PeerWorkload = decodeWorkloadMeta(resp.Header.Get(hdrPeer))
				}
				if retries > 0 && policy.RetriableStatus(resp.StatusCode) {
					ri.addFlag("URX")
				}
				err := ps.copyResponse(w, resp, ri)
				resp.Body.Close()
				ep.Active.Add(-1)
				tcancel()
				if err != nil {
					// The response was cut after its headers: the
					// client sees the stream reset, as from Envoy.
					if ctx.Err() != nil {
						ri.addFlag("UT")
						ps.p.m.timeouts.Inc()
					} else {
						ri.addFlag("UR")
					}
					panic(http.ErrAbortHandler)
				}
				return
			}
			ep.Active.Add(-1)
			tcancel()
			last, lastErr = out, err
			if policy != nil && retries > 0 {
				ri.addFlag("URX")
			}
			break
		}
		// Retry: the response is dropped, the endpoint released.
		if resp != nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		ep.Active.Add(-1)
		tcancel()
		retries++
		ps.p.m.retries.Inc()
		if !backoff(ctx, retries) {
			if retrySlot {
				br.DoneRetry()
			}
			last, lastErr = outTimeout, ctx.Err()
			break
		}
		ep = next
	}
	ri.Err = lastErr
	switch last {
	case outTimeout, outPerTry:
		ps.p.m.timeouts.Inc()
		ps.localReply(w, r, ri, http.StatusGatewayTimeout, "UT", bodyTimeout)
	case outConnect:
		ps.localReply(w, r, ri, http.StatusServiceUnavailable, "UF", bodyConnect)
	default:
		ps.localReply(w, r, ri, http.StatusServiceUnavailable, "UR", bodyReset)
	}
}

// backoff waits Envoy's jittered exponential back-off before retry n
// (1-based); false when ctx ended first.
func backoff(ctx context.Context, n uint32) bool {
	ceil := retryBaseInterval * time.Duration(uint64(1)<<min(n, 10)-1)
	ceil = min(ceil, retryMaxInterval)
	if ceil <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(rand.N(ceil))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// retriable reports whether the policy retries an attempt's outcome.
func retriable(p *xdsconf.RetryPolicy, out outcome, resp *http.Response) bool {
	on := p.On
	switch out {
	case outResponse:
		if p.RetriableStatus(resp.StatusCode) {
			return true
		}
		if gs := resp.Header.Get("Grpc-Status"); gs != "" {
			switch gs {
			case "1":
				return on.Has(xdsconf.RetryCancelled)
			case "4":
				return on.Has(xdsconf.RetryDeadlineExceeded)
			case "8":
				return on.Has(xdsconf.RetryResourceExhausted)
			case "13":
				return on.Has(xdsconf.RetryInternal)
			case "14":
				return on.Has(xdsconf.RetryUnavailable)
			}
		}
		return false
	case outConnect:
		// Envoy: 5xx and reset include connect failures.
		return on.Has(xdsconf.RetryConnectFailure) || on.Has(xdsconf.RetryReset) || on.Has(xdsconf.Retry5xx)
	case outRefused:
		return on.Has(xdsconf.RetryRefusedStream) || on.Has(xdsconf.RetryReset) || on.Has(xdsconf.Retry5xx)
	case outReset:
		return on.Has(xdsconf.RetryReset) || on.Has(xdsconf.Retry5xx)
	case outPerTry:
		// A per-try timeout is a 504 to the policy.
		return on.Has(xdsconf.Retry5xx) || on.Has(xdsconf.RetryGatewayError)
	}
	return false
}

// pickEndpoint chooses the attempt's endpoint: by the cluster's policy,
// away from ejected hosts, and from those already tried when the retry
// policy has previous_hosts. When every host is excluded, the
// exclusions are relaxed in turn (Envoy's panic mode for ejections;
// host_selection_retry_max_attempts for previous hosts).
func (ps *podState) pickEndpoint(cl *xdsconf.Cluster, m *connMeta, key hashKey, policy *xdsconf.RetryPolicy, od *resilience.Outlier, tried []*xdsconf.Endpoint) *xdsconf.Endpoint {
	if cl.Type == xdsconf.ClusterOriginalDst {
		// A route to the passthrough cluster: the original destination.
		return &xdsconf.Endpoint{Addr: m.dst, Healthy: true}
	}
	avoidTried := policy != nil && policy.PreviousHosts && len(tried) > 0
	ejected := func(e *xdsconf.Endpoint) bool { return od != nil && od.Ejected(e.Addr) }
	excludes := []func(*xdsconf.Endpoint) bool{
		func(e *xdsconf.Endpoint) bool { return ejected(e) || avoidTried && slices.Contains(tried, e) },
		func(e *xdsconf.Endpoint) bool { return avoidTried && slices.Contains(tried, e) },
		nil,
	}
	for _, ex := range excludes {
		ep, err := cl.PickRequest(m.src, key.h, key.ok, ex)
		if err == nil {
			return ep
		}
		if !errors.Is(err, xdsconf.ErrAllExcluded) {
			return nil
		}
	}
	return nil
}

// attempt sends one try: over the pooled tunnel to a mesh endpoint, else
// in plaintext (tlsMode disabled, a cluster without TLS).
func (ps *podState) attempt(ctx context.Context, cl *xdsconf.Cluster, ch *xdsconf.ClusterHTTP, ep *xdsconf.Endpoint, req *http.Request, proto string, ri *RequestInfo) (*http.Response, outcome, error) {
	timeout := cl.ConnectTimeout
	if timeout <= 0 {
		timeout = ps.p.cfg.ConnectTimeout
	}
	var rt http.RoundTripper
	ri.MTLS, ri.Peer = false, ""
	if cl.TLS != nil && !(cl.TLS.PlaintextMatch && ep.Plaintext) {
		cc, peer, err := ps.l7.tunnels.get(ctx, ep.Addr, cl.TLS.SANs, timeout, ch.MaxRequestsPerConnection)
		if err != nil {
			if ctx.Err() != nil {
				return nil, outPerTry, err
			}
			return nil, outConnect, err
		}
		req.Header.Set(hdrProtocol, proto)
		req.Header.Set(hdrPeer, ps.metaHdr)
		ri.MTLS = true
		if !peer.IsZero() {
			ri.Peer = peer.String()
		}
		rt = cc
	} else {
		req.Header.Del(hdrProtocol)
		req.Header.Del(hdrPeer)
		rt = ps.l7.appH1
		if proto == "h2" {
			rt = ps.l7.appH2
		}
	}
	resp, err := rt.RoundTrip(req)
	if err == nil {
		return resp, outResponse, nil
	}
	switch {
	case ctx.Err() != nil:
		return nil, outPerTry, err
	case isDialError(err):
		return nil, outConnect, err
	case isRefusedStream(err):
		return nil, outRefused, err
	}
	return nil, outReset, err
}

func isDialError(err error) bool {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return true
	}
	var r *refusal
	return errors.As(err, &r)
}

func isRefusedStream(err error) bool {
	// net/http's HTTP/2 client reports a REFUSED_STREAM reset by its
	// code's name; the request was not processed.
	return err != nil && strings.Contains(err.Error(), "REFUSED_STREAM")
}

// upstreamRequest builds one attempt's request.
func upstreamRequest(ctx context.Context, r *http.Request, hdr http.Header, body io.ReadCloser, host string) *http.Request {
	u := *r.URL
	u.Scheme, u.Host = "http", host
	req := &http.Request{
		Method: r.Method, URL: &u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: hdr, Body: body, ContentLength: r.ContentLength, Host: r.Host,
	}
	if body == http.NoBody {
		req.ContentLength = 0
	}
	return req.WithContext(ctx)
}

// replayBody is a request body shared by the attempts: it is read from
// the client as an attempt sends it, the first keep bytes kept, so that a
// retry sends what was read again and then goes on reading. Each attempt
// reads through its own handle, cut off once the handler moved on (a
// per-try timeout's RoundTrip may still read); only the current one
// reads from the client.
type replayBody struct {
	src  io.ReadCloser
	keep int

	mu       sync.Mutex // guards the fields below, not the client reads
	buf      []byte     // what was read, while it fits in keep
	overflow bool       // more than keep was read: no replay
	eof      error      // the client's end of body (io.EOF or an error)
	current  *attemptBody
}

// attempt returns the body for a new attempt.
func (b *replayBody) attempt() io.ReadCloser {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.current = &attemptBody{b: b}
	return b.current
}

// replayable cuts the current attempt's handle off and reports whether
// a retry can send the body whole: nothing read beyond what was kept.
func (b *replayBody) replayable() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.current = nil
	return !b.overflow
}

type attemptBody struct {
	b   *replayBody
	pos int
}

var errAbandoned = errors.New("request body: the attempt was abandoned")

func (a *attemptBody) Read(p []byte) (int, error) {
	b := a.b
	b.mu.Lock()
	if b.current != a {
		b.mu.Unlock()
		return 0, errAbandoned
	}
	if a.pos < len(b.buf) {
		// Replay what an earlier attempt read.
		n := copy(p, b.buf[a.pos:])
		a.pos += n
		b.mu.Unlock()
		return n, nil
	}
	if b.eof != nil {
		b.mu.Unlock()
		return 0, b.eof
	}
	b.mu.Unlock()
	n, err := b.src.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.overflow {
		if len(b.buf)+n <= b.keep {
			b.buf = append(b.buf, p[:n]...)
		} else {
			b.overflow, b.buf = true, nil
		}
	}
	a.pos += n
	if err != nil {
		b.eof = err
	}
	return n, err
}

func (a *attemptBody) Close() error { return nil }

// hopByHop are the headers of one connection (RFC 9110 7.6.1), not
// forwarded; TE is kept when it says "trailers" (gRPC).
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade", "Te", "Trailer"}

func removeHopByHop(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	te := h.Get("Te")
	for _, k := range hopByHop {
		delete(h, k)
	}
	if te == "trailers" {
		h.Set("Te", "trailers")
	}
}

// copyResponse writes an upstream response to the client: headers
// without the hop-by-hop ones, the body (flushed as it comes when its
// length is unknown or the client speaks HTTP/2: streams, gRPC), then
// the trailers.
func (ps *podState) copyResponse(w http.ResponseWriter, resp *http.Response, ri *RequestInfo) error {
	// A peer agent's metadata was read by the caller (forward); an
	// app's is no one's.
	resp.Header.Del(hdrPeer)
	h := w.Header()
	for k, vv := range resp.Header {
		if k == "Set-Cookie" && len(h[k]) > 0 {
			// The proxy's own (a consistent-hash cookie) and the app's.
			h[k] = append(h[k], vv...)
			continue
		}
		h[k] = vv
	}
	removeHopByHop(h)
	for k := range resp.Trailer {
		h.Add("Trailer", k)
	}
	ri.ResponseHeaderBytes = statusHeadBytes(resp.StatusCode, h)
	ri.GRPCStatus = resp.Header.Get("Grpc-Status") // trailers-only
	w.WriteHeader(resp.StatusCode)
	stream := resp.ContentLength < 0
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	rc := http.NewResponseController(w)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			ri.BytesSent += int64(n)
			if stream {
				rc.Flush()
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
		ri.ResponseHeaderBytes += int64(len(k) + 2 + len(strings.Join(vv, ",")) + 2)
	}
	if gs := resp.Trailer.Get("Grpc-Status"); gs != "" {
		ri.GRPCStatus = gs
	}
	return nil
}

// statusHeadBytes is the size of a response's head: the status line
// and the headers, as HTTP/1.1 writes them.
func statusHeadBytes(code int, h http.Header) int64 {
	return int64(len("HTTP/1.1 200 ") + len(http.StatusText(code)) + 2 + headerBytes(h) + 2)
}

// Upgrade kinds (upgradeKind).
const (
	upgradeNone      = ""
	upgradeWebSocket = "websocket"
	upgradeConnect   = "CONNECT"
)

// upgradeKind says whether a request leaves HTTP after its response: a
// WebSocket upgrade (the only upgrade Istio's sidecars allow) or a
// CONNECT; both then take a connection of their own. An h2c upgrade
// ("Upgrade: h2c") is served as the plain request it also is (its
// Upgrade and HTTP2-Settings headers are hop-by-hop and dropped, as
// Envoy does); any other upgrade is returned by name, to be refused.
func upgradeKind(r *http.Request) string {
	if r.Method == http.MethodConnect {
		return upgradeConnect
	}
	up := r.Header.Get("Upgrade")
	if up == "" {
		return upgradeNone
	}
	asked := false
	for _, f := range r.Header.Values("Connection") {
		for _, t := range strings.Split(f, ",") {
			asked = asked || strings.EqualFold(strings.TrimSpace(t), "Upgrade")
		}
	}
	switch {
	case !asked:
		return upgradeNone
	case strings.EqualFold(up, "websocket"):
		return upgradeWebSocket
	case strings.EqualFold(up, "h2c"):
		return upgradeNone
	}
	return up
}

// refuseUpgrade answers an upgrade that is not WebSocket, as Envoy does
// for upgrade types its connection manager is not configured for.
func (ps *podState) refuseUpgrade(w http.ResponseWriter, r *http.Request, ri *RequestInfo, kind string) bool {
	switch kind {
	case upgradeNone, upgradeWebSocket, upgradeConnect:
		return false
	}
	ps.localReply(w, r, ri, http.StatusForbidden, "", "upgrade to "+kind+" is not allowed (only websocket)")
	return true
}

func isGRPC(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return len(ct) >= 16 && ct[:16] == "application/grpc"
}

// grpcStatusOf maps a local reply's HTTP status to gRPC's, as Envoy does.
func grpcStatusOf(code int) int {
	switch code {
	case 400:
		return 13 // INTERNAL
	case 401:
		return 16 // UNAUTHENTICATED
	case 403:
		return 7 // PERMISSION_DENIED
	case 404:
		return 12 // UNIMPLEMENTED
	case 429, 502, 503, 504:
		return 14 // UNAVAILABLE
	}
	return 2 // UNKNOWN
}

// localReply answers a request from the proxy itself (Envoy's local
// reply): text, or a trailers-only gRPC status to a gRPC request.
func (ps *podState) localReply(w http.ResponseWriter, r *http.Request, ri *RequestInfo, code int, flag, body string) {
	ri.addFlag(flag)
	if isGRPC(r) {
		ps.grpcReply(w, ri, grpcStatusOf(code), "", body)
		return
	}
	ri.Code = code
	h := w.Header()
	h.Set("Content-Type", "text/plain")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	ri.ResponseHeaderBytes = statusHeadBytes(code, h)
	w.WriteHeader(code)
	io.WriteString(w, body)
	ri.BytesSent += int64(len(body))
}

func (ps *podState) grpcReply(w http.ResponseWriter, ri *RequestInfo, status int, flag, msg string) {
	ri.addFlag(flag)
	ri.Code = http.StatusOK
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(status))
	h.Set("Grpc-Message", msg)
	ri.GRPCStatus = strconv.Itoa(status)
	ri.ResponseHeaderBytes = statusHeadBytes(http.StatusOK, h)
	w.WriteHeader(http.StatusOK)
}

// breaker is the pod's circuit breaker of a cluster, its limits kept
// current.
func (ps *podState) breaker(cl *xdsconf.Cluster, ch *xdsconf.ClusterHTTP) *resilience.Breaker {
	want := resilience.Limits{MaxConnections: cl.MaxConnections, MaxPendingRequests: ch.MaxPendingRequests,
		MaxRequests: ch.MaxRequests, MaxRetries: ch.MaxRetries, HTTP2: ch.HTTP2}
	v, ok := ps.l7.breakers.Load(cl.Name)
	if !ok {
		v, _ = ps.l7.breakers.LoadOrStore(cl.Name, resilience.NewBreaker(want))
	}
	b := v.(*resilience.Breaker)
	if b.Limits() != want {
		b.SetLimits(want)
	}
	return b
}

// outlierState is a cluster's outlier detector and the config it has.
type outlierState struct {
	od  *resilience.Outlier
	cfg *xdsconf.OutlierDetection
}

// outlier is the pod's outlier detector of a cluster; nil when the
// cluster has no outlier detection.
func (ps *podState) outlier(cl *xdsconf.Cluster, ch *xdsconf.ClusterHTTP) *resilience.Outlier {
	if ch.Outlier == nil {
		ps.l7.outliers.Delete(cl.Name)
		return nil
	}
	cfg := outlierConfig(ch.Outlier)
	v, ok := ps.l7.outliers.Load(cl.Name)
	if !ok {
		v, _ = ps.l7.outliers.LoadOrStore(cl.Name, &outlierState{od: resilience.NewOutlier(cfg, time.Now), cfg: ch.Outlier})
	}
	st := v.(*outlierState)
	if st.cfg != ch.Outlier {
		st.od.SetConfig(cfg)
		ps.l7.outliers.Store(cl.Name, &outlierState{od: st.od, cfg: ch.Outlier})
		if cl.Endpoints != nil {
			hosts := cl.Endpoints.Hosts
			st.od.Forget(func(a netip.AddrPort) bool {
				return slices.ContainsFunc(hosts, func(e *xdsconf.Endpoint) bool { return e.Addr == a })
			})
		}
	}
	return st.od
}

func outlierConfig(o *xdsconf.OutlierDetection) resilience.OutlierConfig {
	return resilience.OutlierConfig{Consecutive5xx: o.Consecutive5xx, EnforcingConsecutive5xx: o.EnforcingConsecutive5xx,
		Interval: o.Interval, BaseEjectionTime: o.BaseEjectionTime, MaxEjectionPercent: o.MaxEjectionPercent}
}

// upgradeOutbound carries an upgrade (WebSocket) or CONNECT: the app's
// connection leaves HTTP after the response, so it takes a tunnel of its
// own (ALPN slowpath.TunnelALPN) to one endpoint, the request is written
// there as it came, and bytes are relayed both ways until either side
// ends.
func (ps *podState) upgradeOutbound(ctx context.Context, w http.ResponseWriter, r *http.Request, m *connMeta, route *xdsconf.Route, cl *xdsconf.Cluster, ri *RequestInfo) {
	if r.ProtoMajor != 1 {
		ps.localReply(w, r, ri, http.StatusNotImplemented, "", bodyUpgradeH2)
		return
	}
	key, _ := requestHashKey(route, m, r)
	ep := ps.pickEndpoint(cl, m, key, nil, nil, nil)
	if ep == nil {
		ps.localReply(w, r, ri, http.StatusServiceUnavailable, "UH", bodyNoHealthy)
		return
	}
	ri.Upstream, ri.EndpointWorkload = ep.Addr, endpointWorkload(ep)
	timeout := cl.ConnectTimeout
	if timeout <= 0 {
		timeout = ps.p.cfg.ConnectTimeout
	}
	var up net.Conn
	if cl.TLS != nil && !(cl.TLS.PlaintextMatch && ep.Plaintext) {
		s, err := ps.tunnelALPN(ctx, m.c, cl.TLS.SANs, ep.Addr, m.src, timeout, slowpath.TunnelALPN)
		if err != nil {
			ri.Err = err
			ps.localReply(w, r, ri, http.StatusServiceUnavailable, "UF", bodyConnect)
			return
		}
		up = &streamConn{tlsStream: s}
	} else {
		c, err := ps.dial(ctx, ep.Addr, timeout)
		if err != nil {
			ri.Err = err
			ps.localReply(w, r, ri, http.StatusServiceUnavailable, "UF", bodyConnect)
			return
		}
		up = c
	}
	ps.relayUpgrade(ctx, w, r, up, ri)
}

// relayUpgrade writes the upgrade (or CONNECT) request to up and reads
// the answer. Only a switch (101 to an upgrade, 2xx to a CONNECT) turns
// the client's connection into a byte stream, relayed both ways until
// either side ends; any other answer is sent as a response and the
// client's connection stays HTTP (its next requests are routed and
// authorized one by one, as any).
func (ps *podState) relayUpgrade(ctx context.Context, w http.ResponseWriter, r *http.Request, up net.Conn, ri *RequestInfo) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		ps.localReply(w, r, ri, http.StatusNotImplemented, "", bodyUpgradeH2)
		return
	}
	// The answer must come within the request's time (an upstream that
	// never answers must not hold the client).
	stop := context.AfterFunc(ctx, func() { up.SetDeadline(time.Now()) })
	out := *r
	out.Header = r.Header.Clone()
	out.Header.Del(hdrProtocol)
	if err := out.Write(up); err != nil {
		stop()
		up.Close()
		ri.Err = err
		ps.localReply(w, r, ri, http.StatusServiceUnavailable, "UF", bodyNoUpgradeTo)
		return
	}
	br := bufio.NewReader(up)
	resp, err := http.ReadResponse(br, r)
	stoppedInTime := stop()
	if err != nil {
		up.Close()
		ri.Err = err
		if !stoppedInTime {
			ps.localReply(w, r, ri, http.StatusGatewayTimeout, "UT", bodyTimeout)
			return
		}
		ps.localReply(w, r, ri, http.StatusServiceUnavailable, "UR", bodyReset)
		return
	}
	up.SetDeadline(time.Time{})
	ri.Code = resp.StatusCode
	switched := resp.StatusCode == http.StatusSwitchingProtocols && r.Method != http.MethodConnect ||
		r.Method == http.MethodConnect && resp.StatusCode/100 == 2
	if !switched {
		err := ps.copyResponse(w, resp, ri)
		resp.Body.Close()
		up.Close()
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		return
	}
	down, brw, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	// The switch's head as the upstream wrote it (its Connection and
	// Upgrade headers are the protocol's, not hop-by-hop here).
	fmt.Fprintf(brw, "HTTP/%d.%d %s\r\n", resp.ProtoMajor, resp.ProtoMinor, resp.Status)
	resp.Header.Write(brw)
	brw.WriteString("\r\n")
	if err := brw.Flush(); err != nil {
		down.Close()
		up.Close()
		return
	}
	done := make(chan struct{}, 2)
	cp := func(dst net.Conn, src io.Reader, srcConn net.Conn) {
		io.Copy(dst, src)
		// Either side's end ends both (upgraded protocols close as one).
		dst.Close()
		srcConn.Close()
		done <- struct{}{}
	}
	// Both readers first return what they buffered beyond the heads.
	go cp(up, brw.Reader, down)
	go cp(down, br, up)
	<-done
	<-done
}

// RequestInfo describes one HTTP request the proxy handled: the hook
// Config.Requests gets it (an access log), the metrics count it.
type RequestInfo struct {
	Direction string
	Pod       string
	Start     time.Time
	Duration  time.Duration
	Method    string
	Authority string
	Path      string
	Protocol  string
	// Code is the status sent to the client (0: none, the stream was
	// reset).
	Code int
	// Flags are Envoy's response flags ("UT", "UO", "UF", "UH", "NR",
	// "NC", "FI", "DI", "URX", "UR", "RBAC"), comma-separated; "" none.
	Flags     string
	Route     string
	Cluster   string
	Upstream  netip.AddrPort
	Attempts  int
	RequestID string
	// Peer is the other side's verified SPIFFE ID: the calling
	// workload's (inbound, over mTLS), or the endpoint's that answered
	// (outbound, over the tunnel); "" in plaintext.
	Peer string
	// Policy is the RBAC policy that denied the request, if any.
	Policy string
	// BytesSent are the response body bytes sent to the client,
	// BytesReceived the request body bytes read from it (Envoy's
	// BYTES_SENT and BYTES_RECEIVED).
	BytesSent     int64
	BytesReceived int64
	// RequestHeaderBytes and ResponseHeaderBytes are the sizes of the
	// request's and the response's heads (the request or status line
	// and each header as "Name: value\r\n"), for Istio's
	// istio_request_bytes and istio_response_bytes (heads and bodies).
	RequestHeaderBytes  int64
	ResponseHeaderBytes int64
	Err                 error

	// Workload is the local pod's workload (Config.Workload);
	// PeerWorkload the other side's, as its agent told over the tunnel
	// (hdrPeer): zero when the peer is no mesh agent, the request went
	// or came in plaintext, or never reached it.
	Workload     WorkloadMeta
	PeerWorkload WorkloadMeta
	// EndpointWorkload is the workload of the endpoint the last attempt
	// went to (outbound), as EDS says it (Istio's endpoint metadata):
	// what names the destination when the peer's agent did not answer.
	// Zero inbound, or when the endpoint's metadata says none.
	EndpointWorkload WorkloadMeta
	// MTLS: the request came (inbound) or went (outbound, its last
	// attempt) over the mesh's mTLS tunnel.
	MTLS bool
	// GRPC: the request's content-type is application/grpc (Istio's
	// request_protocol "grpc"). GRPCStatus is the response's
	// grpc-status (trailer or trailers-only header), "" when none.
	GRPC       bool
	GRPCStatus string
	// Source is the downstream's address (the calling app's, as the
	// PROXY header or the socket says); Destination the address it
	// called (a VIP:port outbound, the pod IP:port inbound).
	Source, Destination netip.AddrPort
	// UserAgent and ForwardedFor are the request's User-Agent and
	// X-Forwarded-For headers as received.
	UserAgent, ForwardedFor string

	// body counts BytesReceived as the request body is read (by the
	// transport's goroutine too).
	body *atomic.Int64
}

func (ri *RequestInfo) addFlag(f string) {
	if f == "" {
		return
	}
	if ri.Flags == "" {
		ri.Flags = f
		return
	}
	ri.Flags += "," + f
}

func (ps *podState) newRequest(direction string, r *http.Request, m *connMeta) *RequestInfo {
	ri := &RequestInfo{Direction: direction, Pod: ps.key(), Start: time.Now(), Method: r.Method,
		Authority: r.Host, Path: r.URL.Path, Protocol: r.Proto, RequestID: r.Header.Get(hdrRequestID),
		Workload: ps.meta, UserAgent: r.Header.Get("User-Agent"), ForwardedFor: r.Header.Get("X-Forwarded-For"),
		RequestHeaderBytes: requestHeadBytes(r), GRPC: isGRPC(r), body: new(atomic.Int64)}
	if m != nil {
		ri.Peer = m.principal
		ri.Source, ri.Destination = m.src, m.dst
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &countingBody{ReadCloser: r.Body, n: ri.body}
	}
	return ri
}

// countingBody counts a request body's bytes as they are read.
type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// requestHeadBytes is the size of a request's head: the request line
// and the headers, as HTTP/1.1 writes them.
func requestHeadBytes(r *http.Request) int64 {
	n := len(r.Method) + 1 + len(requestPath(r)) + 1 + len(r.Proto) + 2
	n += len("Host: ") + len(r.Host) + 2
	n += headerBytes(r.Header)
	return int64(n + 2)
}

// headerBytes is the size of h written as "Name: value\r\n" lines.
func headerBytes(h http.Header) int {
	n := 0
	for k, vv := range h {
		for _, v := range vv {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n
}

// requestDone counts a request and hands it to the Requests hook.
func (ps *podState) requestDone(ri *RequestInfo) {
	ri.Duration = time.Since(ri.Start)
	if ri.body != nil {
		ri.BytesReceived = ri.body.Load()
	}
	flags := ri.Flags
	if flags == "" {
		flags = "-"
	}
	ps.p.m.requests.WithLabelValues(ri.Direction, strconv.Itoa(ri.Code), flags).Inc()
	if ps.p.cfg.Requests != nil {
		ps.p.cfg.Requests(*ri)
	}
}

// hashKey is a request's consistent-hash key (ok false: none).
type hashKey struct {
	h  uint64
	ok bool
}

// requestHashKey computes the key of the route's hash policies (a
// DestinationRule's consistentHash), and the Set-Cookie value when the
// key came from a cookie the proxy generates ("" otherwise).
func requestHashKey(route *xdsconf.Route, m *connMeta, r *http.Request) (hashKey, string) {
	if len(route.Hash) == 0 {
		return hashKey{}, ""
	}
	req := hashRequest(r)
	h, ok := route.HashKey(m.src.Addr(), req)
	return hashKey{h, ok}, route.SetCookie(m.src.Addr(), req)
}

func hashRequest(r *http.Request) *xdsconf.HTTPRequest {
	return &xdsconf.HTTPRequest{Method: r.Method, Path: requestPath(r), Authority: r.Host, Scheme: "http", Header: headerLookup(r.Header)}
}

// noChain closes an HTTP/1 connection after its response: its chain
// is gone, so are its later requests' (an HTTP/2 one has no such
// header; its requests are answered one by one).
func noChain(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
}
