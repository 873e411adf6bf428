package proxy

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/trace"
)

const (
	tTID   = "4bf92f3577b34da6a3ce929d0e0e4736"
	tSID   = "00f067aa0ba902b7"
	tPID   = "b7ad6b7169203331"
	tTID64 = "a3ce929d0e0e4736"
)

// extracted is extractTrace's result in comparable form.
type extracted struct {
	TraceID, SpanID string // "" when no parent
	Sampled         bool
	TraceState      string
	Deferred        bool
	Decision        string // "sample", "drop", "" (SamplingDecision of the context)
	B3Single        bool
}

func extractForTest(h http.Header) extracted {
	tc := extractTrace(h)
	var e extracted
	if tc.parent.IsValid() {
		e.TraceID, e.SpanID = tc.parent.TraceID().String(), tc.parent.SpanID().String()
		e.Sampled = tc.parent.IsSampled()
		e.TraceState = tc.parent.TraceState().String()
	}
	e.Deferred, e.B3Single = tc.deferred, tc.b3Single
	if s, ok := SamplingDecision(tc.withDecision(context.Background())); ok {
		e.Decision = map[bool]string{true: "sample", false: "drop"}[s]
	}
	return e
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestExtractTrace(t *testing.T) {
	tests := []struct {
		name string
		h    http.Header
		want extracted
	}{
		{"none", hdr(), extracted{}},

		// W3C.
		{"w3c sampled", hdr("traceparent", "00-"+tTID+"-"+tSID+"-01"),
			extracted{TraceID: tTID, SpanID: tSID, Sampled: true, Decision: "sample"}},
		{"w3c not sampled", hdr("traceparent", "00-"+tTID+"-"+tSID+"-00"),
			extracted{TraceID: tTID, SpanID: tSID, Decision: "drop"}},
		{"w3c other flags ignored", hdr("traceparent", "00-"+tTID+"-"+tSID+"-03"),
			extracted{TraceID: tTID, SpanID: tSID, Sampled: true, Decision: "sample"}},
		{"w3c with tracestate", hdr("traceparent", "00-"+tTID+"-"+tSID+"-01", "tracestate", "congo=t61rcWkgMzE", "tracestate", "rojo=00f067aa0ba902b7"),
			extracted{TraceID: tTID, SpanID: tSID, Sampled: true, TraceState: "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", Decision: "sample"}},
		{"w3c bad tracestate dropped", hdr("traceparent", "00-"+tTID+"-"+tSID+"-01", "tracestate", "BAD KEY=1"),
			extracted{TraceID: tTID, SpanID: tSID, Sampled: true, Decision: "sample"}},
		{"w3c long tracestate dropped", hdr("traceparent", "00-"+tTID+"-"+tSID+"-01", "tracestate", "k="+strings.Repeat("v", 600)),
			extracted{TraceID: tTID, SpanID: tSID, Sampled: true, Decision: "sample"}},
		{"w3c future version with more fields", hdr("traceparent", "cc-"+tTID+"-"+tSID+"-01-what-the-future-holds"),
			extracted{TraceID: tTID, SpanID: tSID, Sampled: true, Decision: "sample"}},
		{"w3c version 00 too long", hdr("traceparent", "00-"+tTID+"-"+tSID+"-01-x"), extracted{}},
		{"w3c version ff", hdr("traceparent", "ff-"+tTID+"-"+tSID+"-01"), extracted{}},
		{"w3c upper case", hdr("traceparent", "00-"+strings.ToUpper(tTID)+"-"+tSID+"-01"), extracted{}},
		{"w3c zero trace id", hdr("traceparent", "00-"+strings.Repeat("0", 32)+"-"+tSID+"-01"), extracted{}},
		{"w3c zero span id", hdr("traceparent", "00-"+tTID+"-"+strings.Repeat("0", 16)+"-01"), extracted{}},
		{"w3c short", hdr("traceparent", "00-"+tTID[:31]+"-"+tSID+"-01"), extracted{}},
		{"w3c two headers", hdr("traceparent", "00-"+tTID+"-"+tSID+"-01", "traceparent", "00-"+tTID+"-"+tPID+"-01"), extracted{}},
		{"w3c wins over b3", hdr("traceparent", "00-"+tTID+"-"+tSID+"-00", "x-b3-traceid", tTID64, "x-b3-spanid", tPID, "x-b3-sampled", "1"),
			extracted{TraceID: tTID, SpanID: tSID, Decision: "drop"}},
		{"bad w3c falls back to b3", hdr("traceparent", "garbage", "x-b3-traceid", tTID, "x-b3-spanid", tPID, "x-b3-sampled", "1"),
			extracted{TraceID: tTID, SpanID: tPID, Sampled: true, Decision: "sample"}},

		// B3 multi.
		{"b3 multi sampled", hdr("x-b3-traceid", tTID, "x-b3-spanid", tSID, "x-b3-parentspanid", tPID, "x-b3-sampled", "1"),
			extracted{TraceID: tTID, SpanID: tSID, Sampled: true, Decision: "sample"}},
		{"b3 multi 64-bit trace id", hdr("x-b3-traceid", tTID64, "x-b3-spanid", tSID, "x-b3-sampled", "0"),
			extracted{TraceID: "0000000000000000" + tTID64, SpanID: tSID, Decision: "drop"}},
		{"b3 multi true", hdr("x-b3-traceid", tTID, "x-b3-spanid", tSID, "x-b3-sampled", "true"),
			extracted{TraceID: tTID, SpanID: tSID, Sampled: true, Decision: "sample"}},
		{"b3 multi debug", hdr("x-b3-traceid", tTID, "x-b3-spanid", tSID, "x-b3-flags", "1"),
			extracted{TraceID: tTID, SpanID: tSID, Sampled: true, Decision: "sample"}},
		{"b3 multi deferred", hdr("x-b3-traceid", tTID, "x-b3-spanid", tSID),
			extracted{TraceID: tTID, SpanID: tSID, Deferred: true}},
		{"b3 multi decision only", hdr("x-b3-sampled", "0"), extracted{Decision: "drop"}},
		{"b3 multi debug only", hdr("x-b3-flags", "1"), extracted{Decision: "sample"}},
		{"b3 multi no span id", hdr("x-b3-traceid", tTID, "x-b3-sampled", "1"), extracted{}},
		{"b3 multi bad parent", hdr("x-b3-traceid", tTID, "x-b3-spanid", tSID, "x-b3-parentspanid", "xyz"), extracted{}},
		{"b3 multi bad sampled", hdr("x-b3-traceid", tTID, "x-b3-spanid", tSID, "x-b3-sampled", "yes"), extracted{}},
		{"b3 multi bad flags", hdr("x-b3-traceid", tTID, "x-b3-spanid", tSID, "x-b3-flags", "2"), extracted{}},
		{"b3 multi 24-digit trace id", hdr("x-b3-traceid", tTID[:24], "x-b3-spanid", tSID), extracted{}},
		{"b3 multi twice", hdr("x-b3-traceid", tTID, "x-b3-traceid", tTID, "x-b3-spanid", tSID), extracted{}},
		{"b3 multi zero span", hdr("x-b3-traceid", tTID, "x-b3-spanid", strings.Repeat("0", 16)), extracted{}},

		// B3 single.
		{"b3 single full", hdr("b3", tTID+"-"+tSID+"-1-"+tPID),
			extracted{TraceID: tTID, SpanID: tSID, Sampled: true, Decision: "sample", B3Single: true}},
		{"b3 single ids only", hdr("b3", tTID64+"-"+tSID),
			extracted{TraceID: "0000000000000000" + tTID64, SpanID: tSID, Deferred: true, B3Single: true}},
		{"b3 single debug", hdr("b3", tTID+"-"+tSID+"-d"),
			extracted{TraceID: tTID, SpanID: tSID, Sampled: true, Decision: "sample", B3Single: true}},
		{"b3 single deny", hdr("b3", "0"), extracted{Decision: "drop", B3Single: true}},
		{"b3 single accept", hdr("b3", "1"), extracted{Decision: "sample", B3Single: true}},
		{"b3 single true is not single's", hdr("b3", tTID+"-"+tSID+"-true"), extracted{B3Single: true}},
		{"b3 single five parts", hdr("b3", tTID+"-"+tSID+"-1-"+tPID+"-x"), extracted{B3Single: true}},
		{"b3 single empty", hdr("b3", ""), extracted{B3Single: true}},
		{"b3 single wins over multi", hdr("b3", tTID+"-"+tSID+"-0", "x-b3-traceid", tTID, "x-b3-spanid", tPID, "x-b3-sampled", "1"),
			extracted{TraceID: tTID, SpanID: tSID, Decision: "drop", B3Single: true}},
		{"bad b3 single falls back to multi", hdr("b3", "nope", "x-b3-traceid", tTID, "x-b3-spanid", tPID, "x-b3-sampled", "1"),
			extracted{TraceID: tTID, SpanID: tPID, Sampled: true, Decision: "sample", B3Single: true}},

		// Garbage.
		{"garbage everywhere", hdr("traceparent", "00-zz-yy-01", "b3", "----", "x-b3-traceid", "\x00", "x-b3-spanid", "é"), extracted{B3Single: true}},
		{"dashes only", hdr("traceparent", strings.Repeat("-", 55)), extracted{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, extractForTest(tt.h)); diff != "" {
				t.Errorf("extractTrace(%v) (-want +got):\n%s", tt.h, diff)
			}
		})
	}
}

