package proxy

import (
	"context"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

// Trace context headers (canonical keys): W3C Trace Context and B3,
// multi-header and single (github.com/openzipkin/b3-propagation).
const (
	hdrTraceparent   = "Traceparent"
	hdrTracestate    = "Tracestate"
	hdrB3            = "B3"
	hdrB3TraceID     = "X-B3-Traceid"
	hdrB3SpanID      = "X-B3-Spanid"
	hdrB3ParentID    = "X-B3-Parentspanid"
	hdrB3Sampled     = "X-B3-Sampled"
	hdrB3Flags       = "X-B3-Flags"
	maxTracestateLen = 512 // W3C: vendors must propagate at least 512 bytes; more is dropped whole
)

// traceDecision is a sampling decision a request carried without a
// trace to continue (B3's "X-B3-Sampled: 0" alone, "b3: 0").
type traceDecision uint8

const (
	decisionNone traceDecision = iota
	decisionSample
	decisionDrop
)

// traceContext is what a request's trace headers said.
type traceContext struct {
	// parent, when valid, is the caller's span: the proxy's span
	// continues its trace as its child, with its sampled flag.
	parent trace.SpanContext
	// decision is a sampling decision without ids (parent not valid).
	decision traceDecision
	// deferred says parent came from B3 ids without a sampling state:
	// the caller left the decision to the proxy.
	deferred bool
	// b3Single says the request carried a "b3" header: the proxy writes
	// one on (the app may read only that form).
	b3Single bool
}

// extractTrace reads a request's trace context. The headers come from
// anyone (an app, a client outside the mesh), so they are parsed
// strictly: W3C traceparent first (its tracestate kept only when
// valid), then the single b3 header, then the B3 multi-headers; one that
// is malformed is ignored, and with none valid the proxy starts a new
// trace. It never fails.
func extractTrace(h http.Header) traceContext {
	tc := traceContext{b3Single: len(h[hdrB3]) > 0}
	if sc, ok := parseTraceparent(h[hdrTraceparent]); ok {
		if ts, ok := parseTracestate(h[hdrTracestate]); ok {
			sc = sc.WithTraceState(ts)
		}
		tc.parent = sc
		return tc
	}
	sc, d, ok := parseB3Single(h[hdrB3])
	if !ok {
		sc, d, ok = parseB3Multi(h)
	}
	switch {
	case !ok:
	case sc.IsValid():
		tc.parent, tc.deferred = sc, d == decisionNone
	default:
		tc.decision = d
	}
	return tc
}

// injectTrace writes span's context as the request's trace headers, in
// both formats: traceparent (and tracestate when the span has one) and
// the B3 multi-headers, X-B3-ParentSpanId being parent's span (the
// caller's; removed when the span is a root), plus the single b3 header
// when the request came with one. Whatever trace headers the request
// had are replaced.
func injectTrace(h http.Header, span, parent trace.SpanContext, b3Single bool) {
	tid, sid := span.TraceID().String(), span.SpanID().String()
	sampled, flags := "0", "00"
	if span.IsSampled() {
		sampled, flags = "1", "01"
	}
	h[hdrTraceparent] = []string{"00-" + tid + "-" + sid + "-" + flags}
	if ts := span.TraceState(); ts.Len() > 0 {
		h[hdrTracestate] = []string{ts.String()}
	} else {
		delete(h, hdrTracestate)
	}
	h[hdrB3TraceID] = []string{tid}
	h[hdrB3SpanID] = []string{sid}
	h[hdrB3Sampled] = []string{sampled}
	delete(h, hdrB3Flags) // a debug flag became sampled=1
	pid := ""
	if parent.HasSpanID() {
		pid = parent.SpanID().String()
		h[hdrB3ParentID] = []string{pid}
	} else {
		delete(h, hdrB3ParentID)
	}
	if !b3Single {
		delete(h, hdrB3)
		return
	}
	v := tid + "-" + sid + "-" + sampled
	if pid != "" {
		v += "-" + pid
	}
	h[hdrB3] = []string{v}
}

// parseTraceparent parses the W3C traceparent header: exactly one,
// "VERSION-TRACEID-PARENTID-FLAGS" in lower-case hex; version 00 is 55
// characters exactly, a later version may append "-..." (ignored);
// version ff, all-zero ids and upper-case hex are invalid.
func parseTraceparent(vv []string) (trace.SpanContext, bool) {
	if len(vv) != 1 {
		return trace.SpanContext{}, false
	}
	v := vv[0]
	if len(v) < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return trace.SpanContext{}, false
	}
	var ver [1]byte
	if !lowerHex(ver[:], v[:2]) || ver[0] == 0xff {
		return trace.SpanContext{}, false
	}
	if ver[0] == 0 && len(v) != 55 || ver[0] > 0 && len(v) > 55 && v[55] != '-' {
		return trace.SpanContext{}, false
	}
	var tid trace.TraceID
	var sid trace.SpanID
	var fl [1]byte
	if !lowerHex(tid[:], v[3:35]) || !lowerHex(sid[:], v[36:52]) || !lowerHex(fl[:], v[53:55]) {
		return trace.SpanContext{}, false
	}
	if !tid.IsValid() || !sid.IsValid() {
		return trace.SpanContext{}, false
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid,
		TraceFlags: trace.TraceFlags(fl[0]) & trace.FlagsSampled, Remote: true}), true
}

