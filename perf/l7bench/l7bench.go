// Package l7bench measures the cost of the mesh's L7 path for HTTP/1.1
// between two pods on two nodes of the lab, three ways in one run, side
// by side:
//
//   - direct: the client sends to the server pod's IP; no mesh on the
//     path (pods labelled fibmesh.io/capture: disabled);
//   - fibmesh: the client sends to the Service's VIP, whose port is named
//     http-web; both nodes' agents capture the requests and carry them
//     over their mTLS tunnel, request by request (the L7 path). Each run
//     is checked: answers that carry the x-forwarded-client-cert the
//     server's agent added, with the client's SPIFFE ID, show the L7
//     path; without it the agents' /connections must show the bytes
//     carried over mTLS with both pods' SPIFFE IDs (the L4 path), else
//     the row fails;
//   - haproxy: Debian's haproxy as a sidecar pair in HTTP mode with
//     mTLS: plaintext HTTP into an haproxy in the client pod, HTTP over
//     TLS 1.3 with a client certificate to an haproxy in the server pod
//     that requires one, plaintext HTTP to the app.
//
// The server answers every request with a 1 KB body ("bench-l7 serve",
// Handler); the client is "bench-l7 load" (RunLoad), run inside the
// client pod's network namespace so that the mesh captures its
// connections. Each round of each row has two phases:
//
//   - fixed rate: an open-loop generator sends a constant 1,000 requests
//     per second over many keep-alive connections and measures each
//     latency from when the request was due, so a stall delays every
//     request behind it and is counted (no coordinated omission). The
//     added latency of a row is its percentile less direct's in the same
//     round;
//   - full load: a closed loop over 64 connections, as fast as the path
//     answers, for a fixed time: requests per second, and the proxies'
//     CPU (utime+stime from /proc, both processes of the pair) per 1,000
//     requests and their resident memory.
//
// Rows alternate within each round; the figures are medians over the
// rounds.
package l7bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fibmesh/fibmesh/internal/quantile"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/perf/benchlab"
)

// Mode is one way of carrying the client's requests to the server.
type Mode string

// The modes (the table's rows), in the order the table lists them.
const (
	ModeDirect  Mode = "direct"
	ModeFibmesh Mode = "fibmesh"
	ModeHAProxy Mode = "haproxy"
)

// AllModes are the modes of a full run.
var AllModes = []Mode{ModeDirect, ModeFibmesh, ModeHAProxy}

// ParseModes reads a comma-separated list of modes ("direct,haproxy").
func ParseModes(s string) ([]Mode, error) {
	var out []Mode
	for f := range strings.SplitSeq(s, ",") {
		m := Mode(strings.TrimSpace(f))
		if !slices.Contains(AllModes, m) {
			return nil, fmt.Errorf("--modes: unknown mode %q (want a comma-separated list of direct, fibmesh, haproxy)", f)
		}
		if slices.Contains(out, m) {
			return nil, fmt.Errorf("--modes: %q given twice", m)
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Mode) int { return slices.Index(AllModes, a) - slices.Index(AllModes, b) })
	return out, nil
}

// Options configure Run.
type Options struct {
	// Bin is the directory holding fibmesh-lab, fibmesh-controller and
	// fibmesh-agent (make build).
	Bin string
	// Self is the bench-l7 binary: its serve subcommand is the server
	// app, its load subcommand the client.
	Self string
	// Prefix and StateDir are the lab's (default fm-l7- and
	// DefaultStateDir).
	Prefix, StateDir string
	// Rounds of every mode (default 3).
	Rounds int
	// Rate of the fixed-rate phase, requests per second (default 1,000),
	// over Conns keep-alive connections (default 32), for Duration
	// (default 10 s).
	Rate     float64
	Conns    int
	Duration time.Duration
	// LoadConns connections (default 64) send as fast as they are
	// answered in the full-load phase, for LoadDuration (default 5 s).
	LoadConns    int
	LoadDuration time.Duration
	// Warmup precedes each phase, not measured (default 1 s).
	Warmup time.Duration
	// Size of every answer's body (default 1,024 bytes) and of every
	// request's head (default 256 bytes).
	Size, RequestSize int
	// Modes to run (default AllModes). The lab runs its mesh only when
	// ModeFibmesh is among them.
	Modes []Mode
	// Timeout bounds bringing the lab up and each mode's first probe
	// (default 3 min).
	Timeout time.Duration
	// ProfileDir, when not empty, receives a CPU profile of each agent
	// (agent-<node>.pprof) recorded during the fibmesh mode's first
	// full-load phase: where the agents' CPU per request goes.
	ProfileDir string
	// Out receives progress.
	Out io.Writer
}

