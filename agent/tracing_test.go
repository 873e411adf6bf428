package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"go.uber.org/goleak"

	"github.com/fibmesh/fibmesh/internal/otlpsink"
	"github.com/fibmesh/fibmesh/slowpath/proxy"
)

func TestTracingConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     TracingConfig
		wantErr string
	}{
		{"unset", TracingConfig{}, ""},
		{"ok", TracingConfig{Collector: "otel-collector.observability:4317", Sampling: 1}, ""},
		{"ok ipv6", TracingConfig{Collector: "[::1]:4317", Sampling: 100}, ""},
		{"no port", TracingConfig{Collector: "otel-collector"}, "--tracing-collector \"otel-collector\": want HOST:PORT"},
		{"bad port", TracingConfig{Collector: "collector:http"}, "is not a port number"},
		{"port 0", TracingConfig{Collector: "collector:0"}, "is not a port number"},
		{"no host", TracingConfig{Collector: ":4317"}, "want HOST:PORT"},
		{"sampling above 100", TracingConfig{Collector: "c:4317", Sampling: 101}, "--tracing-sampling 101: want a percentage"},
		{"sampling negative", TracingConfig{Collector: "c:4317", Sampling: -1}, "--tracing-sampling -1"},
		{"ca without collector", TracingConfig{CollectorCA: "/ca.pem"}, "--tracing-collector-ca is set without --tracing-collector"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate: %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestTracingUnset: no collector, no tracing (no exporter, no goroutine).
func TestTracingUnset(t *testing.T) {
	before := goleak.IgnoreCurrent()
	tr, err := newTracing(TracingConfig{Sampling: 50}, "node1", nil, nil, nil)
	if err != nil || tr != nil {
		t.Fatalf("newTracing without a collector = %v, %v; want nil, nil", tr, err)
	}
	if tr.hook() != nil {
		t.Error("the proxy gets a tracer without a collector")
	}
	goleak.VerifyNone(t, before)
}

func startSink(t *testing.T) (*otlpsink.Sink, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := otlpsink.Start(l)
	t.Cleanup(s.Close)
	return s, l.Addr().String()
}

func TestTracingExport(t *testing.T) {
	sink, addr := startSink(t)
	m := newTraceMetrics()
	tr, err := newTracing(TracingConfig{Collector: addr, Sampling: 0, BatchTimeout: 20 * time.Millisecond}, "node1",
		func(_, pod string) string { return strings.TrimSuffix(pod, "-7d4f9-x2x9z") }, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.close(context.Background()) })
	tracer := tr.Tracer("production", "reviews-v1-7d4f9-x2x9z")
	if tracer != tr.Tracer("production", "reviews-v1-7d4f9-x2x9z") {
		t.Error("a pod's tracer is not cached")
	}

	parentTID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	parentSID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: parentTID, SpanID: parentSID, TraceFlags: trace.FlagsSampled, Remote: true})

	// At 0%, a new trace is not sampled, a caller's unsampled one
	// neither, a caller's sampled one is.
	_, root := tracer.Start(context.Background(), "new trace", trace.WithSpanKind(trace.SpanKindClient))
	_, dropped := tracer.Start(proxy.WithSamplingDecision(trace.ContextWithRemoteSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: parentTID, SpanID: parentSID, Remote: true})), false), "caller said no")
	_, child := tracer.Start(proxy.WithSamplingDecision(trace.ContextWithRemoteSpanContext(context.Background(), parent), true),
		"reviews.production.svc.cluster.local:9080/*", trace.WithSpanKind(trace.SpanKindServer))
	for _, s := range []trace.Span{root, dropped} {
		if s.IsRecording() || s.SpanContext().IsSampled() {
			t.Errorf("span %v is sampled at 0%%", s.SpanContext())
		}
		if !s.SpanContext().IsValid() {
			t.Errorf("an unsampled span has no ids to propagate: %v", s.SpanContext())
		}
	}
	root.End()
	dropped.End()
	child.End()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	spans, err := sink.Wait(ctx, func(s []otlpsink.Span) bool { return len(s) > 0 })
	if err != nil {
		t.Fatalf("no span reached the collector: %v", err)
	}
	// The unsampled spans ended before the sampled one, in the same
	// queue: had they been exported, they would be here.
	if len(spans) != 1 {
		t.Fatalf("got %d spans, want the sampled one only: %+v", len(spans), spans)
	}
	// The export is counted once it returned.
	waitCounters(t, m, 1, 0, 0)
	got := spans[0]
	want := map[string]string{"service.name": "reviews-v1.production", "k8s.namespace.name": "production",
		"k8s.pod.name": "reviews-v1-7d4f9-x2x9z", "k8s.node.name": "node1", "istio.canonical_service": "reviews-v1"}
	for k, v := range want {
		if got.ResourceAttributes[k] != v {
			t.Errorf("resource %s = %q, want %q (all: %v)", k, got.ResourceAttributes[k], v, got.ResourceAttributes)
		}
	}
	if got.TraceID != parentTID.String() || got.ParentSpanID != parentSID.String() || got.Kind != tracepb.Span_SPAN_KIND_SERVER ||
		got.Attributes["node_id"] != "node1" || got.Name != "reviews.production.svc.cluster.local:9080/*" {
		t.Errorf("span %+v: want trace %s, parent %s, kind server, node_id node1", got, parentTID, parentSID)
	}
}

