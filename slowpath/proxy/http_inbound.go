package proxy

import (
	"context"
	"net/http"

	"github.com/fibmesh/fibmesh/slowpath/resilience"
	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// serveInboundHTTP handles one request to the pod's app: HTTP RBAC, the
// inbound route, the forwarded headers, then the app in the protocol the
// calling app spoke.
func (ps *podState) serveInboundHTTP(w http.ResponseWriter, r *http.Request) {
	m := metaOf(r.Context())
	ri := ps.newRequest(DirectionInbound, r, m)
	defer ps.requestDone(ri)
	defer ps.traceRequest(r, ri)()
	if m == nil {
		ps.localReply(w, r, ri, http.StatusServiceUnavailable, "NR", bodyNoConfig)
		return
	}
	if !normalizePath(r) {
		ps.localReply(w, r, ri, http.StatusBadRequest, "", "bad path")
		return
	}
	ri.Path = r.URL.Path
	proto := "http/1.1"
	if r.ProtoMajor == 2 {
		proto = "h2"
	}
	if m.tunnel {
		if p := r.Header.Get(hdrProtocol); p == "h2" || p == "http/1.1" {
			proto = p
		}
		// The calling agent's word on its workload, and ours in return
		// (on every answer, local replies too).
		ri.MTLS = true
		ri.PeerWorkload = decodeWorkloadMeta(r.Header.Get(hdrPeer))
		w.Header().Set(hdrPeer, ps.metaHdr)
	}
	r.Header.Del(hdrProtocol)
	r.Header.Del(hdrPeer)
	if r.Header.Get(hdrRequestID) == "" {
		r.Header.Set(hdrRequestID, resilience.RequestID())
	}
	ri.RequestID = r.Header.Get(hdrRequestID)
	if r.Header.Get(hdrForwardedProto) == "" {
		r.Header.Set(hdrForwardedProto, "http")
	}
	chain := m.chainFor(ps.p.cfg.Snapshot(), true)
	if chain == nil {
		noChain(w, r)
		ps.localReply(w, r, ri, http.StatusServiceUnavailable, "NR", bodyNoChain)
		return
	}
	in := xdsconf.AuthzInput{Principal: m.principal, Source: m.src, Destination: m.dst,
		Request: &xdsconf.HTTPRequest{Method: r.Method, Path: requestPath(r), Authority: r.Host, Scheme: "http",
			Header: headerLookup(r.Header)}}
	if d := requestRBAC(chain).Evaluate(in); !d.Allowed {
		policy := d.Policy
		if policy == "" {
			policy = "default-deny"
		}
		ri.Policy = policy
		ps.p.m.denied.WithLabelValues(policy).Inc()
		ps.localReply(w, r, ri, http.StatusForbidden, "RBAC", bodyRBAC)
		return
	}
	ctx := r.Context()
	if rc := chain.HTTP.Routes(); rc != nil {
		route := matchRoute(rc, r)
		if route == nil {
			ps.localReply(w, r, ri, http.StatusNotFound, "NR", bodyNoRoute)
			return
		}
		ri.Route = route.Name
		ri.Cluster = route.PickCluster(0)
		if route.Timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, route.Timeout)
			defer cancel()
		}
	}
	if m.xfcc != "" {
		// Istio's sidecars: forward_client_cert_details APPEND_FORWARD,
		// with the URI (the caller's SPIFFE ID) and the hash.
		r.Header.Set(hdrXFCC, resilience.XFCCAppend(r.Header.Get(hdrXFCC), m.xfcc))
	} else {
		// In plaintext there is no client certificate: what the
		// client wrote is no one's (Envoy removes it unless mTLS).
		r.Header.Del(hdrXFCC)
	}
	ri.Upstream = m.dst
	ri.Attempts = 1
	if kind := upgradeKind(r); kind != upgradeNone {
		if ps.refuseUpgrade(w, r, ri, kind) {
			return
		}
		if r.ProtoMajor != 1 {
			ps.localReply(w, r, ri, http.StatusNotImplemented, "", bodyUpgradeH2)
			return
		}
		up, err := ps.dial(ctx, m.dst, ps.p.cfg.ConnectTimeout)
		if err != nil {
			ri.Err = err
			ps.localReply(w, r, ri, http.StatusServiceUnavailable, "UF", bodyConnect)
			return
		}
		ps.relayUpgrade(ctx, w, r, up, ri)
		return
	}
	// The request is ours: its headers are changed in place.
	hdr := r.Header
	removeHopByHop(hdr)
	body := r.Body
	if r.ContentLength == 0 {
		body = http.NoBody
	}
	req := upstreamRequest(ctx, r, hdr, body, m.dst.String())
	rt := ps.l7.appH1
	if proto == "h2" {
		rt = ps.l7.appH2
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		ri.Err = err
		switch {
		case ctx.Err() != nil:
			ps.localReply(w, r, ri, http.StatusGatewayTimeout, "UT", bodyTimeout)
		case isDialError(err):
			ps.localReply(w, r, ri, http.StatusServiceUnavailable, "UF", bodyConnect)
		default:
			ps.localReply(w, r, ri, http.StatusServiceUnavailable, "UR", bodyReset)
		}
		return
	}
	ri.Code = resp.StatusCode
	err = ps.copyResponse(w, resp, ri)
	resp.Body.Close()
	if err != nil {
		ri.addFlag("UR")
		panic(http.ErrAbortHandler)
	}
}

// requestRBAC is the authorization of an HTTP chain's requests.
func requestRBAC(fc *xdsconf.FilterChain) *xdsconf.RBAC {
	if fc.HTTP != nil && fc.HTTP.RBAC != nil {
		return fc.HTTP.RBAC
	}
	return fc.RBAC
}