func (o Options) withDefaults() Options {
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if o.Rate <= 0 {
		o.Rate = 1000
	}
	if o.Conns <= 0 {
		o.Conns = 32
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.LoadConns <= 0 {
		o.LoadConns = 64
	}
	if o.LoadDuration <= 0 {
		o.LoadDuration = 5 * time.Second
	}
	if o.Warmup < 0 {
		o.Warmup = 0
	}
	if o.Size <= 0 {
		o.Size = DefaultBodySize
	}
	if o.RequestSize <= 0 {
		o.RequestSize = 256
	}
	if len(o.Modes) == 0 {
		o.Modes = AllModes
	}
	if o.Prefix == "" {
		o.Prefix = "fm-l7-"
	}
	if o.Timeout <= 0 {
		o.Timeout = 3 * time.Minute
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	return o
}

// DefaultStateDir is the lab's state directory: a fixed one, so that a
// run that was killed before it took its lab down has its lab's kubelet
// stopped by the next run's "fibmesh-lab up".
var DefaultStateDir = filepath.Join(filepath.Dir(lab.DefaultStateDir), "bench-l7")

// MaxErrorRate is the share of failed requests above which a run fails
// its mode.
const MaxErrorRate = 0.01

// MaxDrainShare is how long, as a share of the fixed-rate phase, its
// answers may keep coming after the phase's end before the bench warns
// that the path is slower than the rate: its latencies are then mostly a
// queue's.
const MaxDrainShare = 0.05

// Sample is one round of one mode.
type Sample struct {
	Round int `json:"round"`
	// Fixed is the fixed-rate phase, Full the full-load phase.
	Fixed LoadResult `json:"fixedRate"`
	Full  LoadResult `json:"fullLoad"`
	// FixedCPU and FullCPU are the proxies' CPU seconds during each
	// phase (warm-up included: the reads are taken around the
	// generator's process); CPUPer1k is FullCPU in milliseconds per
	// 1,000 requests answered in the full-load phase, warm-up included
	// (LoadResult.Answered), FixedCPUPer1k the same at the fixed rate.
	FixedCPU      float64 `json:"fixedCPUSeconds"`
	FullCPU       float64 `json:"fullCPUSeconds"`
	CPUPer1k      float64 `json:"cpuMsPer1000"`
	FixedCPUPer1k float64 `json:"fixedCPUMsPer1000"`
	// RSSMB is the largest resident set of the proxies after the
	// full-load phase, MiB.
	RSSMB float64 `json:"rssMB"`
}

// ModeResult is what one mode measured, or why it failed.
type ModeResult struct {
	Mode Mode `json:"mode"`
	// Path says what carries the requests; Proxies are the processes
	// whose CPU and memory are counted (none for direct).
	Path    string   `json:"path"`
	Proxies []string `json:"proxies,omitempty"`
	Samples []Sample `json:"samples"`
	// Carried says how the fibmesh mode's requests were seen to travel:
	// the L7 path or the L4 one, and the evidence.
	Carried string `json:"carried,omitempty"`
	// Error is why the mode failed; its samples up to then are kept.
	Error string `json:"error,omitempty"`
}

// Median returns the median over the samples of f.
func (m *ModeResult) Median(f func(Sample) float64) float64 {
	xs := make([]float64, len(m.Samples))
	for i, s := range m.Samples {
		xs[i] = f(s)
	}
	return quantile.Median(xs)
}

func (m *ModeResult) ok() bool { return m != nil && m.Error == "" && len(m.Samples) > 0 }

// Result is a run.
type Result struct {
	Rounds       int           `json:"rounds"`
	Rate         float64       `json:"rate"`
	Conns        int           `json:"conns"`
	Duration     string        `json:"duration"`
	LoadConns    int           `json:"loadConns"`
	LoadDuration string        `json:"loadDuration"`
	Warmup       string        `json:"warmup"`
	Size         int           `json:"size"`
	RequestSize  int           `json:"requestSize"`
	Modes        []*ModeResult `json:"modes"`
	// CPUs and the 1-minute load average before and after the rounds:
	// other work on the machine shows as load the bench did not make.
	CPUs      int     `json:"cpus"`
	LoadStart float64 `json:"loadStart"`
	LoadEnd   float64 `json:"loadEnd"`
}

// Mode returns the result of m, nil if it was not run.
func (r *Result) Mode(m Mode) *ModeResult {
	for _, mr := range r.Modes {
		if mr.Mode == m {
			return mr
		}
	}
	return nil
}

// Failed returns the errors of the modes that failed, one per mode.
func (r *Result) Failed() error {
	var errs []error
	for _, m := range r.Modes {
		if m.Error != "" {
			errs = append(errs, fmt.Errorf("%s mode: %s", m.Mode, m.Error))
		}
	}
	return errors.Join(errs...)
}

// Added returns the latency mode m adds over direct at the fixed rate,
// by the percentile q picks: per round, m's figure less direct's of the
// same round, then the median over the rounds both measured. ok is
// false when no round has both.
func (r *Result) Added(m Mode, q func(Summary) float64) (us float64, ok bool) {
	mm, d := r.Mode(m), r.Mode(ModeDirect)
	if mm == nil || d == nil || len(mm.Samples) == 0 {
		return 0, false
	}
	var diffs []float64
	for _, s := range mm.Samples {
		for _, ds := range d.Samples {
			if ds.Round == s.Round {
				diffs = append(diffs, q(s.Fixed.Latency)-q(ds.Fixed.Latency))
			}
		}
	}
	if len(diffs) == 0 {
		return 0, false
	}
	return quantile.Median(diffs), true
}

// The percentiles of a Summary, for Added.
var (
	P50 = func(s Summary) float64 { return s.P50 }
	P90 = func(s Summary) float64 { return s.P90 }
	P99 = func(s Summary) float64 { return s.P99 }
)

func fullRate(s Sample) float64 { return s.Full.Rate() }

// Line returns the contract line,
//
//	l7-mesh: rps=<n> haproxy_rps=<n> direct_rps=<n> added_p50_us=<n> added_p99_us=<n> haproxy_added_p99_us=<n> cpu_ms_per_1k=<n> rss_mb=<n>
//
// from the medians: rps the full-load requests per second of fibmesh,
// haproxy and direct; the latency fibmesh adds over direct at the fixed
// rate (p50, p99) and haproxy's (p99); the agents' CPU milliseconds per
// 1,000 requests at full load and their largest resident set (MiB). It
// is an error unless all three modes ran and none failed.
func (r *Result) Line() (string, error) {
	var ms [3]*ModeResult
	for i, m := range []Mode{ModeFibmesh, ModeHAProxy, ModeDirect} {
		ms[i] = r.Mode(m)
		if ms[i] == nil {
			return "", fmt.Errorf("no l7-mesh line: the %s mode did not run (--modes)", m)
		}
		if !ms[i].ok() {
			return "", fmt.Errorf("no l7-mesh line: the %s mode failed", m)
		}
	}
	a50, _ := r.Added(ModeFibmesh, P50)
	a99, _ := r.Added(ModeFibmesh, P99)
	h99, _ := r.Added(ModeHAProxy, P99)
	f := ms[0]
	return fmt.Sprintf("l7-mesh: rps=%.0f haproxy_rps=%.0f direct_rps=%.0f added_p50_us=%.0f added_p99_us=%.0f haproxy_added_p99_us=%.0f cpu_ms_per_1k=%.1f rss_mb=%.1f",
		f.Median(fullRate), ms[1].Median(fullRate), ms[2].Median(fullRate), a50, a99, h99,
		f.Median(func(s Sample) float64 { return s.CPUPer1k }), f.Median(func(s Sample) float64 { return s.RSSMB })), nil
}

// WriteTable prints one row per mode (medians, and each round's figures
// beside them), how the fibmesh row was carried, and the comparisons the
// aims are stated in.
func (r *Result) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "fixed rate: %.0f req/s open loop over %d connections for %s; full load: %d connections closed loop for %s; %s warm-up each; %d-byte answers, %d-byte requests; medians of %d rounds\n",
		r.Rate, r.Conns, r.Duration, r.LoadConns, r.LoadDuration, r.Warmup, r.Size, r.RequestSize, r.Rounds)
	for _, m := range r.Modes {
		if len(m.Samples) == 0 {
			fmt.Fprintf(w, "%-8s FAILED  path: %s\n", m.Mode, m.Path)
			continue
		}
		med := func(f func(Sample) float64) float64 { return m.Median(f) }
		status := ""
		if m.Error != "" {
			status = " (FAILED)"
		}
		fmt.Fprintf(w, "%-8s%s rps=%.0f  at %.0f req/s: p50=%.0fus p90=%.0fus p99=%.0fus p99.9=%.0fus",
			m.Mode, status, med(fullRate), r.Rate,
			med(func(s Sample) float64 { return s.Fixed.Latency.P50 }), med(func(s Sample) float64 { return s.Fixed.Latency.P90 }),
			med(func(s Sample) float64 { return s.Fixed.Latency.P99 }), med(func(s Sample) float64 { return s.Fixed.Latency.P999 }))
		if m.Mode != ModeDirect {
			a50, ok50 := r.Added(m.Mode, P50)
			a90, _ := r.Added(m.Mode, P90)
			a99, _ := r.Added(m.Mode, P99)
			if ok50 {
				fmt.Fprintf(w, "  added p50=%.0fus p90=%.0fus p99=%.0fus", a50, a90, a99)
			}
		}
		if len(m.Proxies) > 0 {
			fmt.Fprintf(w, "  proxies: %.2f CPU-ms/1k req at full load, %.2f at %.0f req/s, RSS %.1f MiB",
				med(func(s Sample) float64 { return s.CPUPer1k }), med(func(s Sample) float64 { return s.FixedCPUPer1k }), r.Rate,
				med(func(s Sample) float64 { return s.RSSMB }))
		}
		var rs []string
		for _, s := range m.Samples {
			rs = append(rs, fmt.Sprintf("%.0f", s.Full.Rate()))
		}
		fmt.Fprintf(w, "  rps by round: %s\n", strings.Join(rs, " "))
		fmt.Fprintf(w, "%-8s path: %s\n", "", m.Path)
	}
	if r.CPUs > 0 {
		fmt.Fprintf(w, "machine: %d CPUs, load average %.2f before the rounds, %.2f after\n", r.CPUs, r.LoadStart, r.LoadEnd)
	}
	for _, m := range r.Modes {
		if m.Carried != "" {
			fmt.Fprintf(w, "%s carried: %s\n", m.Mode, m.Carried)
		}
		if m.Error != "" {
			fmt.Fprintf(w, "%s FAILED: %s\n", m.Mode, m.Error)
		}
	}
	f, h := r.Mode(ModeFibmesh), r.Mode(ModeHAProxy)
	if f.ok() && h.ok() {
		cpu := func(s Sample) float64 { return s.CPUPer1k }
		a99, _ := r.Added(ModeFibmesh, P99)
		fmt.Fprintf(w, "fibmesh vs haproxy: rps %.2fx, CPU-ms per 1k requests %.2fx (aim < 1x); fibmesh added p99 %.0fus (aim <= 100us)\n",
			f.Median(fullRate)/max(h.Median(fullRate), 1e-9), f.Median(cpu)/max(h.Median(cpu), 1e-9), a99)
	}
}

