package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// FuzzHTTPRequest feeds requests as net/http's server parses them (any
// method, path, authority and headers) to the outbound handler with the
// L7 test mesh's routes and to the inbound side's RBAC and routes. The
// mesh's clusters have no endpoints, so nothing is dialled: every
// request ends in a local reply, and it must be one the proxy makes (no
// panic, no other status).
func FuzzHTTPRequest(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: web\r\n\r\n",
		"GET /retry/a?x=1 HTTP/1.1\r\nHost: web.default.svc.cluster.local:80\r\nX-Request-Id: abc\r\n\r\n",
		"POST /abort HTTP/1.1\r\nHost: 10.96.0.20\r\nContent-Length: 3\r\n\r\nabc",
		"GET /admin/x HTTP/1.1\r\nHost: WEB\r\nConnection: keep-alive, X-Foo\r\nX-Foo: 1\r\nTe: trailers\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"CONNECT web:80 HTTP/1.1\r\nHost: web:80\r\n\r\n",
		"GET http://web/abs HTTP/1.1\r\nHost: other\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: web\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: nope.example\r\nContent-Type: application/grpc\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	snap := l7Snapshot(f, l7Manifests(netip.MustParseAddr("10.199.0.1"), netip.MustParseAddr("10.199.0.2")))
	// No endpoints anywhere: every cluster answers "no healthy upstream".
	for _, cl := range snap.Clusters {
		cl.Endpoints = nil
	}
	p, err := New(Config{Snapshot: func() *xdsconf.Snapshot { return snap },
		Certificate: func(string, string) (*tls.Certificate, spiffeid.ID, error) { return nil, spiffeid.ID{}, nil },
		TrustBundle: func() []*x509.Certificate { return nil },
		TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local")})
	if err != nil {
		f.Fatal(err)
	}
	ps := &podState{p: p, pod: Pod{Namespace: "default", Name: "client"}, ctx: context.Background()}
	ps.l7 = ps.newL7()
	out := snap.Outbound.Match(xdsconf.MatchInput{Destination: webVIP})
	in := snap.Inbound.Match(xdsconf.MatchInput{Destination: netip.AddrPortFrom(netip.MustParseAddr("10.199.0.2"), httpPort)})
	if out == nil || out.HTTP == nil || in == nil || in.HTTP == nil {
		f.Fatalf("the test mesh has no HTTP chains: outbound %v, inbound %v", out, in)
	}
	local := []int{http.StatusBadRequest /* a body cut short */, http.StatusForbidden /* an upgrade not websocket */, http.StatusNotFound, http.StatusServiceUnavailable, 418, http.StatusGatewayTimeout,
		http.StatusNotImplemented, http.StatusOK /* a gRPC local reply */}
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return
		}
		r.RemoteAddr = "10.199.0.1:40000"
		meta := &connMeta{chain: out, src: netip.MustParseAddrPort("10.199.0.1:40000"), dst: webVIP}
		r = r.WithContext(context.WithValue(context.Background(), metaKey{}, meta))
		w := httptest.NewRecorder()
		ps.serveOutboundHTTP(w, r)
		if !slices.Contains(local, w.Code) {
			t.Fatalf("status %d (%q) to %q, want a local reply", w.Code, w.Body.String(), raw)
		}
		if w.Code != http.StatusOK && w.Header().Get("Content-Type") != "text/plain" {
			t.Fatalf("local reply %d without text/plain", w.Code)
		}
		if r.Header.Get(hdrRequestID) == "" {
			t.Fatal("no x-request-id generated")
		}
		// The inbound side: RBAC and the inline route, as per request.
		d := requestRBAC(in).Evaluate(xdsconf.AuthzInput{Principal: "spiffe://cluster.local/ns/default/sa/client",
			Source: meta.src, Destination: netip.AddrPortFrom(netip.MustParseAddr("10.199.0.2"), httpPort),
			Request: &xdsconf.HTTPRequest{Method: r.Method, Path: requestPath(r), Authority: r.Host, Scheme: "http", Header: headerLookup(r.Header)}})
		if admin := strings.HasPrefix(r.URL.Path, "/admin/"); admin && d.Allowed {
			t.Fatalf("%s %s allowed; the DENY policy covers /admin/*", r.Method, r.URL.Path)
		}
		if rc := in.HTTP.Routes(); rc != nil {
			matchRoute(rc, r)
		}
		h := r.Header.Clone()
		removeHopByHop(h)
		for _, k := range []string{"Connection", "Keep-Alive", "Upgrade", "Transfer-Encoding"} {
			if h.Get(k) != "" {
				t.Fatalf("hop-by-hop %s kept", k)
			}
		}
	})
}
