package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/credentials"

	"github.com/fibmesh/fibmesh/slowpath/proxy"
)

// Tracing defaults.
const (
	// DefaultTracingSampling is the percentage of new traces sampled:
	// Istio's default (meshConfig.defaultConfig.tracing.sampling, 1%).
	DefaultTracingSampling = 1.0
	// DefaultTracingQueue bounds the spans waiting for export; beyond it
	// new spans are dropped (never waited for).
	DefaultTracingQueue = 2048
	// DefaultTracingBatchTimeout is the longest a span waits before its
	// batch is sent.
	DefaultTracingBatchTimeout = 2 * time.Second
	// tracingFlushTimeout bounds the agent's wait for queued spans to
	// leave when it stops.
	tracingFlushTimeout = 5 * time.Second
	// tracingLogEvery spaces the log lines of failed exports.
	tracingLogEvery = 30 * time.Second
	// tracingMaxBatch is the most spans in one OTLP export.
	tracingMaxBatch = 512
	// tracingMaxProviders bounds the per-pod tracer cache: past it the
	// cache starts over (pods come and go; a tracer is cheap).
	tracingMaxProviders = 4096
)

// TracingConfig configures the agent's traces: a span per HTTP request
// on an L7 port, client and server side (slowpath/proxy trace.go),
// exported over OTLP gRPC.
type TracingConfig struct {
	// Collector is the OTLP gRPC collector (HOST:PORT, e.g. an
	// OpenTelemetry Collector's :4317); empty: no spans, no exporter,
	// no goroutine, trace headers passed through as they came.
	Collector string
	// CollectorCA, if set, is a PEM file of the roots the collector's
	// serving certificate must chain to: the export uses TLS. Empty:
	// plaintext (as Istio's OpenTelemetry provider speaks to a
	// collector in the cluster).
	CollectorCA string
	// Sampling is the percentage (0 to 100) of new traces sampled. A
	// caller's decision is honoured whatever it is (a sampled
	// traceparent, X-B3-Sampled), as Envoy does: 0 starts none but
	// still reports traces that callers sampled. cmd/fibmesh-agent's
	// flag defaults to DefaultTracingSampling; here zero is zero.
	Sampling float64
	// Queue and BatchTimeout: see DefaultTracingQueue and
	// DefaultTracingBatchTimeout (zero: those).
	Queue        int
	BatchTimeout time.Duration
}

// Validate checks c; errors name the flag and the fix.
func (c TracingConfig) Validate() error {
	if c.Collector == "" {
		if c.CollectorCA != "" {
			return errors.New("agent: --tracing-collector-ca is set without --tracing-collector: set the collector's HOST:PORT")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(c.Collector)
	if err != nil || host == "" {
		return fmt.Errorf("agent: --tracing-collector %q: want HOST:PORT of an OTLP gRPC collector (e.g. otel-collector.observability:4317)", c.Collector)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("agent: --tracing-collector %q: port %q is not a port number (1-65535)", c.Collector, port)
	}
	if math.IsNaN(c.Sampling) || c.Sampling < 0 || c.Sampling > 100 {
		return fmt.Errorf("agent: --tracing-sampling %v: want a percentage from 0 to 100 (Istio's default is 1)", c.Sampling)
	}
	if c.Queue < 0 || c.BatchTimeout < 0 {
		return errors.New("agent: tracing queue and batch timeout must not be negative")
	}
	return nil
}

// tracing exports the proxy's spans: one OTLP exporter and one batch
// processor (a bounded queue and one goroutine) shared by a tracer
// provider per pod, whose resource names the workload.
type tracing struct {
	node     string
	workload func(namespace, pod string) string
	sampler  sdktrace.Sampler
	bsp      *spanBatcher

	// tracer holds each pod's tracer by namespace/pod (read on every
	// request: a sync.Map reads without a lock); n counts its entries.
	tracer sync.Map
	n      atomic.Int64
}

// newTracing starts the exporter of cfg (nil, nil when cfg has no
// collector). workload names a pod's workload (its Deployment's name);
// nil takes the pod's name. m counts the spans (nil: a set of its own). Failed exports are logged to log, at most
// one line per tracingLogEvery (OpenTelemetry's error handler is
// process-wide: the last agent started gets them).
func newTracing(cfg TracingConfig, node string, workload func(namespace, pod string) string, m *traceMetrics, log *slog.Logger) (*tracing, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Collector == "" {
		return nil, nil
	}
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.Collector), otlptracegrpc.WithTimeout(10 * time.Second)}
	if cfg.CollectorCA == "" {
		opts = append(opts, otlptracegrpc.WithInsecure())
	} else {
		pem, err := os.ReadFile(cfg.CollectorCA)
		if err != nil {
			return nil, fmt.Errorf("agent: --tracing-collector-ca: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("agent: --tracing-collector-ca %s: no PEM certificate in it", cfg.CollectorCA)
		}
		opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})))
	}
	// New does not connect: the gRPC client connects (and reconnects)
	// on its own, so an absent collector costs only dropped spans.
	exp, err := otlptracegrpc.New(context.Background(), opts...)
	if err != nil {
		return nil, fmt.Errorf("agent: --tracing-collector %s: %w", cfg.Collector, err)
	}
	queue := cfg.Queue
	if queue == 0 {
		queue = DefaultTracingQueue
	}
	batch := cfg.BatchTimeout
	if batch == 0 {
		batch = DefaultTracingBatchTimeout
	}
	if workload == nil {
		workload = func(_, pod string) string { return pod }
	}
	if m == nil {
		m = newTraceMetrics()
	}
	if log != nil {
		var last atomic.Int64
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			now := time.Now().UnixNano()
			if l := last.Load(); now-l >= int64(tracingLogEvery) && last.CompareAndSwap(l, now) {
				log.Warn("tracing: exporting spans failed (spans are dropped while it fails)", "collector", cfg.Collector, "err", err)
			}
		}))
	}
	return &tracing{
		node: node, workload: workload,
		sampler: newSampler(cfg.Sampling),
		// Never blocking on a full queue: a span that does not fit is
		// dropped (and counted), the request goes on.
		bsp: newSpanBatcher(exp, queue, min(tracingMaxBatch, queue), batch, m),
	}, nil
}