// WriteJSON writes the result to path, creating its directory.
func (r *Result) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// runner is one run's lab and state.
type runner struct {
	o    Options
	t    Topology
	lab  *benchlab.Lab
	mesh bool
}

// Run builds the lab, measures every mode Rounds times and takes the lab
// down (also when it fails or ctx is cancelled). The error is for a run
// that could not measure at all (tools missing, the lab not coming up); a
// mode that fails is reported in its ModeResult (Result.Failed).
func Run(ctx context.Context, o Options) (res *Result, err error) {
	o = o.withDefaults()
	for _, tool := range []string{"haproxy", "nsenter", "ss"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is not installed: run hack/deps.sh bench-l4 as root (make bench-l7 does)", tool)
		}
	}
	haproxy, _ := exec.LookPath("haproxy")
	bin, err := filepath.Abs(o.Bin)
	if err != nil {
		return nil, err
	}
	if o.Self == "" {
		return nil, errors.New("l7bench: Options.Self (the bench-l7 binary) is empty")
	}
	labBin := filepath.Join(bin, "fibmesh-lab")
	if _, err := os.Stat(labBin); err != nil {
		return nil, fmt.Errorf("%w (run make build first, or give --bin)", err)
	}
	r := &runner{o: o, t: DefaultTopology(), mesh: slices.Contains(o.Modes, ModeFibmesh),
		lab: &benchlab.Lab{Bin: labBin, Prefix: o.Prefix, StateDir: o.StateDir}}
	if r.lab.StateDir == "" {
		r.lab.StateDir = DefaultStateDir
	}
	work, err := os.MkdirTemp("", "fibmesh-bench-l7-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	manifests, pki := filepath.Join(work, "manifests"), filepath.Join(work, "pki")
	for _, d := range []string{manifests, pki} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	var files Files
	if files.PKIFiles, err = benchlab.WritePKI(pki, r.t.PKISpec()); err != nil {
		return nil, err
	}
	files.HAProxyClient, files.HAProxyServer = filepath.Join(pki, "haproxy-client.cfg"), filepath.Join(pki, "haproxy-server.cfg")
	for path, text := range map[string]string{
		files.HAProxyClient:                 HAProxyClientConfig(r.t, files),
		files.HAProxyServer:                 HAProxyServerConfig(r.t, files),
		filepath.Join(manifests, "l7.yaml"): Manifests(r.t, o.Self, haproxy, o.Size, files),
	} {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			return nil, err
		}
	}
	what := "no mesh"
	if r.mesh {
		what = "controller and agents"
	}
	fmt.Fprintf(o.Out, "lab: 2 nodes, %s, prefix %s (fibmesh-lab up -f %s)\n", what, o.Prefix, manifests)
	defer func() {
		if derr := r.lab.Down(); derr != nil {
			err = errors.Join(err, derr)
		}
	}()
	if err := r.lab.Up(ctx, manifests, r.mesh, o.Timeout); err != nil {
		return nil, err
	}
	if err := r.inspect(ctx); err != nil {
		return nil, err
	}

	res = &Result{Rounds: o.Rounds, Rate: o.Rate, Conns: o.Conns, Duration: o.Duration.String(),
		LoadConns: o.LoadConns, LoadDuration: o.LoadDuration.String(), Warmup: o.Warmup.String(),
		Size: o.Size, RequestSize: o.RequestSize, CPUs: runtime.NumCPU(), LoadStart: benchlab.Loadavg()}
	defer func() { res.LoadEnd = benchlab.Loadavg() }()
	fmt.Fprintf(o.Out, "machine: %d CPUs, load average %.2f\n", res.CPUs, res.LoadStart)
	for _, m := range o.Modes {
		mr := &ModeResult{Mode: m, Path: r.path(m), Proxies: r.proxyNames(m)}
		res.Modes = append(res.Modes, mr)
		if err := r.probe(ctx, m); err != nil {
			mr.Error = err.Error()
			fmt.Fprintf(o.Out, "%s: FAILED before the first round: %v\n", m, err)
		}
	}
	for round := 1; round <= o.Rounds; round++ {
		for i := range res.Modes {
			// Rotate the order so that no mode always runs first.
			mr := res.Modes[(i+round-1)%len(res.Modes)]
			if mr.Error != "" {
				continue
			}
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			s, err := r.sample(ctx, mr, round)
			if err != nil && ctx.Err() != nil {
				return res, ctx.Err() // interrupted: not the mode's failure
			}
			if err != nil {
				mr.Error = fmt.Sprintf("round %d: %v", round, err)
				fmt.Fprintf(o.Out, "round %d %-8s FAILED: %v\n", round, mr.Mode, err)
				continue
			}
			mr.Samples = append(mr.Samples, s)
			fmt.Fprintf(o.Out, "round %d %-8s %s\n", round, mr.Mode, s.describe(r.o.Rate, len(mr.Proxies) > 0))
		}
	}
	return res, nil
}