// TestTracingNeverBlocks: with a collector that accepts connections and
// never answers, ending spans does not wait (a full queue drops them).
func TestTracingNeverBlocks(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never read
		}
	}()
	m := newTraceMetrics()
	tr, err := newTracing(TracingConfig{Collector: l.Addr().String(), Sampling: 100, Queue: 16, BatchTimeout: time.Millisecond}, "node1", nil, m,
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		tr.close(ctx) // the stuck export is abandoned
	}()
	tracer := tr.Tracer("ns", "pod")
	start := time.Now()
	const n = 20000
	for range n {
		_, s := tracer.Start(context.Background(), "x")
		s.End()
	}
	// 20,000 spans take milliseconds when nothing waits; one 10 s export
	// timeout would show.
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("%d spans took %v with a collector that does not answer", n, d)
	}
	// At most the queue (16) and one batch being exported (16) were
	// taken; every other span is counted as dropped.
	if d := testutil.ToFloat64(m.dropped); d < n-32 || d > n {
		t.Errorf("fibmesh_agent_trace_spans_dropped_total %v, want %d to %d", d, n-32, n)
	}
}

// TestTracingTLS: with --tracing-collector-ca the export is TLS, the
// collector's certificate checked against that CA.
func TestTracingTLS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sink := otlpsink.Start(tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos: []string{"h2"}}))
	t.Cleanup(sink.Close)
	_, port, _ := net.SplitHostPort(l.Addr().String())

	tests := []struct {
		name   string
		ca     string
		wantOK bool
	}{
		{"trusted", caFile, true},
		{"no such file", filepath.Join(t.TempDir(), "missing.pem"), false},
		{"not PEM", "tracing_test.go", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := newTracing(TracingConfig{Collector: "localhost:" + port, CollectorCA: tt.ca, Sampling: 100, BatchTimeout: 10 * time.Millisecond}, "node1", nil, nil, nil)
			if !tt.wantOK {
				if err == nil {
					tr.close(context.Background())
					t.Fatal("newTracing accepted the CA file, want an error")
				}
				if !strings.Contains(err.Error(), "--tracing-collector-ca") {
					t.Errorf("error %q does not name the flag", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer tr.close(context.Background())
			_, s := tr.Tracer("ns", "pod").Start(context.Background(), "over TLS")
			s.End()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if _, err := sink.Wait(ctx, func(spans []otlpsink.Span) bool {
				return slices.ContainsFunc(spans, func(x otlpsink.Span) bool { return x.Name == "over TLS" })
			}); err != nil {
				t.Fatalf("the span did not arrive over TLS: %v", err)
			}
		})
	}
}

// waitCounters waits (up to 10 s) for the span counters to read ok
// exported, failed and dropped.
func waitCounters(t *testing.T, m *traceMetrics, ok, failed, dropped float64) {
	t.Helper()
	var got [3]float64
	for deadline := time.Now().Add(10 * time.Second); ; {
		got = [3]float64{testutil.ToFloat64(m.exported.WithLabelValues("ok")), testutil.ToFloat64(m.exported.WithLabelValues("failed")),
			testutil.ToFloat64(m.dropped)}
		if got == [3]float64{ok, failed, dropped} || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got != [3]float64{ok, failed, dropped} {
		t.Fatalf("spans exported ok %v, failed %v, dropped %v; want %v, %v, %v", got[0], got[1], got[2], ok, failed, dropped)
	}
}

// gateExporter is a span exporter whose exports wait for a value on
// release (nil: success) and report each call on called.
type gateExporter struct {
	called  chan int
	release chan error
}

func (e *gateExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.called <- len(spans)
	return <-e.release
}

func (e *gateExporter) Shutdown(context.Context) error { return nil }

// TestSpanBatcherCounts: with the export stuck, the queue fills and
// every span beyond it is counted dropped; exported spans are counted ok
// or failed by the export's result.
func TestSpanBatcherCounts(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	m := newTraceMetrics()
	exp := &gateExporter{called: make(chan int, 1), release: make(chan error)}
	b := newSpanBatcher(exp, 4, 2, time.Hour, m)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(b))
	tracer := tp.Tracer("test")
	end := func(n int) {
		for range n {
			_, s := tracer.Start(context.Background(), "x")
			s.End()
		}
	}
	_, unsampled := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()), sdktrace.WithSpanProcessor(b)).
		Tracer("test").Start(context.Background(), "not sampled")
	unsampled.End() // neither queued nor dropped

	end(2) // one full batch: its export is stuck
	if n := <-exp.called; n != 2 {
		t.Fatalf("first export of %d spans, want 2", n)
	}
	end(10) // 4 fit in the queue, 6 are dropped
	waitCounters(t, m, 0, 0, 6)
	exp.release <- nil // the first batch: ok
	for _, res := range []error{errors.New("collector unavailable"), nil} {
		if n := <-exp.called; n != 2 {
			t.Fatalf("export of %d spans, want 2", n)
		}
		exp.release <- res
	}
	waitCounters(t, m, 4, 2, 6)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	end(1) // after the shutdown: dropped
	waitCounters(t, m, 4, 2, 7)
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
