package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/fibmesh/fibmesh/internal/otlpsink"
	"github.com/fibmesh/fibmesh/lab"
)

// tracePrefix is the network namespace prefix of TestTraces' lab.
const tracePrefix = "fm-tb-"

// traceCollectorPort is where the in-test OTLP receiver listens, on
// 127.0.0.1 in each node's network namespace (where its agent runs).
const traceCollectorPort = "14317"

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestTraces runs examples/ with every agent exporting spans over OTLP
// gRPC to an in-test receiver (internal/otlpsink, the OTLP protobuf
// TraceService) at --tracing-sampling 0: requests frontend → reviews
// with a sampled W3C traceparent (and one with a single b3 header) give
// a CLIENT span on frontend's agent, the traceparent's span its parent,
// and a SERVER span on the reviews pod's agent, its child across the
// mTLS tunnel, both in the propagated trace; the reviews app sees the
// trace context with the SERVER span as its parent. Requests that no
// caller sampled (no trace headers, an unsampled traceparent,
// X-B3-Sampled: 0) export nothing.
func TestTraces(t *testing.T) {
	l := upMesh(t, tracePrefix, manifestsIn(t, "../examples"),
		"--agent-arg", "--tracing-collector=127.0.0.1:"+traceCollectorPort, "--agent-arg", "--tracing-sampling=0")
	diagnoseOnFailure(t, l, "node1", "node2")
	var lis []net.Listener
	for _, node := range []string{"node1", "node2"} {
		err := lab.InNetns(l.nodeNetns(node), func() error {
			ln, err := net.Listen("tcp", "127.0.0.1:"+traceCollectorPort)
			lis = append(lis, ln)
			return err
		})
		if err != nil {
			t.Fatalf("the OTLP receiver in %s's network namespace: %v", node, err)
		}
	}
	sink := otlpsink.Start(lis...)
	t.Cleanup(sink.Close)

	frontend := newPodClient(t, l.podNamed(t, "production", "frontend-"))
	reviews := l.serviceVIP(t, "production", "reviews", 9080)
	const reviewsHost = "reviews:9080"
	waitL7(t, frontend, reviews, call{path: "/api/reviews/0", host: reviewsHost}, 200)

	// Not sampled by anyone: nothing may be exported for these.
	for i, hdr := range [][]string{
		nil,
		{"traceparent", "00-" + randHex(t, 16) + "-" + randHex(t, 8) + "-00"},
		{"X-B3-TraceId", randHex(t, 16), "X-B3-SpanId", randHex(t, 8), "X-B3-Sampled", "0"},
		{"b3", "0"},
	} {
		for j := range 5 {
			a := frontend.must(t, reviews, call{path: fmt.Sprintf("/api/reviews/%d", j), host: reviewsHost,
				hdr: append([]string{"X-Request-Id", fmt.Sprintf("tb-unsampled-%d-%d", i, j)}, hdr...)})
			if a.status != 200 {
				t.Fatalf("unsampled request %v: %v", hdr, a)
			}
		}
	}

	// Sampled by the caller, until both versions of reviews (on their
	// nodes) answered one: each agent exports in order, so once these
	// arrived, any span of the unsampled requests would have too.
	type sampled struct {
		traceID, parent string
		b3              bool
		a               answer
	}
	var sent []sampled
	seen := map[string]bool{}
	for i := 0; len(seen) < 2; i++ {
		if i == 200 {
			t.Fatalf("200 sampled requests, answered by %v only", seen)
		}
		s := sampled{traceID: randHex(t, 16), parent: randHex(t, 8), b3: i%2 == 1}
		hdr := []string{"traceparent", "00-" + s.traceID + "-" + s.parent + "-01"}
		if s.b3 {
			hdr = []string{"b3", s.traceID + "-" + s.parent + "-1"}
		}
		if i%3 == 2 {
			hdr = append(hdr, "X-Canary-User", "true") // v2
		}
		s.a = frontend.must(t, reviews, call{path: "/api/reviews/1", host: reviewsHost,
			hdr: append(hdr, "X-Request-Id", fmt.Sprintf("tb-sampled-%d", i))})
		if s.a.status != 200 || !s.a.isReply {
			t.Fatalf("sampled request %d: %v", i, s.a)
		}
		seen[s.a.reply.Version] = true
		sent = append(sent, s)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	byTrace := func(spans []otlpsink.Span) map[string][]otlpsink.Span {
		m := map[string][]otlpsink.Span{}
		for _, s := range spans {
			m[s.TraceID] = append(m[s.TraceID], s)
		}
		return m
	}
	spans, err := sink.Wait(ctx, func(spans []otlpsink.Span) bool {
		m := byTrace(spans)
		for _, s := range sent {
			if len(m[s.traceID]) < 2 {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("the sampled requests' spans did not all arrive (%d spans: %+v): %v", len(spans), spans, err)
	}
	m := byTrace(spans)
	if len(m) != len(sent) || len(spans) != 2*len(sent) {
		t.Errorf("%d spans in %d traces, want 2 in each of the %d sampled requests' traces only (sampling 0: no other)", len(spans), len(m), len(sent))
	}
	t.Logf("%d sampled requests (%v), %d spans", len(sent), seen, len(spans))

	frontendNode := frontend.pod.Node
	for i, s := range sent {
		var client, server *otlpsink.Span
		for k := range m[s.traceID] {
			switch sp := &m[s.traceID][k]; sp.Kind {
			case tracepb.Span_SPAN_KIND_CLIENT:
				client = sp
			case tracepb.Span_SPAN_KIND_SERVER:
				server = sp
			}
		}
		if client == nil || server == nil {
			t.Errorf("request %d: trace %s has spans %+v, want a client and a server span", i, s.traceID, m[s.traceID])
			continue
		}
		if i == 0 {
			t.Logf("client span: %+v\nserver span: %+v", *client, *server)
		}
		// Parent and child, across the tunnel.
		if client.ParentSpanID != s.parent {
			t.Errorf("request %d: the client span's parent is %s, want the caller's %s", i, client.ParentSpanID, s.parent)
		}
		if server.ParentSpanID != client.SpanID {
			t.Errorf("request %d: the server span's parent is %s, want the client span %s", i, server.ParentSpanID, client.SpanID)
		}
		// What each side says.
		reviewsPod := l.pod(t, "production", s.a.reply.Pod)
		wantClient := map[string]string{"component": "proxy", "http.method": "GET", "http.status_code": "200",
			"guid:x-request-id": fmt.Sprintf("tb-sampled-%d", i), "node_id": frontendNode}
		wantServer := map[string]string{"component": "proxy", "http.method": "GET", "http.status_code": "200",
			"guid:x-request-id": fmt.Sprintf("tb-sampled-%d", i), "node_id": reviewsPod.Node,
			"peer.principal": spiffe("production", "frontend")}
		for _, c := range []struct {
			span      *otlpsink.Span
			want      map[string]string
			wantRes   map[string]string
			wantName  string
			whichSide string
		}{
			{client, wantClient, map[string]string{"service.name": "frontend.production", "k8s.pod.name": frontend.pod.Name, "k8s.node.name": frontendNode},
				"reviews.production.svc.cluster.local:9080/*", "client"},
			{server, wantServer, map[string]string{"service.name": "reviews-" + s.a.reply.Version + ".production", "k8s.pod.name": reviewsPod.Name, "k8s.node.name": reviewsPod.Node},
				"", "server"},
		} {
			for k, v := range c.want {
				if c.span.Attributes[k] != v {
					t.Errorf("request %d: %s span attribute %s = %q, want %q (all: %v)", i, c.whichSide, k, c.span.Attributes[k], v, c.span.Attributes)
				}
			}
			for k, v := range c.wantRes {
				if c.span.ResourceAttributes[k] != v {
					t.Errorf("request %d: %s span resource %s = %q, want %q (all: %v)", i, c.whichSide, k, c.span.ResourceAttributes[k], v, c.span.ResourceAttributes)
				}
			}
			if c.wantName != "" && c.span.Name != c.wantName {
				t.Errorf("request %d: %s span name %q, want %q", i, c.whichSide, c.span.Name, c.wantName)
			}
			if c.span.StatusCode == tracepb.Status_STATUS_CODE_ERROR || !c.span.End.After(c.span.Start) {
				t.Errorf("request %d: %s span status %v, %v to %v", i, c.whichSide, c.span.StatusCode, c.span.Start, c.span.End)
			}
		}
		// "DI": the example's 1% fault delay on the split route.
		if f := client.Attributes["response_flags"]; f != "-" && f != "DI" {
			t.Errorf("request %d: client span response_flags %q, want - (or DI, the example's delay)", i, f)
		}
		if f := server.Attributes["response_flags"]; f != "-" {
			t.Errorf("request %d: server span response_flags %q, want -", i, f)
		}
		if !strings.HasPrefix(client.Attributes["upstream_cluster"], "outbound|9080|") {
			t.Errorf("request %d: client span upstream_cluster %q, want outbound|9080|...", i, client.Attributes["upstream_cluster"])
		}
		// The app is the server span's child: traceparent and B3, and
		// the single b3 form when the caller used it.
		h := s.a.reply.Headers
		if want := "00-" + s.traceID + "-" + server.SpanID + "-01"; h.Get("Traceparent") != want {
			t.Errorf("request %d: the app saw traceparent %q, want %q", i, h.Get("Traceparent"), want)
		}
		if h.Get("X-B3-Traceid") != s.traceID || h.Get("X-B3-Spanid") != server.SpanID || h.Get("X-B3-Parentspanid") != client.SpanID || h.Get("X-B3-Sampled") != "1" {
			t.Errorf("request %d: the app saw B3 %q/%q parent %q sampled %q, want %s/%s parent %s sampled 1", i,
				h.Get("X-B3-Traceid"), h.Get("X-B3-Spanid"), h.Get("X-B3-Parentspanid"), h.Get("X-B3-Sampled"), s.traceID, server.SpanID, client.SpanID)
		}
		if want := s.traceID + "-" + server.SpanID + "-1-" + client.SpanID; s.b3 && h.Get("B3") != want {
			t.Errorf("request %d: the app saw b3 %q, want %q", i, h.Get("B3"), want)
		}
	}
}