func (s Sample) describe(rate float64, proxies bool) string {
	l := s.Fixed.Latency
	line := fmt.Sprintf("at %.0f req/s: p50 %.0fus p90 %.0fus p99 %.0fus (%d answered, %d errors)  full load: %.0f req/s (%d errors)",
		rate, l.P50, l.P90, l.P99, s.Fixed.Requests, s.Fixed.Errors, s.Full.Rate(), s.Full.Errors)
	if proxies {
		line += fmt.Sprintf("  proxies: %.2f CPU-ms/1k req, RSS %.1f MiB", s.CPUPer1k, s.RSSMB)
	}
	return line
}

// inspect reads the lab's pods and nodes, reports their enrolment and
// waits until the apps and haproxy listen.
func (r *runner) inspect(ctx context.Context) error {
	if err := r.lab.Inspect(ctx); err != nil {
		return err
	}
	for _, p := range r.lab.Pods {
		enrol := p.Enrolment
		if enrol == "" {
			enrol = "not enrolled"
		}
		fmt.Fprintf(r.o.Out, "pod %-26s %-6s %-12s %s\n", p.Namespace+"/"+p.Name, p.Node, p.IP, enrol)
	}
	t := r.t
	return r.lab.WaitListening(ctx, map[string][]int{
		r.mesh2("server"):       {t.HTTPPort},
		r.plain("server-plain"): {t.HTTPPort, t.TLSPort},
		r.plain("client-plain"): {t.ProxyPort},
		r.mesh2("client"):       nil,
	}, r.o.Timeout)
}

