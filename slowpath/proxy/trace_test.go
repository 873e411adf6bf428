package proxy

import (
	"errors"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestSpanName(t *testing.T) {
	tests := []struct {
		name string
		ri   RequestInfo
		want string
	}{
		{"outbound cluster", RequestInfo{Direction: DirectionOutbound, Authority: "reviews:9080", Cluster: "outbound|9080|v1|reviews.production.svc.cluster.local"},
			"reviews.production.svc.cluster.local:9080/*"},
		{"outbound no subset", RequestInfo{Direction: DirectionOutbound, Authority: "reviews", Cluster: "outbound|9080||reviews.production.svc.cluster.local"},
			"reviews.production.svc.cluster.local:9080/*"},
		{"outbound passthrough", RequestInfo{Direction: DirectionOutbound, Authority: "example.com", Cluster: "PassthroughCluster"}, "example.com/*"},
		{"outbound no cluster", RequestInfo{Direction: DirectionOutbound, Authority: "reviews:9080"}, "reviews:9080/*"},
		{"inbound with port", RequestInfo{Direction: DirectionInbound, Authority: "reviews:80", Upstream: netip.MustParseAddrPort("10.0.0.5:9080")}, "reviews:9080/*"},
		{"inbound without port", RequestInfo{Direction: DirectionInbound, Authority: "reviews.production", Upstream: netip.MustParseAddrPort("10.0.0.5:9080")}, "reviews.production:9080/*"},
		{"inbound ipv6", RequestInfo{Direction: DirectionInbound, Authority: "[fd00::5]:9080", Upstream: netip.MustParseAddrPort("[fd00::5]:9080")}, "[fd00::5]:9080/*"},
		{"inbound refused early", RequestInfo{Direction: DirectionInbound, Authority: "reviews"}, "reviews/*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := spanName(&tt.ri); got != tt.want {
				t.Errorf("spanName = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestTraceRequest runs traceRequest and its end as the request path
// does, with the SDK recording: the span's kind, parent, name, tags and
// status, and the headers the request goes on with.
func TestTraceRequest(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(rec))
	var asked []string
	ps := &podState{p: &Proxy{cfg: Config{Tracer: func(ns, pod string) trace.Tracer {
		asked = append(asked, ns+"/"+pod)
		return tp.Tracer("test")
	}}}, pod: Pod{Namespace: "production", Name: "frontend-1"}}

	tests := []struct {
		name      string
		direction string
		hdr       []string
		ri        RequestInfo // what the request came to
		wantKind  trace.SpanKind
		wantAttrs map[string]string
		wantError bool
	}{
		{"outbound 200 continuing a W3C trace", DirectionOutbound, []string{"traceparent", "00-" + tTID + "-" + tSID + "-01", "User-Agent", "curl/8"},
			RequestInfo{Code: 200, Cluster: "outbound|9080|v1|reviews.production.svc.cluster.local", RequestID: "r-1",
				Upstream: netip.MustParseAddrPort("10.0.0.5:9080"), BytesSent: 42, Peer: "spiffe://cluster.local/ns/production/sa/reviews"},
			trace.SpanKindClient, map[string]string{"component": "proxy", "http.method": "GET", "http.url": "http://reviews:9080/api/reviews/1",
				"http.status_code": "200", "response_flags": "-", "upstream_cluster": "outbound|9080|v1|reviews.production.svc.cluster.local",
				"upstream_address": "10.0.0.5:9080", "guid:x-request-id": "r-1", "user_agent": "curl/8", "response_size": "42",
				"peer.principal": "spiffe://cluster.local/ns/production/sa/reviews"}, false},
		{"inbound 503 UF continuing B3", DirectionInbound, []string{"x-b3-traceid", tTID, "x-b3-spanid", tSID, "x-b3-sampled", "1"},
			RequestInfo{Code: 503, Flags: "UF", Err: errors.New("connection refused"), Upstream: netip.MustParseAddrPort("10.0.0.5:9080")},
			trace.SpanKindServer, map[string]string{"http.status_code": "503", "response_flags": "UF", "error": "true"}, true},
		{"reset, no status", DirectionInbound, []string{"b3", tTID + "-" + tSID + "-1"}, RequestInfo{Code: 0, Flags: "UR"},
			trace.SpanKindServer, map[string]string{"http.status_code": "0", "response_flags": "UR", "error": "true"}, true},
		{"200 cut short", DirectionOutbound, []string{"traceparent", "00-" + tTID + "-" + tSID + "-01"}, RequestInfo{Code: 200, Flags: "UR"},
			trace.SpanKindClient, map[string]string{"error": "true"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://reviews:9080/api/reviews/1", nil)
			for i := 0; i+1 < len(tt.hdr); i += 2 {
				r.Header.Set(tt.hdr[i], tt.hdr[i+1])
			}
			ri := &RequestInfo{Direction: tt.direction, Start: time.Now(), Method: r.Method, Authority: r.Host, Path: r.URL.Path, Protocol: r.Proto}
			before := len(rec.Ended())
			end := ps.traceRequest(r, ri)
			// The request goes on as the span's child.
			tc := extractTrace(r.Header)
			if tc.parent.TraceID().String() != tTID || tc.parent.SpanID().String() == tSID || !tc.parent.IsSampled() {
				t.Fatalf("request goes on with %v, want trace %s, a new span, sampled", tc.parent, tTID)
			}
			done := *ri
			done.Code, done.Flags, done.Err, done.Cluster, done.Upstream = tt.ri.Code, tt.ri.Flags, tt.ri.Err, tt.ri.Cluster, tt.ri.Upstream
			done.RequestID, done.BytesSent, done.Peer = tt.ri.RequestID, tt.ri.BytesSent, tt.ri.Peer
			*ri = done
			end()
			ended := rec.Ended()
			if len(ended) != before+1 {
				t.Fatalf("%d spans ended, want 1", len(ended)-before)
			}
			s := ended[len(ended)-1]
			if s.SpanKind() != tt.wantKind || s.Parent().SpanID().String() != tSID || s.SpanContext().SpanID() != tc.parent.SpanID() {
				t.Errorf("span kind %v parent %v id %v; want %v, parent %s, the id the request carries %v", s.SpanKind(), s.Parent().SpanID(),
					s.SpanContext().SpanID(), tt.wantKind, tSID, tc.parent.SpanID())
			}
			if s.Name() != spanName(ri) {
				t.Errorf("span name %q, want %q", s.Name(), spanName(ri))
			}
			got := map[string]string{}
			for _, kv := range s.Attributes() {
				if _, ok := tt.wantAttrs[string(kv.Key)]; ok {
					got[string(kv.Key)] = kv.Value.Emit()
				}
			}
			if diff := cmp.Diff(tt.wantAttrs, got); diff != "" {
				t.Errorf("attributes (-want +got):\n%s", diff)
			}
			if (s.Status().Code == codes.Error) != tt.wantError {
				t.Errorf("status %v, want error %v", s.Status(), tt.wantError)
			}
		})
	}
	if len(asked) == 0 || asked[0] != "production/frontend-1" {
		t.Errorf("the tracer was asked for %v, want the pod production/frontend-1", asked)
	}
}

// TestTraceRequestUnset: without a Tracer, headers are left as they came.
func TestTraceRequestUnset(t *testing.T) {
	ps := &podState{p: &Proxy{}, pod: Pod{Namespace: "ns", Name: "p"}}
	r := httptest.NewRequest("GET", "http://reviews:9080/", nil)
	r.Header.Set("traceparent", "garbage")
	ps.traceRequest(r, &RequestInfo{Direction: DirectionOutbound})()
	if r.Header.Get("traceparent") != "garbage" || len(r.Header) != 1 {
		t.Errorf("headers changed without tracing: %v", r.Header)
	}
}

// TestTraceRequestOffAllocs: without a Tracer the request path pays
// nothing for tracing.
func TestTraceRequestOffAllocs(t *testing.T) {
	ps := &podState{p: &Proxy{}, pod: Pod{Namespace: "ns", Name: "p"}}
	r := httptest.NewRequest("GET", "http://reviews:9080/", nil)
	r.Header.Set("traceparent", "00-"+tTID+"-"+tSID+"-01")
	ri := &RequestInfo{Direction: DirectionOutbound}
	if n := testing.AllocsPerRun(100, func() { ps.traceRequest(r, ri)() }); n != 0 {
		t.Errorf("traceRequest without a tracer: %v allocations, want 0", n)
	}
}

// BenchmarkTraceRequest is a sampled request's tracing: extracting the
// caller's context, starting the span, writing the headers, ending it
// with Envoy's tags (the SDK recording nothing further).
func BenchmarkTraceRequest(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	tr := tp.Tracer("bench")
	ps := &podState{p: &Proxy{cfg: Config{Tracer: func(string, string) trace.Tracer { return tr }}}, pod: Pod{Namespace: "ns", Name: "p"}}
	r := httptest.NewRequest("GET", "http://reviews:9080/api/reviews/1", nil)
	b.ReportAllocs()
	for b.Loop() {
		r.Header.Set("traceparent", "00-"+tTID+"-"+tSID+"-01")
		ri := &RequestInfo{Direction: DirectionOutbound, Start: time.Now(), Method: "GET", Authority: "reviews:9080", Path: "/api/reviews/1",
			Code: 200, Cluster: "outbound|9080|v1|reviews.production.svc.cluster.local", RequestID: "r"}
		ps.traceRequest(r, ri)()
	}
}
