// Package otlpsink is an OTLP trace receiver for tests: a gRPC server of
// the OTLP collector's TraceService (go.opentelemetry.io/proto/otlp
// collector/trace/v1) that keeps every span it is sent, flattened with
// its resource's attributes, for a test to wait for and inspect.
package otlpsink

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"sync"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

// Span is one received span.
type Span struct {
	Name                           string
	Kind                           tracepb.Span_SpanKind
	TraceID, SpanID, ParentSpanID  string // lower-case hex; ParentSpanID "" for a root
	TraceState                     string
	Start, End                     time.Time
	StatusCode                     tracepb.Status_StatusCode
	StatusMessage                  string
	Attributes, ResourceAttributes map[string]string // values as strings
}

// Sink receives spans. Its zero value is not usable: see Start.
type Sink struct {
	collectorpb.UnimplementedTraceServiceServer
	srv *grpc.Server

	mu      sync.Mutex
	spans   []Span
	exports int
	changed chan struct{} // closed (and replaced) when spans arrive
}

// Start serves the TraceService on each listener (plaintext) until
// Close; several listeners (say, one per network namespace) feed one
// Sink.
func Start(lis ...net.Listener) *Sink {
	s := &Sink{srv: grpc.NewServer(), changed: make(chan struct{})}
	collectorpb.RegisterTraceServiceServer(s.srv, s)
	for _, l := range lis {
		go s.srv.Serve(l)
	}
	return s
}

// Close stops the server and closes the listeners.
func (s *Sink) Close() { s.srv.Stop() }

// Export implements the OTLP TraceService.
func (s *Sink) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	var got []Span
	for _, rs := range req.GetResourceSpans() {
		res := attrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				got = append(got, Span{Name: sp.GetName(), Kind: sp.GetKind(),
					TraceID: hex.EncodeToString(sp.GetTraceId()), SpanID: hex.EncodeToString(sp.GetSpanId()),
					ParentSpanID: hex.EncodeToString(sp.GetParentSpanId()), TraceState: sp.GetTraceState(),
					Start: time.Unix(0, int64(sp.GetStartTimeUnixNano())), End: time.Unix(0, int64(sp.GetEndTimeUnixNano())),
					StatusCode: sp.GetStatus().GetCode(), StatusMessage: sp.GetStatus().GetMessage(),
					Attributes: attrs(sp.GetAttributes()), ResourceAttributes: res})
			}
		}
	}
	s.mu.Lock()
	s.spans = append(s.spans, got...)
	s.exports++
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		v := kv.GetValue()
		switch x := v.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.GetKey()] = x.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = fmt.Sprint(x.IntValue)
		case *commonpb.AnyValue_BoolValue:
			m[kv.GetKey()] = fmt.Sprint(x.BoolValue)
		case *commonpb.AnyValue_DoubleValue:
			m[kv.GetKey()] = fmt.Sprint(x.DoubleValue)
		default:
			m[kv.GetKey()] = v.String()
		}
	}
	return m
}

// Spans returns a copy of the spans received so far, in arrival order,
// and how many export calls brought them.
func (s *Sink) Spans() (spans []Span, exports int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Span(nil), s.spans...), s.exports
}

// Wait waits until match returns true for the spans received so far
// (checked now and at each export), or ctx ends: it returns the spans
// either way, and ctx's error when it ended first.
func (s *Sink) Wait(ctx context.Context, match func([]Span) bool) ([]Span, error) {
	for {
		s.mu.Lock()
		spans, ch := append([]Span(nil), s.spans...), s.changed
		s.mu.Unlock()
		if match(spans) {
			return spans, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return spans, ctx.Err()
		}
	}
}