func TestInjectTrace(t *testing.T) {
	tid, _ := trace.TraceIDFromHex(tTID)
	sid, _ := trace.SpanIDFromHex(tSID)
	pid, _ := trace.SpanIDFromHex(tPID)
	ts, _ := trace.ParseTraceState("congo=t61rcWkgMzE")
	span := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: ts})
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: pid, Remote: true})
	tests := []struct {
		name         string
		in           http.Header
		span, parent trace.SpanContext
		b3Single     bool
		want         http.Header
	}{
		{"child, both formats", hdr("x-b3-flags", "1", "Other", "kept"), span, parent, false, http.Header{
			"Traceparent": {"00-" + tTID + "-" + tSID + "-01"}, "Tracestate": {"congo=t61rcWkgMzE"},
			"X-B3-Traceid": {tTID}, "X-B3-Spanid": {tSID}, "X-B3-Parentspanid": {tPID}, "X-B3-Sampled": {"1"}, "Other": {"kept"}}},
		{"root replaces garbage, b3 single kept as a form", hdr("b3", "junk", "tracestate", "x=y", "x-b3-parentspanid", "zz"),
			trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}), trace.SpanContext{}, true, http.Header{
				"Traceparent":  {"00-" + tTID + "-" + tSID + "-00"},
				"X-B3-Traceid": {tTID}, "X-B3-Spanid": {tSID}, "X-B3-Sampled": {"0"}, "B3": {tTID + "-" + tSID + "-0"}}},
		{"b3 single with parent", hdr("b3", tTID+"-"+tPID), span, parent, true, http.Header{
			"Traceparent": {"00-" + tTID + "-" + tSID + "-01"}, "Tracestate": {"congo=t61rcWkgMzE"},
			"X-B3-Traceid": {tTID}, "X-B3-Spanid": {tSID}, "X-B3-Parentspanid": {tPID}, "X-B3-Sampled": {"1"},
			"B3": {tTID + "-" + tSID + "-1-" + tPID}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.in.Clone()
			injectTrace(h, tt.span, tt.parent, tt.b3Single)
			if diff := cmp.Diff(tt.want, h); diff != "" {
				t.Errorf("headers (-want +got):\n%s", diff)
			}
			// What was written reads back as the span, in each format.
			for _, only := range [][]string{{hdrTraceparent, hdrTracestate}, {hdrB3}, {hdrB3TraceID, hdrB3SpanID, hdrB3ParentID, hdrB3Sampled}} {
				sub := http.Header{}
				for _, k := range only {
					if v, ok := h[k]; ok {
						sub[k] = v
					}
				}
				if len(sub) == 0 {
					continue
				}
				got := extractTrace(sub).parent
				if got.TraceID() != tt.span.TraceID() || got.SpanID() != tt.span.SpanID() || got.IsSampled() != tt.span.IsSampled() {
					t.Errorf("%v reads back as %v/%v sampled %v, want the span", only, got.TraceID(), got.SpanID(), got.IsSampled())
				}
			}
		})
	}
}
