// Package report builds fibmesh's perf report (make bench): from the
// summary line each benchmark prints last ("l4-mesh: fibmesh_gbps=1.415
// haproxy_gbps=1.592 ..."), the side-by-side comparisons with their aims,
// the machine and kernel, and what could not run and why; written as
// perf/out/report.json and a self-contained perf/out/report.html (inline
// SVG charts, no scripts, no network).
package report

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Summary is one "name: key=value key=value" line.
type Summary struct {
	Name string `json:"name"`
	// Keys are the keys in the line's order; Values by key.
	Keys   []string          `json:"keys"`
	Values map[string]string `json:"values"`
	Line   string            `json:"line"`
}

// Float returns the value of key as a number.
func (s Summary) Float(key string) (float64, bool) {
	v, ok := s.Values[key]
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(v, 64)
	return f, err == nil
}

var summaryRE = regexp.MustCompile(`^([a-z0-9][a-z0-9-]*): ([a-z_0-9]+=\S+( [a-z_0-9]+=\S+)*)\s*$`)

// ParseSummary parses a summary line; ok is false for any other line.
func ParseSummary(line string) (s Summary, ok bool) {
	m := summaryRE.FindStringSubmatch(line)
	if m == nil {
		return s, false
	}
	s = Summary{Name: m[1], Values: map[string]string{}, Line: strings.TrimSpace(line)}
	for _, kv := range strings.Fields(m[2]) {
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := s.Values[k]; !dup {
			s.Keys = append(s.Keys, k)
		}
		s.Values[k] = v
	}
	return s, true
}

// Summaries returns the summary lines of a benchmark's output, the last
// one of each name (a bench that prints its rounds' lines and then the
// result keeps the result).
func Summaries(r io.Reader) ([]Summary, error) {
	var out []Summary
	idx := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		s, ok := ParseSummary(sc.Text())
		if !ok || s.Name == "ktls-json" || s.Name == "offload-json" {
			continue
		}
		if i, ok := idx[s.Name]; ok {
			out[i] = s
			continue
		}
		idx[s.Name] = len(out)
		out = append(out, s)
	}
	return out, sc.Err()
}

// Step statuses.
const (
	StatusOK      = "ok"
	StatusFailed  = "failed"
	StatusSkipped = "skipped"
)

// Step is one benchmark of the run.
type Step struct {
	// Name is the bench (fib, fds, l4, l7, offload, xds, ktls); Command
	// what ran it (make bench-NAME).
	Name    string `json:"name"`
	Command string `json:"command"`
	// Status is ok, failed or skipped; Reason why it failed or was
	// skipped (the error's last lines, or the precondition missing).
	Status  string  `json:"status"`
	Reason  string  `json:"reason,omitempty"`
	Seconds float64 `json:"seconds"`
	// Summaries are its summary lines; Samples its own JSON file and
	// Log its whole output, both under perf/out.
	Summaries []Summary `json:"summaries"`
	Samples   string    `json:"samples,omitempty"`
	Log       string    `json:"log,omitempty"`
}

// Bar is one side of a comparison.
type Bar struct {
	Label string  `json:"label"`
	Value float64 `json:"value"`
}

// Comparison is one side-by-side figure of a benchmark: bars of one
// unit, and the aim it is judged by.
type Comparison struct {
	Bench  string `json:"bench"`
	Title  string `json:"title"`
	Unit   string `json:"unit"`
	Better string `json:"better"` // "higher" or "lower"
	Bars   []Bar  `json:"bars"`
	// Aim says what the design asks ("" when it states none); Met is
	// nil when there is no aim or no figure to judge it.
	Aim    string `json:"aim,omitempty"`
	Met    *bool  `json:"met,omitempty"`
	Figure string `json:"figure,omitempty"` // the figure the aim is judged on, e.g. "1.14x haproxy"
	// Source is the summary line the bars come from.
	Source string `json:"source"`
	// Note qualifies the figures (e.g. where=vm-tcg: an emulated CPU).
	Note string `json:"note,omitempty"`
	// Distribution: the bars are one figure's percentiles (or related
	// figures), not alternatives side by side: no best one is marked.
	Distribution bool `json:"distribution,omitempty"`
}

// Machine is where the report was measured.
type Machine struct {
	Hostname  string  `json:"hostname"`
	Kernel    string  `json:"kernel"`
	OS        string  `json:"os"`
	CPUModel  string  `json:"cpuModel"`
	CPUs      int     `json:"cpus"`
	MemoryGiB float64 `json:"memoryGiB"`
	GoVersion string  `json:"goVersion"`
	// KTLS says whether the kernel has the tls ULP (the offload runs
	// here, else in make vmtest's VM).
	KTLS bool `json:"ktls"`
	// LoadAverage is the 1-minute load average when the run began: the
	// machine is shared, figures move with it.
	LoadAverage float64 `json:"loadAverage"`
}

