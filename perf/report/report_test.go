package report

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseSummary(t *testing.T) {
	tests := []struct {
		line   string
		ok     bool
		name   string
		keys   []string
		values map[string]string
	}{
		{"l4-mesh: fibmesh_gbps=1.415 haproxy_gbps=1.592 direct_gbps=3.011 fibmesh_cps=511 haproxy_cps=443", true, "l4-mesh",
			[]string{"fibmesh_gbps", "haproxy_gbps", "direct_gbps", "fibmesh_cps", "haproxy_cps"},
			map[string]string{"fibmesh_gbps": "1.415", "haproxy_gbps": "1.592", "direct_gbps": "3.011", "fibmesh_cps": "511", "haproxy_cps": "443"}},
		{"offload: offloaded_gbps=0.043 userspace_gbps=0.027 where=vm-tcg", true, "offload",
			[]string{"offloaded_gbps", "userspace_gbps", "where"}, map[string]string{"offloaded_gbps": "0.043", "userspace_gbps": "0.027", "where": "vm-tcg"}},
		{"fds-propagation: p50_ms=43.1 p99_ms=57.2 rounds=50  ", true, "fds-propagation",
			[]string{"p50_ms", "p99_ms", "rounds"}, map[string]string{"p50_ms": "43.1", "p99_ms": "57.2", "rounds": "50"}},
		{"machine: 2 CPUs, load average 0.52", false, "", nil, nil},
		{"lab: 2 nodes, controller and agents", false, "", nil, nil},
		{"bench-xds: 1000 agents (delta)", false, "", nil, nil},
		{"    l4-mesh: fibmesh_gbps=1", false, "", nil, nil},
		{"samples: perf/out/bench-ktls.json, log: x", false, "", nil, nil},
	}
	for _, tt := range tests {
		s, ok := ParseSummary(tt.line)
		if ok != tt.ok {
			t.Errorf("ParseSummary(%q): ok %v, want %v", tt.line, ok, tt.ok)
			continue
		}
		if !ok {
			continue
		}
		if s.Name != tt.name || !cmp.Equal(s.Keys, tt.keys) || !cmp.Equal(s.Values, tt.values) {
			t.Errorf("ParseSummary(%q) = %+v, want %s %v %v", tt.line, s, tt.name, tt.keys, tt.values)
		}
	}
}

func TestSummaries(t *testing.T) {
	log := `bench-fib: 5 rounds x {xdp, kernel}
round 1 xdp 1000 pps
fib-node-forwarding: xdp_pps=1000 kernel_pps=900 ratio=1.11
ktls-json: {"a":1}
fib-forwarding: xdp_pps=1 kernel_pps=1 ratio=1.00
fib-forwarding: xdp_pps=2000 kernel_pps=1000 ratio=2.00
`
	got, err := Summaries(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, s := range got {
		lines = append(lines, s.Line)
	}
	want := []string{"fib-node-forwarding: xdp_pps=1000 kernel_pps=900 ratio=1.11", "fib-forwarding: xdp_pps=2000 kernel_pps=1000 ratio=2.00"}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("summaries (-want +got):\n%s", diff)
	}
}