func (r *runner) mesh2(name string) string { return r.t.MeshNamespace + "/" + name }
func (r *runner) plain(name string) string { return r.t.PlainNamespace + "/" + name }

// client returns the pod a mode's client runs in, the address it dials
// and the Host its requests carry.
func (r *runner) client(m Mode) (pod, addr, host string) {
	t := r.t
	hp := func(ip fmt.Stringer, p int) string { return ip.String() + ":" + strconv.Itoa(p) }
	switch m {
	case ModeFibmesh:
		return r.mesh2("client"), hp(t.ServiceIP, t.HTTPPort), t.ServiceHost()
	case ModeHAProxy:
		return r.plain("client-plain"), "127.0.0.1:" + strconv.Itoa(t.ProxyPort), hp(t.PlainServerIP, t.HTTPPort)
	default:
		return r.plain("client-plain"), hp(t.PlainServerIP, t.HTTPPort), hp(t.PlainServerIP, t.HTTPPort)
	}
}

func (r *runner) path(m Mode) string {
	switch m {
	case ModeFibmesh:
		return "client -> VIP:http -> agent(node1) =mTLS=> agent(node2) -> server"
	case ModeHAProxy:
		return "client-plain -> haproxy(client pod, mode http) =mTLS=> haproxy(server pod, mode http) -> server-plain"
	default:
		return "client-plain -> server-plain (pod IP, no mesh)"
	}
}