// Report is the whole perf report.
type Report struct {
	Started     time.Time    `json:"started"`
	Finished    time.Time    `json:"finished"`
	Machine     Machine      `json:"machine"`
	Steps       []Step       `json:"steps"`
	Comparisons []Comparison `json:"comparisons"`
	// NotRun lists the steps that failed or were skipped, with why.
	NotRun []string `json:"notRun"`
}

// Build fills r.Comparisons and r.NotRun from r.Steps.
func (r *Report) Build() {
	r.Comparisons = nil
	r.NotRun = nil
	for _, st := range r.Steps {
		if st.Status != StatusOK {
			r.NotRun = append(r.NotRun, fmt.Sprintf("%s (%s): %s", st.Name, st.Status, st.Reason))
		}
		for _, s := range st.Summaries {
			r.Comparisons = append(r.Comparisons, Compare(st.Name, s)...)
		}
	}
	if r.NotRun == nil {
		r.NotRun = []string{}
	}
	if r.Comparisons == nil {
		r.Comparisons = []Comparison{}
	}
}

// SummaryLines returns every step's summary lines, in step order: what
// make bench prints last.
func (r *Report) SummaryLines() []string {
	var out []string
	for _, st := range r.Steps {
		for _, s := range st.Summaries {
			out = append(out, s.Line)
		}
	}
	return out
}

// comparisonSpec says how a summary line becomes comparisons.
type comparisonSpec struct {
	title, unit, better string
	// dist: the bars are percentiles of one figure (Comparison.Distribution).
	dist bool
	// bars: label → key of the summary.
	bars [][2]string
	// aim judges the summary; nil: no aim.
	aim func(s Summary) (aim, figure string, met *bool)
}

// judge returns met for a figure against a bound, and nil when the
// figure is missing.
func judge(ok, met bool) *bool {
	if !ok {
		return nil
	}
	return &met
}

// ratioAim is the aim "a ≥ k × b" (higher) on two keys.
func ratioAim(aim, a, b string, k float64, of string) func(Summary) (string, string, *bool) {
	return func(s Summary) (string, string, *bool) {
		x, ok1 := s.Float(a)
		y, ok2 := s.Float(b)
		if !ok1 || !ok2 || y == 0 {
			return aim, "", nil
		}
		return aim, fmt.Sprintf("%.2fx %s", x/y, of), judge(true, x >= k*y)
	}
}

// boundAim is the aim "key ≤ max" (or ≥ min when atLeast).
func boundAim(aim, key string, bound float64, atLeast bool, unit string) func(Summary) (string, string, *bool) {
	return func(s Summary) (string, string, *bool) {
		v, ok := s.Float(key)
		if !ok {
			return aim, "", nil
		}
		met := v <= bound
		if atLeast {
			met = v >= bound
		}
		return aim, fmt.Sprintf("%s %s", strconv.FormatFloat(v, 'f', -1, 64), unit), judge(true, met)
	}
}