func TestCompare(t *testing.T) {
	yes, no := true, false
	tests := []struct {
		bench, line string
		want        []Comparison // Title, Bars, Aim, Met, Figure, Note compared
	}{
		{"l4", "l4-mesh: fibmesh_gbps=1.415 haproxy_gbps=1.592 direct_gbps=3.011 fibmesh_cps=511 haproxy_cps=443", []Comparison{
			{Title: "L4 throughput across nodes", Bars: []Bar{{"fibmesh", 1.415}, {"haproxy mTLS pair", 1.592}, {"direct", 3.011}},
				Aim: "fibmesh ≥ haproxy (and ≥ 50% of direct)", Met: &no, Figure: "0.89x haproxy"},
			{Title: "L4 connections per second across nodes", Bars: []Bar{{"fibmesh", 511}, {"haproxy mTLS pair", 443}},
				Aim: "fibmesh ≥ haproxy", Met: &yes, Figure: "1.15x haproxy"},
		}},
		{"fds", "fds-propagation: p50_ms=43.1 p99_ms=57.2 rounds=50", []Comparison{
			{Title: "FDS propagation: a Pod written to the manifests → its route in the remote node's XDP FIB", Bars: []Bar{{"p50", 43.1}, {"p99", 57.2}},
				Aim: "p99 ≤ 100 ms", Met: &yes, Figure: "57.2 ms"},
		}},
		{"offload", "offload: offloaded_gbps=0.043 userspace_gbps=0.027 direct_gbps=0.161 cpu_ratio=0.66 revoke_p99_ms=167.0 where=vm-tcg", []Comparison{
			{Title: "Offloaded vs userspace mTLS vs direct: an opaque TCP stream across two agents",
				Bars: []Bar{{"offloaded (kTLS, kernel byte path, XDP flows)", 0.043}, {"userspace mTLS", 0.027}, {"direct", 0.161}},
				Aim:  "CPU per GB ≤ 0.5 of userspace", Met: &no, Figure: "0.66 of userspace's CPU per GB",
				Note: "where=vm-tcg: measured in make vmtest's VM (software-emulated CPU); compare the ratios, not the absolute figures"},
			{Title: "Revocation latency of an offloaded connection (policy push → first packet dropped in XDP)", Bars: []Bar{{"p99", 167}},
				Aim: "p99 ≤ 10 ms", Met: &no, Figure: "167 ms",
				Note: "where=vm-tcg: measured in make vmtest's VM (software-emulated CPU); compare the ratios, not the absolute figures"},
		}},
		{"l7", "l7-mesh: rps=9000 direct_rps=20000", []Comparison{ // haproxy missing: not judged
			{Title: "L7 (HTTP/1.1, 1 KB answers) requests per second at full load", Bars: []Bar{{"fibmesh", 9000}, {"direct", 20000}}, Aim: "fibmesh ≥ haproxy"},
			{Title: "L7 latency added at 1,000 req/s (over direct)", Aim: "fibmesh added p99 ≤ 100 µs"},
		}},
		{"new", "new-bench: a=1 b=2.5 where=host", []Comparison{ // no spec: every number
			{Title: "new-bench", Bars: []Bar{{"a", 1}, {"b", 2.5}}},
		}},
	}
	for _, tt := range tests {
		s, ok := ParseSummary(tt.line)
		if !ok {
			t.Fatalf("ParseSummary(%q) failed", tt.line)
		}
		var got []Comparison
		for _, c := range Compare(tt.bench, s) {
			if c.Bench != tt.bench || c.Source != tt.line {
				t.Errorf("%s: bench %q source %q", tt.line, c.Bench, c.Source)
			}
			got = append(got, Comparison{Title: c.Title, Bars: c.Bars, Aim: c.Aim, Met: c.Met, Figure: c.Figure, Note: c.Note})
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Compare(%q) (-want +got):\n%s", tt.line, diff)
		}
	}
}

// sample is a report with one step of each status.
func sample() *Report {
	fds, _ := ParseSummary("fds-propagation: p50_ms=43.1 p99_ms=57.2 rounds=50")
	l4, _ := ParseSummary("l4-mesh: fibmesh_gbps=1.415 haproxy_gbps=1.592 direct_gbps=3.011 fibmesh_cps=511 haproxy_cps=443")
	r := &Report{Started: time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC), Finished: time.Date(2026, 12, 3, 17, 30, 0, 0, time.UTC),
		Machine: Machine{Kernel: "6.18.44 x86_64", OS: "Debian GNU/Linux 12 (bookworm)", CPUModel: "AMD EPYC <x>", CPUs: 2, MemoryGiB: 7.8, GoVersion: "go1.26"},
		Steps: []Step{
			{Name: "fds", Command: "make bench-fds", Status: StatusOK, Seconds: 62, Summaries: []Summary{fds}},
			{Name: "l4", Command: "make bench-l4", Status: StatusOK, Seconds: 300, Summaries: []Summary{l4}, Samples: "perf/out/bench-l4.json"},
			{Name: "ktls", Command: "make bench-ktls", Status: StatusFailed, Reason: "make bench-ktls: exit status 2: qemu-system-x86_64: not found"},
			{Name: "fib", Command: "make bench-fib", Status: StatusSkipped, Reason: "needs root"},
		}}
	r.Build()
	return r
}