// parseTracestate parses tracestate's lines (joined by commas, as
// RFC 9110 allows); invalid or longer than maxTracestateLen: not ok.
func parseTracestate(vv []string) (trace.TraceState, bool) {
	if len(vv) == 0 {
		return trace.TraceState{}, false
	}
	n := len(vv) - 1
	for _, v := range vv {
		n += len(v)
	}
	if n > maxTracestateLen {
		return trace.TraceState{}, false
	}
	ts, err := trace.ParseTraceState(strings.Join(vv, ","))
	if err != nil {
		return trace.TraceState{}, false
	}
	return ts, true
}

// parseB3Single parses the single b3 header:
// "TRACEID-SPANID[-SAMPLING[-PARENTSPANID]]" or a lone SAMPLING ("0",
// "1", "d": debug, which samples). ok with a valid span context, or
// with only a decision.
func parseB3Single(vv []string) (trace.SpanContext, traceDecision, bool) {
	if len(vv) != 1 {
		return trace.SpanContext{}, decisionNone, false
	}
	parts := strings.Split(vv[0], "-")
	if len(parts) == 1 {
		d, ok := b3Sampling(parts[0], true)
		return trace.SpanContext{}, d, ok && d != decisionNone
	}
	if len(parts) > 4 {
		return trace.SpanContext{}, decisionNone, false
	}
	tid, ok1 := b3TraceID(parts[0])
	sid, ok2 := b3SpanID(parts[1])
	if !ok1 || !ok2 {
		return trace.SpanContext{}, decisionNone, false
	}
	d := decisionNone
	if len(parts) >= 3 {
		var ok bool
		if d, ok = b3Sampling(parts[2], true); !ok {
			return trace.SpanContext{}, decisionNone, false
		}
	}
	if len(parts) == 4 {
		if _, ok := b3SpanID(parts[3]); !ok {
			return trace.SpanContext{}, decisionNone, false
		}
	}
	return b3SpanContext(tid, sid, d), d, true
}

// parseB3Multi parses X-B3-TraceId, X-B3-SpanId, X-B3-ParentSpanId,
// X-B3-Sampled ("1", "0", or the older "true", "false") and X-B3-Flags
// ("1": debug, which samples); each at most once. Ids need both trace
// and span id; a sampling header alone is a decision.
func parseB3Multi(h http.Header) (trace.SpanContext, traceDecision, bool) {
	one := func(k string) (string, bool, bool) { // value, present, ok
		vv := h[k]
		switch len(vv) {
		case 0:
			return "", false, true
		case 1:
			return vv[0], true, true
		}
		return "", true, false
	}
	tv, hasT, ok1 := one(hdrB3TraceID)
	sv, hasS, ok2 := one(hdrB3SpanID)
	pv, hasP, ok3 := one(hdrB3ParentID)
	dv, hasD, ok4 := one(hdrB3Sampled)
	fv, hasF, ok5 := one(hdrB3Flags)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 {
		return trace.SpanContext{}, decisionNone, false
	}
	d := decisionNone
	if hasD {
		var ok bool
		if d, ok = b3Sampling(dv, false); !ok || d == decisionNone {
			return trace.SpanContext{}, decisionNone, false
		}
	}
	if hasF {
		if fv != "1" {
			return trace.SpanContext{}, decisionNone, false
		}
		d = decisionSample
	}
	if !hasT && !hasS && !hasP {
		return trace.SpanContext{}, d, d != decisionNone
	}
	if !hasT || !hasS {
		return trace.SpanContext{}, decisionNone, false
	}
	tid, ok1 := b3TraceID(tv)
	sid, ok2 := b3SpanID(sv)
	if !ok1 || !ok2 {
		return trace.SpanContext{}, decisionNone, false
	}
	if hasP {
		if _, ok := b3SpanID(pv); !ok {
			return trace.SpanContext{}, decisionNone, false
		}
	}
	return b3SpanContext(tid, sid, d), d, true
}