// specs are the comparisons of each summary line, by its name. The aims
// are the design's (see perf/README.md, where each is discussed).
var specs = map[string][]comparisonSpec{
	"fib-forwarding": {{title: "Cross-node 64-byte UDP forwarding: XDP FIB vs the kernel", unit: "packets/s", better: "higher",
		bars: [][2]string{{"XDP FIB", "xdp_pps"}, {"kernel forwarding", "kernel_pps"}},
		aim:  ratioAim("XDP FIB faster than the kernel's forwarding", "xdp_pps", "kernel_pps", 1, "the kernel")}},
	"fib-node-forwarding": {{title: "One node (pod veth → NIC) 64-byte UDP forwarding: XDP FIB vs the kernel", unit: "packets/s", better: "higher",
		bars: [][2]string{{"XDP FIB", "xdp_pps"}, {"kernel forwarding", "kernel_pps"}},
		aim:  ratioAim("XDP FIB faster than the kernel's forwarding", "xdp_pps", "kernel_pps", 1, "the kernel")}},
	"fds-propagation": {{title: "FDS propagation: a Pod written to the manifests → its route in the remote node's XDP FIB", unit: "ms", better: "lower", dist: true,
		bars: [][2]string{{"p50", "p50_ms"}, {"p99", "p99_ms"}},
		aim:  boundAim("p99 ≤ 100 ms", "p99_ms", 100, false, "ms")}},
	"fds-propagation-remove": {{title: "FDS propagation: a Pod removed → its route gone from the remote node's XDP FIB", unit: "ms", better: "lower", dist: true,
		bars: [][2]string{{"p50", "p50_ms"}, {"p99", "p99_ms"}},
		aim:  boundAim("p99 ≤ 100 ms", "p99_ms", 100, false, "ms")}},
	"xds-convergence": {
		{title: "xDS convergence: an edit reaching every simulated agent", unit: "ms", better: "lower", dist: true,
			bars: [][2]string{{"p50", "p50_ms"}, {"p99", "p99_ms"}},
			aim:  boundAim("p99 ≤ 100 ms at 1,000 agents", "p99_ms", 100, false, "ms")},
		{title: "Controller memory with the simulated agents", unit: "MB", better: "lower", dist: true,
			bars: [][2]string{{"RSS after the rounds", "rss_mb"}, {"peak RSS", "peak_rss_mb"}},
			aim:  boundAim("RSS ≤ 150 MB at 1,000 agents (peak ≤ 300 MB)", "rss_mb", 150, false, "MB")},
	},
	"ktls": {{title: "Bulk transfer over a veth: kTLS + kernel byte path vs crypto/tls in userspace vs plaintext", unit: "Gbit/s", better: "higher",
		bars: [][2]string{{"kTLS", "ktls_gbps"}, {"userspace crypto/tls", "userspace_gbps"}, {"plaintext", "plain_gbps"}},
		aim:  ratioAim("kTLS faster than userspace crypto/tls", "ktls_gbps", "userspace_gbps", 1, "userspace")}},
	"l4-mesh": {
		{title: "L4 throughput across nodes", unit: "Gbit/s", better: "higher",
			bars: [][2]string{{"fibmesh", "fibmesh_gbps"}, {"haproxy mTLS pair", "haproxy_gbps"}, {"direct", "direct_gbps"}},
			aim:  ratioAim("fibmesh ≥ haproxy (and ≥ 50% of direct)", "fibmesh_gbps", "haproxy_gbps", 1, "haproxy")},
		{title: "L4 connections per second across nodes", unit: "conn/s", better: "higher",
			bars: [][2]string{{"fibmesh", "fibmesh_cps"}, {"haproxy mTLS pair", "haproxy_cps"}},
			aim:  ratioAim("fibmesh ≥ haproxy", "fibmesh_cps", "haproxy_cps", 1, "haproxy")},
	},
	"l7-mesh": {
		{title: "L7 (HTTP/1.1, 1 KB answers) requests per second at full load", unit: "req/s", better: "higher",
			bars: [][2]string{{"fibmesh", "rps"}, {"haproxy mTLS pair", "haproxy_rps"}, {"direct", "direct_rps"}},
			aim:  ratioAim("fibmesh ≥ haproxy", "rps", "haproxy_rps", 1, "haproxy")},
		{title: "L7 latency added at 1,000 req/s (over direct)", unit: "µs", better: "lower", dist: true,
			bars: [][2]string{{"fibmesh p50", "added_p50_us"}, {"fibmesh p99", "added_p99_us"}, {"haproxy p99", "haproxy_added_p99_us"}},
			aim:  boundAim("fibmesh added p99 ≤ 100 µs", "added_p99_us", 100, false, "µs")},
	},
	"offload": {
		{title: "Offloaded vs userspace mTLS vs direct: an opaque TCP stream across two agents", unit: "Gbit/s", better: "higher",
			bars: [][2]string{{"offloaded (kTLS, kernel byte path, XDP flows)", "offloaded_gbps"}, {"userspace mTLS", "userspace_gbps"}, {"direct", "direct_gbps"}},
			aim:  boundAim("CPU per GB ≤ 0.5 of userspace", "cpu_ratio", 0.5, false, "of userspace's CPU per GB")},
		{title: "Revocation latency of an offloaded connection (policy push → first packet dropped in XDP)", unit: "ms", better: "lower", dist: true,
			bars: [][2]string{{"p99", "revoke_p99_ms"}},
			aim:  boundAim("p99 ≤ 10 ms", "revoke_p99_ms", 10, false, "ms")},
	},
}

// Compare returns the comparisons of one summary line of bench: one per
// spec of its name, or one of every numeric key when the name has none
// (a bench added later still shows).
func Compare(bench string, s Summary) []Comparison {
	note := ""
	if w := s.Values["where"]; w != "" && w != "host" {
		note = "where=" + w + ": measured in make vmtest's VM (software-emulated CPU); compare the ratios, not the absolute figures"
	}
	ss, ok := specs[s.Name]
	if !ok {
		c := Comparison{Bench: bench, Title: s.Name, Unit: "", Better: "higher", Source: s.Line, Note: note}
		for _, k := range s.Keys {
			if v, ok := s.Float(k); ok {
				c.Bars = append(c.Bars, Bar{Label: k, Value: v})
			}
		}
		return []Comparison{c}
	}
	var out []Comparison
	for _, sp := range ss {
		c := Comparison{Bench: bench, Title: sp.title, Unit: sp.unit, Better: sp.better, Source: s.Line, Note: note, Distribution: sp.dist}
		for _, b := range sp.bars {
			if v, ok := s.Float(b[1]); ok && !math.IsNaN(v) {
				c.Bars = append(c.Bars, Bar{Label: b[0], Value: v})
			}
		}
		if sp.aim != nil {
			c.Aim, c.Figure, c.Met = sp.aim(s)
		}
		out = append(out, c)
	}
	return out
}