func TestBuild(t *testing.T) {
	r := sample()
	want := []string{"ktls (failed): make bench-ktls: exit status 2: qemu-system-x86_64: not found", "fib (skipped): needs root"}
	if diff := cmp.Diff(want, r.NotRun); diff != "" {
		t.Errorf("NotRun (-want +got):\n%s", diff)
	}
	if len(r.Comparisons) != 3 {
		t.Errorf("%d comparisons, want 3 (fds, l4 throughput, l4 conn/s)", len(r.Comparisons))
	}
	if diff := cmp.Diff([]string{"fds-propagation: p50_ms=43.1 p99_ms=57.2 rounds=50",
		"l4-mesh: fibmesh_gbps=1.415 haproxy_gbps=1.592 direct_gbps=3.011 fibmesh_cps=511 haproxy_cps=443"}, r.SummaryLines()); diff != "" {
		t.Errorf("summary lines (-want +got):\n%s", diff)
	}
	var b bytes.Buffer
	if err := WriteJSON(&b, r); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(r, &back); diff != "" {
		t.Errorf("JSON round trip (-want +got):\n%s", diff)
	}
}

func TestWriteHTML(t *testing.T) {
	var b bytes.Buffer
	if err := WriteHTML(&b, sample()); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{
		"<title>fibmesh perf report 2026-12-03 17:00 UTC</title>",
		"6.18.44 x86_64", "Debian GNU/Linux 12 (bookworm)", "AMD EPYC &lt;x&gt;, 2 CPUs", "go1.26",
		"L4 throughput across nodes", `<svg width="720"`, ">1.415 Gbit/s</text>", ">3.011 Gbit/s</text>",
		`Aim: fibmesh ≥ haproxy (and ≥ 50% of direct) — <span class="missed">not met</span> (0.89x haproxy)`,
		`Aim: p99 ≤ 100 ms — <span class="met">met</span> (57.2 ms)`,
		"<li>ktls (failed): make bench-ktls: exit status 2: qemu-system-x86_64: not found</li>",
		"<li>fib (skipped): needs root</li>",
		"fds-propagation: p50_ms=43.1 p99_ms=57.2 rounds=50\nl4-mesh:",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("report.html has no %q", want)
		}
	}
	// Self-contained: no script, no remote asset.
	for _, bad := range []string{"<script", "http://", "https://", "<link"} {
		if strings.Contains(page, bad) {
			t.Errorf("report.html contains %q: it must be self-contained", bad)
		}
	}
	// The longest bar of a chart spans the width left for bars.
	if !strings.Contains(page, `width="350.0"`) {
		t.Errorf("no full-width bar (350.0) in:\n%s", page)
	}
}

func TestChart(t *testing.T) {
	c := chart(Comparison{Unit: "ms", Better: "lower", Bars: []Bar{{"p50", 50}, {"p99", 100}}})
	if d := chart(Comparison{Unit: "ms", Better: "lower", Distribution: true, Bars: []Bar{{"p50", 50}, {"p99", 100}}}); d.Bars[0].Best || d.Bars[1].Best {
		t.Errorf("a distribution's bars are not alternatives: none is best, got %+v", d.Bars)
	}
	if len(c.Bars) != 2 || c.Bars[1].W != c.BarMax || c.Bars[0].W != c.BarMax/2 {
		t.Errorf("bars %+v, want p99 full width and p50 half", c.Bars)
	}
	if !c.Bars[0].Best || c.Bars[1].Best {
		t.Errorf("best: %v %v, want p50 (lower is better)", c.Bars[0].Best, c.Bars[1].Best)
	}
	if c.Bars[0].Value != "50.0 ms" {
		t.Errorf("value %q", c.Bars[0].Value)
	}
}