// b3SpanContext is a remote span context from B3 ids; sampled only
// with decisionSample (a deferred decision, decisionNone, is left to
// the proxy's sampler: traceContext.deferred).
func b3SpanContext(tid trace.TraceID, sid trace.SpanID, d traceDecision) trace.SpanContext {
	cfg := trace.SpanContextConfig{TraceID: tid, SpanID: sid, Remote: true}
	if d == decisionSample {
		cfg.TraceFlags = trace.FlagsSampled
	}
	return trace.NewSpanContext(cfg)
}

// b3Sampling parses a B3 sampling state; single is the b3 header's
// form ("d" allowed; "true"/"false" not).
func b3Sampling(s string, single bool) (traceDecision, bool) {
	switch s {
	case "1":
		return decisionSample, true
	case "0":
		return decisionDrop, true
	case "d":
		return decisionSample, single
	case "true":
		return decisionSample, !single
	case "false":
		return decisionDrop, !single
	}
	return decisionNone, false
}

// b3TraceID parses a B3 trace id: 16 or 32 lower-case hex digits, not
// all zero (a 64-bit id is the low half of a 128-bit one).
func b3TraceID(s string) (trace.TraceID, bool) {
	var tid trace.TraceID
	switch len(s) {
	case 16:
		if !lowerHex(tid[8:], s) {
			return tid, false
		}
	case 32:
		if !lowerHex(tid[:], s) {
			return tid, false
		}
	default:
		return tid, false
	}
	return tid, tid.IsValid()
}

// b3SpanID parses a B3 span id: 16 lower-case hex digits, not all zero.
func b3SpanID(s string) (trace.SpanID, bool) {
	var sid trace.SpanID
	if len(s) != 16 || !lowerHex(sid[:], s) {
		return sid, false
	}
	return sid, sid.IsValid()
}

// lowerHex decodes s, exactly 2*len(dst) lower-case hex digits, into
// dst.
func lowerHex(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, ok1 := hexDigit(s[2*i])
		lo, ok2 := hexDigit(s[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// samplingKey carries a traceDecision in a context, for the sampler.
type samplingKey struct{}

// SamplingDecision says how the caller of the request whose span is
// being started (the context a Config.Tracer's Start gets) decided, for
// the tracer's sampler: sampled or not with ok, or ok false when the
// caller left it to the proxy (no trace context, or B3 ids without a
// sampling state), which then samples as for a new trace. A remote
// parent span's sampled flag is its decision; B3's "X-B3-Sampled" or
// "b3" without ids is one too.
func SamplingDecision(ctx context.Context) (sampled, ok bool) {
	d, _ := ctx.Value(samplingKey{}).(traceDecision)
	return d == decisionSample, d != decisionNone
}

// withDecision puts tc's decision into ctx for SamplingDecision, and
// its parent span as the remote parent.
func (tc traceContext) withDecision(ctx context.Context) context.Context {
	d := tc.decision
	if tc.parent.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, tc.parent)
		switch {
		case tc.deferred:
			d = decisionNone
		case tc.parent.IsSampled():
			d = decisionSample
		default:
			d = decisionDrop
		}
	}
	if d == decisionNone {
		return ctx
	}
	return context.WithValue(ctx, samplingKey{}, d)
}

// WithSamplingDecision returns ctx carrying a caller's sampling
// decision, as the proxy passes it to its Config.Tracer's Start (for
// tests of a tracer's sampler, and callers starting spans of their own).
func WithSamplingDecision(ctx context.Context, sampled bool) context.Context {
	d := decisionDrop
	if sampled {
		d = decisionSample
	}
	return context.WithValue(ctx, samplingKey{}, d)
}
