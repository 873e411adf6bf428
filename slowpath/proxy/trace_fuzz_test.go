package proxy

import (
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

// FuzzExtractTrace feeds arbitrary trace headers to extractTrace: it
// must not panic, a parent it accepts must be a valid, remote span
// context whose ids appear in the headers, and the headers injectTrace
// writes for a child must read back as that child (corpus in
// testdata/fuzz/FuzzExtractTrace).
func FuzzExtractTrace(f *testing.F) {
	f.Add("00-"+tTID+"-"+tSID+"-01", "congo=t61rcWkgMzE", "", "", "", "", "", "")
	f.Add("cc-"+tTID+"-"+tSID+"-01-future", "", "", "", "", "", "", "")
	f.Add("", "", tTID+"-"+tSID+"-1-"+tPID, "", "", "", "", "")
	f.Add("", "", "d", "", "", "", "", "")
	f.Add("", "", "", tTID64, tSID, tPID, "true", "1")
	f.Add("", "", "", "", "", "", "0", "")
	f.Add("00-zz", "a=b,,c=d", "-", "x", "y", "z", "maybe", "2")
	f.Fuzz(func(t *testing.T, tp, ts, b3, tid, sid, pid, sampled, flags string) {
		h := http.Header{}
		for _, kv := range [][2]string{{hdrTraceparent, tp}, {hdrTracestate, ts}, {hdrB3, b3}, {hdrB3TraceID, tid},
			{hdrB3SpanID, sid}, {hdrB3ParentID, pid}, {hdrB3Sampled, sampled}, {hdrB3Flags, flags}} {
			if kv[1] != "" {
				h[kv[0]] = strings.Split(kv[1], "\n") // several lines of one header, too
			}
		}
		tc := extractTrace(h)
		p := tc.parent
		if p.IsValid() {
			if !p.IsRemote() {
				t.Fatalf("parent %v is not remote", p)
			}
			all := tp + b3 + tid + sid
			if !strings.Contains(all, p.SpanID().String()) || !strings.Contains(all, strings.TrimLeft(p.TraceID().String(), "0")) {
				t.Fatalf("parent %v/%v is not in the headers %v", p.TraceID(), p.SpanID(), h)
			}
		} else if p.HasTraceID() || p.HasSpanID() || tc.deferred {
			t.Fatalf("invalid parent with ids or deferred: %+v", tc)
		}
		// A child of it, as the proxy's span would be.
		tid2 := p.TraceID()
		if !tid2.IsValid() {
			tid2 = trace.TraceID{1}
		}
		child := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid2, SpanID: trace.SpanID{2},
			TraceFlags: p.TraceFlags(), TraceState: p.TraceState()})
		out := h.Clone()
		injectTrace(out, child, p, tc.b3Single)
		back := extractTrace(out)
		if !back.parent.Equal(child.WithRemote(true)) {
			t.Fatalf("injected %v, read back %v (headers %v)", child, back.parent, out)
		}
	})
}
