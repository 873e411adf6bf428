package proxy

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Tracing (Config.Tracer): every HTTP request on an L7 port gets a span
// in the pod's tracer, as Envoy's HTTP connection manager makes one per
// request: kind CLIENT on the calling side (outbound, the app's request
// leaving the pod), SERVER on the called side (inbound, handed to the
// app). The span continues the request's trace context (trace_context.go:
// W3C traceparent/tracestate, B3 multi and single) and is written into
// the request the proxy sends on, so the called agent's SERVER span is
// the child of the calling agent's CLIENT span and the app's own spans
// are children of the SERVER span: one trace from the first app to the
// last. The sampler is the tracer's; SamplingDecision tells it the
// caller's decision.

// noTrace ends no span.
func noTrace() {}

// traceRequest starts ri's span from r's trace headers and writes the
// span's context into r's headers (which the request sent on carries).
// The returned func ends the span from ri as the request ended; it is
// deferred before requestDone runs.
func (ps *podState) traceRequest(r *http.Request, ri *RequestInfo) func() {
	if ps.p.cfg.Tracer == nil {
		return noTrace
	}
	tr := ps.p.cfg.Tracer(ps.pod.Namespace, ps.pod.Name)
	if tr == nil {
		return noTrace
	}
	tc := extractTrace(r.Header)
	kind := trace.SpanKindServer
	if ri.Direction == DirectionOutbound {
		kind = trace.SpanKindClient
	}
	_, span := tr.Start(tc.withDecision(r.Context()), spanName(ri), trace.WithSpanKind(kind), trace.WithTimestamp(ri.Start))
	injectTrace(r.Header, span.SpanContext(), tc.parent, tc.b3Single)
	ua := r.UserAgent()
	return func() { endSpan(span, ri, ua) }
}

// Span attribute keys: Envoy's tracing tags (as Istio's sidecars report
// them), plus peer.principal.
const (
	attrComponent       = "component"
	attrHTTPMethod      = "http.method"
	attrHTTPURL         = "http.url"
	attrHTTPProtocol    = "http.protocol"
	attrHTTPStatusCode  = "http.status_code"
	attrResponseFlags   = "response_flags"
	attrUpstreamCluster = "upstream_cluster"
	attrUpstreamName    = "upstream_cluster.name"
	attrUpstreamAddress = "upstream_address"
	attrRequestID       = "guid:x-request-id"
	attrUserAgent       = "user_agent"
	attrResponseSize    = "response_size"
	attrError           = "error"
	// attrPeerPrincipal is the calling workload's SPIFFE ID, verified
	// by the mTLS handshake (inbound spans over the tunnel).
	attrPeerPrincipal = "peer.principal"
)

// endSpan ends span with what the request came to: its name as Istio's
// route decorator would say it, Envoy's tags, and an error status for a
// 5xx, a reset (no status) or a response cut short ("UR", "UT" after the
// headers).
func endSpan(span trace.Span, ri *RequestInfo, userAgent string) {
	end := time.Now()
	if !span.IsRecording() {
		span.End(trace.WithTimestamp(end))
		return
	}
	span.SetName(spanName(ri))
	flags := ri.Flags
	if flags == "" {
		flags = "-"
	}
	attrs := []attribute.KeyValue{
		attribute.String(attrComponent, "proxy"),
		attribute.String(attrHTTPMethod, ri.Method),
		attribute.String(attrHTTPURL, "http://"+ri.Authority+ri.Path),
		attribute.String(attrHTTPProtocol, ri.Protocol),
		attribute.String(attrHTTPStatusCode, strconv.Itoa(ri.Code)),
		attribute.String(attrResponseFlags, flags),
		attribute.String(attrRequestID, ri.RequestID),
		attribute.Int64(attrResponseSize, ri.BytesSent),
	}
	if ri.Cluster != "" {
		attrs = append(attrs, attribute.String(attrUpstreamCluster, ri.Cluster), attribute.String(attrUpstreamName, ri.Cluster))
	}
	if ri.Upstream.IsValid() {
		attrs = append(attrs, attribute.String(attrUpstreamAddress, ri.Upstream.String()))
	}
	if ri.Peer != "" {
		attrs = append(attrs, attribute.String(attrPeerPrincipal, ri.Peer))
	}
	if userAgent != "" {
		attrs = append(attrs, attribute.String(attrUserAgent, userAgent))
	}
	failed := ri.Code == 0 || ri.Code >= 500 || hasFlag(ri.Flags, "UR") || hasFlag(ri.Flags, "UT")
	if failed {
		attrs = append(attrs, attribute.String(attrError, "true"))
		desc := flags
		if ri.Err != nil {
			desc += ": " + ri.Err.Error()
		}
		span.SetStatus(codes.Error, desc)
	}
	span.SetAttributes(attrs...)
	span.End(trace.WithTimestamp(end))
}

func hasFlag(flags, f string) bool {
	for flags != "" {
		var one string
		one, flags, _ = strings.Cut(flags, ",")
		if one == f {
			return true
		}
	}
	return false
}

// spanName is Istio's route decorator for the request, "HOST:PORT/*":
// outbound, the service and port of the route's cluster
// ("outbound|PORT|SUBSET|HOST"); inbound, the authority's host and the
// app's port; else the authority followed by "/*".
func spanName(ri *RequestInfo) string {
	if ri.Direction == DirectionOutbound {
		if parts := strings.Split(ri.Cluster, "|"); len(parts) == 4 && parts[0] == "outbound" && parts[1] != "" && parts[3] != "" {
			return parts[3] + ":" + parts[1] + "/*"
		}
		return ri.Authority + "/*"
	}
	if !ri.Upstream.IsValid() {
		return ri.Authority + "/*"
	}
	host := ri.Authority
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return net.JoinHostPort(host, strconv.Itoa(int(ri.Upstream.Port()))) + "/*"
}