func (r *runner) proxyNames(m Mode) []string {
	switch m {
	case ModeFibmesh:
		return []string{"agent-" + r.t.ClientNode, "agent-" + r.t.ServerNode}
	case ModeHAProxy:
		return []string{r.plain("client-plain") + "/haproxy", r.plain("server-plain") + "/haproxy"}
	}
	return nil
}

func (r *runner) proxyPIDs(ctx context.Context, m Mode) ([]int, error) {
	names := r.proxyNames(m)
	if len(names) == 0 {
		return nil, nil
	}
	comm := "fibmesh-agent"
	if m == ModeHAProxy {
		comm = "haproxy"
	}
	return r.lab.PIDs(ctx, comm, names...)
}

// probeTimeout bounds one request of a probe.
const probeTimeout = 2 * time.Second

// probe checks, before the first round, that a mode's path answers,
// retrying for up to a minute (the agents may still be taking their
// configuration).
func (r *runner) probe(ctx context.Context, m Mode) error {
	pod, addr, host := r.client(m)
	deadline := time.Now().Add(min(r.o.Timeout, time.Minute))
	for {
		res, err := r.load(ctx, pod, LoadOptions{Addr: addr, Host: host, Conns: 1, Duration: 200 * time.Millisecond, Timeout: probeTimeout,
			RequestSize: r.o.RequestSize, BodySize: r.o.Size})
		if err == nil && res.Requests > 0 && res.Errors == 0 {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("%d answered, %d failed: %s", res.Requests, res.Errors, res.FirstError)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			hint := ""
			if m == ModeFibmesh {
				hint = " (is the agents' slow path proxy wired, and the pods captured?)"
			}
			return fmt.Errorf("%s cannot get answers from %s%s: %w", pod, addr, hint, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// load runs "bench-l7 load" in pod's network namespace.
func (r *runner) load(ctx context.Context, pod string, o LoadOptions) (LoadResult, error) {
	netns, err := r.lab.Netns(pod)
	if err != nil {
		return LoadResult{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, o.Warmup+o.Duration+o.Timeout+30*time.Second)
	defer cancel()
	out, err := benchlab.Exec(cctx, netns, append([]string{r.o.Self, "load"}, o.Args()...)...)
	if err != nil {
		return LoadResult{}, err
	}
	return ParseLoad(out)
}

// sample measures one round of mode m: the fixed-rate phase, then the
// full-load phase, each between two reads of the proxies' CPU time, then
// checks that the requests took the mode's path.
func (r *runner) sample(ctx context.Context, mr *ModeResult, round int) (Sample, error) {
	m := mr.Mode
	s := Sample{Round: round}
	pod, addr, host := r.client(m)
	pids, err := r.proxyPIDs(ctx, m)
	if err != nil {
		return s, err
	}
	phase := func(o LoadOptions) (LoadResult, float64, error) {
		o.Addr, o.Host, o.Warmup, o.Timeout, o.RequestSize, o.BodySize = addr, host, r.o.Warmup, probeTimeout, r.o.RequestSize, r.o.Size
		c0, err := benchlab.CPUSeconds(pids)
		if err != nil {
			return LoadResult{}, 0, err
		}
		res, err := r.load(ctx, pod, o)
		if err != nil {
			return res, 0, err
		}
		c1, err := benchlab.CPUSeconds(pids)
		if err != nil {
			return res, 0, err
		}
		if res.ErrorRate() > MaxErrorRate {
			return res, 0, fmt.Errorf("%d of %d requests to %s failed (more than %.0f%%); the first: %s", res.Errors, res.Errors+res.Requests, addr, MaxErrorRate*100, res.FirstError)
		}
		if res.Requests == 0 {
			return res, 0, fmt.Errorf("no request to %s was answered in %.1f s", addr, res.Seconds)
		}
		return res, c1 - c0, nil
	}
	since := time.Now()
	if s.Fixed, s.FixedCPU, err = phase(LoadOptions{Rate: r.o.Rate, Conns: r.o.Conns, Duration: r.o.Duration}); err != nil {
		return s, fmt.Errorf("fixed rate: %w", err)
	}
	s.FixedCPUPer1k = perK(s.FixedCPU, s.Fixed.Answered)
	if s.Fixed.Drain > MaxDrainShare*r.o.Duration.Seconds() {
		fmt.Fprintf(r.o.Out, "round %d %-8s warning: answers kept coming %.2f s after the %.0f req/s phase ended: the path is slower than the rate, its latencies are a queue's\n",
			round, m, s.Fixed.Drain, r.o.Rate)
	}
	if err := r.verify(ctx, mr, s.Fixed, since); err != nil {
		return s, err
	}
	var profiled func() error
	if m == ModeFibmesh && r.o.ProfileDir != "" && len(mr.Samples) == 0 {
		profiled = r.profile(ctx, r.o.Warmup+r.o.LoadDuration)
	}
	if s.Full, s.FullCPU, err = phase(LoadOptions{Conns: r.o.LoadConns, Duration: r.o.LoadDuration}); err != nil {
		return s, fmt.Errorf("full load: %w", err)
	}
	if profiled != nil {
		if err := profiled(); err != nil {
			fmt.Fprintf(r.o.Out, "round %d %-8s warning: %v\n", round, m, err)
		}
	}
	s.CPUPer1k = perK(s.FullCPU, s.Full.Answered)
	if len(pids) > 0 {
		rss, _, err := benchlab.RSS(pids)
		if err != nil {
			return s, err
		}
		s.RSSMB = float64(slices.Max(rss)) / (1 << 20)
	}
	return s, nil
}

// profile starts recording both agents' CPU for d, and returns the
// function that waits for the profiles and writes them to ProfileDir.
// The profiles' own cost lands in the phase's CPU figures (a few per
// cent): profile a run whose figures are not the ones quoted.
func (r *runner) profile(ctx context.Context, d time.Duration) func() error {
	nodes := []string{r.t.ClientNode, r.t.ServerNode}
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, node := range nodes {
		wg.Go(func() {
			b, err := r.lab.AgentProfile(ctx, node, d)
			if err == nil {
				err = os.MkdirAll(r.o.ProfileDir, 0o755)
			}
			if err == nil {
				path := filepath.Join(r.o.ProfileDir, "agent-"+node+".pprof")
				if err = os.WriteFile(path, b, 0o644); err == nil {
					fmt.Fprintf(r.o.Out, "CPU profile of %s's agent during full load: %s (go tool pprof -top %s)\n", node, path, path)
				}
			}
			errs[i] = err
		})
	}
	return func() error {
		wg.Wait()
		return errors.Join(errs...)
	}
}

// perK is CPU seconds over n requests in milliseconds per 1,000 requests.
func perK(cpu float64, n int64) float64 {
	if n <= 0 {
		return 0
	}
	return cpu * 1e6 / float64(n)
}

// verify checks where a fixed-rate run's requests went (see Carried and
// the package comment).
func (r *runner) verify(ctx context.Context, mr *ModeResult, res LoadResult, since time.Time) error {
	t := r.t
	if mr.Mode != ModeFibmesh {
		if res.XFCC > 0 {
			return fmt.Errorf("%d answers carried an x-forwarded-client-cert (%q): a mesh proxy handled requests of a pod outside the mesh", res.XFCC, res.XFCCSample)
		}
		if !r.mesh {
			return nil
		}
		for node, pod := range map[string]string{t.ClientNode: r.plain("client-plain"), t.ServerNode: r.plain("server-plain")} {
			cs, err := r.lab.Connections(ctx, node, pod, "")
			if err != nil {
				return err
			}
			log := benchlab.ConnLog{}
			log.Add(cs)
			if got := log.Since(pod, since); len(got) > 0 {
				return fmt.Errorf("%s is labelled %s, yet %s's agent proxied %d of its connections (first: %s -> %s): the %s figures would include the agent", pod, outsideMesh, node, len(got), got[0].Source, got[0].Destination, mr.Mode)
			}
		}
		return nil
	}
	carried, err := r.carried(ctx, res, since)
	if err != nil {
		return err
	}
	if mr.Carried != "" && mr.Carried != carried {
		carried += " (earlier rounds: " + mr.Carried + ")"
	}
	mr.Carried = carried
	return nil
}

// carried says how the fibmesh row's requests travelled: through the L7
// path when the server's answers return an x-forwarded-client-cert with
// the client's SPIFFE ID (the server's agent verified the client's
// certificate and proxied the request as HTTP), else through the L4 path
// when both agents list mTLS connections between the two pods'
// identities; otherwise it is an error.
func (r *runner) carried(ctx context.Context, res LoadResult, since time.Time) (string, error) {
	t := r.t
	clientID, serverID := t.SpiffeID(t.MeshNamespace, "client"), t.SpiffeID(t.MeshNamespace, "server")
	if res.XFCC > 0 {
		return CheckXFCC(res, clientID)
	}
	var problems []string
	var tunnel string
	client, err := r.lab.Connections(ctx, t.ClientNode, r.mesh2("client"), "")
	if err != nil {
		return "", err
	}
	server, err := r.lab.Connections(ctx, t.ServerNode, r.mesh2("server"), "")
	if err != nil {
		return "", err
	}
	dest := t.ServiceIP.String() + ":" + strconv.Itoa(t.HTTPPort)
	if tunnel = MTLSConn(client, "outbound", dest, serverID, since); tunnel == "" {
		problems = append(problems, fmt.Sprintf("the client's agent lists no mTLS connection of %s to %s with peer %s (%d entries)", r.mesh2("client"), dest, serverID, len(client)))
	}
	if MTLSConn(server, "inbound", "", clientID, since) == "" {
		problems = append(problems, fmt.Sprintf("the server's agent lists no mTLS connection to %s with peer %s (%d entries)", r.mesh2("server"), clientID, len(server)))
	}
	if len(problems) > 0 {
		return "", fmt.Errorf("the requests did not go through the agents' mTLS tunnel: no answer carried an x-forwarded-client-cert (L7) and %s", strings.Join(problems, "; "))
	}
	return "L4 path: the agents relayed the port's bytes over mTLS (" + tunnel + ", both pods' SPIFFE IDs verified); no x-forwarded-client-cert, so not the L7 proxy", nil
}

// CheckXFCC checks a fibmesh run's answers for the L7 path: at least
// MinXFCCShare of them returned an x-forwarded-client-cert, and it names
// clientID (URI=<id>). It says what it saw.
func CheckXFCC(res LoadResult, clientID string) (string, error) {
	if !strings.Contains(res.XFCCSample, "URI="+clientID) {
		return "", fmt.Errorf("the server saw x-forwarded-client-cert %q, which does not name the client's SPIFFE ID (URI=%s)", res.XFCCSample, clientID)
	}
	if float64(res.XFCC) < MinXFCCShare*float64(res.Requests) {
		return "", fmt.Errorf("only %d of %d answers carried an x-forwarded-client-cert: some requests bypassed the L7 proxy", res.XFCC, res.Requests)
	}
	return fmt.Sprintf("L7 path: %d of %d answers carried the x-forwarded-client-cert the server's agent added (%s)", res.XFCC, res.Requests, res.XFCCSample), nil
}

// MinXFCCShare is the share of a fibmesh run's answers that must carry an
// x-forwarded-client-cert for the run to count as the L7 path (every one
// should: the share only allows for none).
const MinXFCCShare = 1.0

// MTLSConn returns "<TLS version> <cipher>" of the first connection in cs
// in direction dir (to dest, when not empty) started since since, over
// TLS with peer as the verified peer identity; "" when there is none.
func MTLSConn(cs []benchlab.AgentConn, dir, dest, peer string, since time.Time) string {
	for _, c := range cs {
		if !strings.EqualFold(c.Direction, dir) || (dest != "" && c.Destination != dest) || c.Start.Before(since.Add(-time.Second)) {
			continue
		}
		if c.TLSVersion != "" && c.PeerIdentity == peer {
			return strings.TrimSpace(c.TLSVersion + " " + c.TLSCipher)
		}
	}
	return ""
}
