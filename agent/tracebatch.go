package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// tracingExportTimeout bounds one OTLP export.
const tracingExportTimeout = 10 * time.Second

// traceMetrics count the agent's spans (fibmesh_agent_trace_*). They are
// registered whether or not tracing is on (zeros without a collector).
type traceMetrics struct {
	dropped  prometheus.Counter
	exported *prometheus.CounterVec
}

func newTraceMetrics() *traceMetrics {
	m := &traceMetrics{
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "fibmesh_agent_trace_spans_dropped_total",
			Help: "Sampled spans dropped because the export queue (--tracing-queue's bound) was full: the collector is slow or unreachable."}),
		exported: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fibmesh_agent_trace_spans_exported_total",
			Help: "Spans sent to the OTLP collector, by result (ok; failed: the export returned an error and the spans are lost)."}, []string{"result"}),
	}
	for _, r := range []string{"ok", "failed"} {
		m.exported.WithLabelValues(r) // export zeros
	}
	return m
}

func (m *traceMetrics) collectors() []prometheus.Collector {
	if m == nil {
		return nil
	}
	return []prometheus.Collector{m.dropped, m.exported}
}

// spanBatcher is the agent's span processor: a bounded queue, so that a
// span that does not fit is dropped and counted (never waited for), and
// one goroutine that exports the queued spans in batches of at most
// maxBatch, at least every timeout.
type spanBatcher struct {
	exp      sdktrace.SpanExporter
	maxBatch int
	timeout  time.Duration
	m        *traceMetrics

	queue   chan sdktrace.ReadOnlySpan
	flushes chan chan struct{}
	done    chan struct{} // closed when the goroutine has returned

	mu     sync.RWMutex // closed and closing queue
	closed bool
}

func newSpanBatcher(exp sdktrace.SpanExporter, queue, maxBatch int, timeout time.Duration, m *traceMetrics) *spanBatcher {
	b := &spanBatcher{exp: exp, maxBatch: max(1, maxBatch), timeout: timeout, m: m,
		queue: make(chan sdktrace.ReadOnlySpan, queue), flushes: make(chan chan struct{}), done: make(chan struct{})}
	go b.run()
	return b
}

// OnStart does nothing: spans are queued when they end.
func (b *spanBatcher) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues a sampled span, or drops and counts it when the queue is
// full (or the batcher shut down).
func (b *spanBatcher) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		b.m.dropped.Inc()
		return
	}
	select {
	case b.queue <- s:
	default:
		b.m.dropped.Inc()
	}
}

// run exports batches until the queue is closed, then what is left.
func (b *spanBatcher) run() {
	defer close(b.done)
	batch := make([]sdktrace.ReadOnlySpan, 0, b.maxBatch)
	export := func() {
		if len(batch) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), tracingExportTimeout)
		err := b.exp.ExportSpans(ctx, batch)
		cancel()
		if err != nil {
			b.m.exported.WithLabelValues("failed").Add(float64(len(batch)))
			otel.Handle(err)
		} else {
			b.m.exported.WithLabelValues("ok").Add(float64(len(batch)))
		}
		clear(batch)
		batch = batch[:0]
	}
	add := func(s sdktrace.ReadOnlySpan) {
		batch = append(batch, s)
		if len(batch) == b.maxBatch {
			export()
		}
	}
	tick := time.NewTicker(b.timeout)
	defer tick.Stop()
	for {
		select {
		case s, ok := <-b.queue:
			if !ok {
				export()
				return
			}
			add(s)
		case <-tick.C:
			export()
		case ack := <-b.flushes:
			for n := len(b.queue); n > 0; n-- {
				add(<-b.queue)
			}
			export()
			close(ack)
		}
	}
}

// ForceFlush exports what is queued now, waiting up to ctx.
func (b *spanBatcher) ForceFlush(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case b.flushes <- ack:
	case <-b.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown exports what is queued (waiting up to ctx: an export that
// hangs is abandoned, it ends with its own timeout) and stops the
// exporter. Spans that end later are dropped.
func (b *spanBatcher) Shutdown(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	close(b.queue)
	b.mu.Unlock()
	var err error
	select {
	case <-b.done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	return errors.Join(err, b.exp.Shutdown(ctx))
}