// Tracer is the proxy's Config.Tracer: the tracer of a pod, its
// resource the pod's workload (service.name "<workload>.<namespace>",
// Istio's default service name), namespace, pod and node.
func (t *tracing) Tracer(namespace, pod string) trace.Tracer {
	key := namespace + "/" + pod
	if tr, ok := t.tracer.Load(key); ok {
		return tr.(trace.Tracer)
	}
	if t.n.Load() >= tracingMaxProviders {
		t.tracer.Clear()
		t.n.Store(0)
	}
	wl := t.workload(namespace, pod)
	res := resource.NewSchemaless(
		attribute.String("service.name", wl+"."+namespace),
		attribute.String("service.namespace", namespace),
		attribute.String("k8s.namespace.name", namespace),
		attribute.String("k8s.pod.name", pod),
		attribute.String("k8s.node.name", t.node),
		attribute.String("istio.canonical_service", wl),
		attribute.String("istio.namespace", namespace),
	)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(t.sampler), sdktrace.WithSpanProcessor(t.bsp), sdktrace.WithResource(res))
	tr, loaded := t.tracer.LoadOrStore(key, &nodeTracer{Tracer: tp.Tracer("github.com/fibmesh/fibmesh/slowpath/proxy"),
		start: trace.WithAttributes(attribute.String("node_id", t.node))})
	if !loaded {
		t.n.Add(1)
	}
	return tr.(trace.Tracer)
}

// nodeTracer tags each span with Envoy's node_id (the agent's node).
type nodeTracer struct {
	trace.Tracer
	start trace.SpanStartOption
}

func (t *nodeTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	return t.Tracer.Start(ctx, name, append(opts, t.start)...)
}

// hook is the proxy's Config.Tracer: nil without tracing.
func (t *tracing) hook() func(namespace, pod string) trace.Tracer {
	if t == nil {
		return nil
	}
	return t.Tracer
}

// flush closes t, giving the queued spans up to
// tracingFlushTimeout to leave.
func (t *tracing) flush() error {
	ctx, cancel := context.WithTimeout(context.Background(), tracingFlushTimeout)
	defer cancel()
	return t.close(ctx)
}

// close sends what is queued (within ctx) and stops the exporter.
func (t *tracing) close(ctx context.Context) error {
	if t == nil {
		return nil
	}
	if err := t.bsp.Shutdown(ctx); err != nil {
		return fmt.Errorf("agent: tracing: flushing spans: %w", err)
	}
	return nil
}

// sampler samples as the caller decided (proxy.SamplingDecision: a
// parent's sampled flag, B3's X-B3-Sampled), else a percentage of new
// traces by trace id (so both agents of a request agree).
type sampler struct {
	ratio sdktrace.Sampler
	desc  string
}

func newSampler(percent float64) sampler {
	return sampler{ratio: sdktrace.TraceIDRatioBased(percent / 100),
		desc: fmt.Sprintf("FibmeshSampler{caller's decision, else %v%%}", percent)}
}

func (s sampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	ts := trace.SpanContextFromContext(p.ParentContext).TraceState()
	if sampled, ok := proxy.SamplingDecision(p.ParentContext); ok {
		d := sdktrace.Drop
		if sampled {
			d = sdktrace.RecordAndSample
		}
		return sdktrace.SamplingResult{Decision: d, Tracestate: ts}
	}
	r := s.ratio.ShouldSample(p)
	r.Tracestate = ts
	return r
}

func (s sampler) Description() string { return s.desc }
