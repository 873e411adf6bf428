// Package l4bench measures L4 throughput and connection rate between two
// pods on two nodes of the lab, three ways in one run, side by side:
//
//   - direct: the client connects to the server pod's IP; no mesh on the
//     path (pods labelled fibmesh.io/capture: disabled);
//   - fibmesh: the client connects to the Service's VIP; both nodes'
//     fibmesh agents capture the connection and carry it over their mTLS
//     tunnel (TLS 1.3, SPIFFE SVIDs), in userspace. Every throughput run
//     is checked against both agents' /connections: a run the agents did
//     not carry, with both pods' SPIFFE IDs verified, fails the mode;
//   - haproxy: Debian's haproxy as a sidecar pair with mTLS, the two hops
//     a sidecar mesh makes: plaintext into an haproxy in the client pod,
//     TLS 1.3 with a client certificate to an haproxy in the server pod
//     that requires one, plaintext to the app.
//
// Throughput is iperf3 (one TCP stream, client to server, for a fixed
// time, as received); connections per second is "bench-l4 cps" (connect,
// send a few bytes, read the echo, close, from parallel workers) against
// the lab's echo app. The proxies' CPU (the two agents, the two haproxy
// processes: utime+stime from /proc) is read around each run and given
// per GB moved and per connection. Modes alternate within each round;
// the figures are the medians over the rounds.
package l4bench

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
	"text/tabwriter"
	"time"

	"github.com/fibmesh/fibmesh/internal/quantile"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/perf/benchlab"
)

// Mode is one way of carrying the client's bytes to the server.
type Mode string

// The modes, in the order the table lists them.
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
	if len(out) == 0 {
		return nil, errors.New("--modes: empty (want a comma-separated list of direct, fibmesh, haproxy)")
	}
	slices.SortFunc(out, func(a, b Mode) int { return slices.Index(AllModes, a) - slices.Index(AllModes, b) })
	return out, nil
}

// Options configure Run.
type Options struct {
	// Bin is the directory holding fibmesh-lab, fibmesh-controller and
	// fibmesh-agent (make build).
	Bin string
	// Self is the bench-l4 binary: its cps subcommand runs inside the
	// client pods.
	Self string
	// Prefix and StateDir are the lab's (default fm-l4- and
	// DefaultStateDir).
	Prefix, StateDir string
	// Rounds of every mode (default 3).
	Rounds int
	// Duration of each throughput run (whole seconds, default 5 s) and
	// of each connections-per-second run (CPSDuration, default 5 s).
	Duration, CPSDuration time.Duration
	// Workers of the connections-per-second run (default 8); Streams,
	// iperf3's parallel streams (default 1).
	Workers, Streams int
	// Modes to run (default AllModes). The lab runs its mesh only when
	// ModeFibmesh is among them.
	Modes []Mode
	// HAProxyNoReuse makes the client-side haproxy do a full TLS
	// handshake for every connection (no-ssl-reuse); by default it
	// resumes sessions, as installed.
	HAProxyNoReuse bool
	// Timeout bounds bringing the lab up and each mode's first probe
	// (default 3 min).
	Timeout time.Duration
	// Out receives progress.
	Out io.Writer
}

func (o Options) withDefaults() Options {
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.CPSDuration <= 0 {
		o.CPSDuration = 5 * time.Second
	}
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.Streams <= 0 {
		o.Streams = 1
	}
	if len(o.Modes) == 0 {
		o.Modes = AllModes
	}
	if o.Prefix == "" {
		o.Prefix = "fm-l4-"
	}
	if o.Timeout <= 0 {
		o.Timeout = 3 * time.Minute
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	return o
}

// Sample is one round of one mode.
type Sample struct {
	Round  int     `json:"round"`
	Stream Stream  `json:"stream"`
	Gbps   float64 `json:"gbps"`
	// ProxyCPU is the proxies' CPU seconds during the throughput run,
	// ProxyCPUPerGB the same per 10^9 bytes received.
	ProxyCPU      float64   `json:"proxyCPUSeconds"`
	ProxyCPUPerGB float64   `json:"proxyCPUSecondsPerGB"`
	CPS           CPSResult `json:"cpsRun"`
	Rate          float64   `json:"cps"`
	// CPSProxyCPU is the proxies' CPU seconds during the connections-
	// per-second run, CPSProxyCPUPerK the same per 1,000 connections
	// (CPU milliseconds per connection).
	CPSProxyCPU     float64 `json:"cpsProxyCPUSeconds"`
	CPSProxyCPUPerK float64 `json:"cpsProxyCPUSecondsPer1000Conns"`
}

// ModeResult is what one mode measured, or why it failed.
type ModeResult struct {
	Mode Mode `json:"mode"`
	// Path says what carries the bytes; Proxies are the processes whose
	// CPU is counted ("" for direct).
	Path    string   `json:"path"`
	Proxies []string `json:"proxies,omitempty"`
	Samples []Sample `json:"samples"`
	// Tunnel is the fibmesh tunnel's TLS version and cipher suite, as
	// the client's agent reports them.
	Tunnel string `json:"tunnel,omitempty"`
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

// Result is a run.
type Result struct {
	Rounds      int           `json:"rounds"`
	Duration    string        `json:"duration"`
	CPSDuration string        `json:"cpsDuration"`
	Workers     int           `json:"workers"`
	Streams     int           `json:"streams"`
	Modes       []*ModeResult `json:"modes"`
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

// Line returns the contract line,
//
//	l4-mesh: fibmesh_gbps=<n> haproxy_gbps=<n> direct_gbps=<n> fibmesh_cps=<n> haproxy_cps=<n>
//
// from the medians. It is an error unless all three modes ran and none
// failed.
func (r *Result) Line() (string, error) {
	var ms [3]*ModeResult
	for i, m := range []Mode{ModeFibmesh, ModeHAProxy, ModeDirect} {
		ms[i] = r.Mode(m)
		if ms[i] == nil {
			return "", fmt.Errorf("no l4-mesh line: the %s mode did not run (--modes)", m)
		}
		if ms[i].Error != "" || len(ms[i].Samples) == 0 {
			return "", fmt.Errorf("no l4-mesh line: the %s mode failed", m)
		}
	}
	gbps := func(s Sample) float64 { return s.Gbps }
	cps := func(s Sample) float64 { return s.Rate }
	return fmt.Sprintf("l4-mesh: fibmesh_gbps=%.3f haproxy_gbps=%.3f direct_gbps=%.3f fibmesh_cps=%.0f haproxy_cps=%.0f",
		ms[0].Median(gbps), ms[1].Median(gbps), ms[2].Median(gbps), ms[0].Median(cps), ms[1].Median(cps)), nil
}

// WriteTable prints the medians, one row per mode, each round's figures
// beside them, then the ratios the aims are stated in.
func (r *Result) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "mode\tGbit/s\tconn/s\tproxy CPU-s/GB\tproxy CPU-ms/conn\tGbit/s by round\tconn/s by round\tpath\n")
	for _, m := range r.Modes {
		if len(m.Samples) == 0 {
			fmt.Fprintf(tw, "%s\tFAILED\t\t\t\t\t\t%s\n", m.Mode, m.Path)
			continue
		}
		cpuGB, cpuConn := "-", "-"
		if len(m.Proxies) > 0 {
			cpuGB = fmt.Sprintf("%.2f", m.Median(func(s Sample) float64 { return s.ProxyCPUPerGB }))
			cpuConn = fmt.Sprintf("%.3f", m.Median(func(s Sample) float64 { return s.CPSProxyCPUPerK }))
		}
		var gs, cs []string
		for _, s := range m.Samples {
			gs = append(gs, fmt.Sprintf("%.2f", s.Gbps))
			cs = append(cs, fmt.Sprintf("%.0f", s.Rate))
		}
		status := ""
		if m.Error != "" {
			status = " (FAILED)"
		}
		fmt.Fprintf(tw, "%s%s\t%.3f\t%.0f\t%s\t%s\t%s\t%s\t%s\n", m.Mode, status,
			m.Median(func(s Sample) float64 { return s.Gbps }), m.Median(func(s Sample) float64 { return s.Rate }),
			cpuGB, cpuConn, strings.Join(gs, " "), strings.Join(cs, " "), m.Path)
	}
	tw.Flush()
	if r.CPUs > 0 {
		fmt.Fprintf(w, "machine: %d CPUs, load average %.2f before the rounds, %.2f after\n", r.CPUs, r.LoadStart, r.LoadEnd)
	}
	for _, m := range r.Modes {
		if m.Tunnel != "" {
			fmt.Fprintf(w, "%s tunnel: %s (as the agents report it)\n", m.Mode, m.Tunnel)
		}
		if m.Error != "" {
			fmt.Fprintf(w, "%s FAILED: %s\n", m.Mode, m.Error)
		}
	}
	ratio := func(a, b Mode, f func(Sample) float64) string {
		ma, mb := r.Mode(a), r.Mode(b)
		if ma == nil || mb == nil || ma.Error != "" || mb.Error != "" || len(ma.Samples) == 0 || len(mb.Samples) == 0 {
			return "n/a"
		}
		if d := mb.Median(f); d > 0 {
			return fmt.Sprintf("%.2fx", ma.Median(f)/d)
		}
		return "n/a"
	}
	gbps := func(s Sample) float64 { return s.Gbps }
	cps := func(s Sample) float64 { return s.Rate }
	fmt.Fprintf(w, "fibmesh vs haproxy: throughput %s, conn/s %s (aim >= 1x); fibmesh vs direct: throughput %s (aim >= 0.5x); haproxy vs direct: throughput %s\n",
		ratio(ModeFibmesh, ModeHAProxy, gbps), ratio(ModeFibmesh, ModeHAProxy, cps), ratio(ModeFibmesh, ModeDirect, gbps), ratio(ModeHAProxy, ModeDirect, gbps))
}

// DefaultStateDir is the lab's state directory: a fixed one, so that a
// run that was killed before it took its lab down has its lab's kubelet
// stopped by the next run's "fibmesh-lab up".
var DefaultStateDir = filepath.Join(filepath.Dir(lab.DefaultStateDir), "bench-l4")

// MaxErrorRate is the share of failed connections above which a
// connections-per-second run fails its mode.
const MaxErrorRate = 0.01

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
	for _, tool := range []string{"iperf3", "haproxy", "nsenter", "ss"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is not installed: run hack/deps.sh bench-l4 as root (make bench-l4 does)", tool)
		}
	}
	haproxy, _ := exec.LookPath("haproxy")
	bin, err := filepath.Abs(o.Bin)
	if err != nil {
		return nil, err
	}
	r := &runner{o: o, t: DefaultTopology(), mesh: slices.Contains(o.Modes, ModeFibmesh),
		lab: &benchlab.Lab{Bin: filepath.Join(bin, "fibmesh-lab"), Prefix: o.Prefix, StateDir: o.StateDir}}
	if _, err := os.Stat(r.lab.Bin); err != nil {
		return nil, fmt.Errorf("%w (run make build first, or give --bin)", err)
	}
	if o.Self == "" {
		return nil, errors.New("l4bench: Options.Self (the bench-l4 binary) is empty")
	}
	work, err := os.MkdirTemp("", "fibmesh-bench-l4-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	if r.lab.StateDir == "" {
		r.lab.StateDir = DefaultStateDir
	}
	manifests, pki := filepath.Join(work, "manifests"), filepath.Join(work, "pki")
	for _, d := range []string{manifests, pki} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	files, err := WritePKI(pki, r.t)
	if err != nil {
		return nil, err
	}
	files.HAProxyClient, files.HAProxyServer = filepath.Join(pki, "haproxy-client.cfg"), filepath.Join(pki, "haproxy-server.cfg")
	for path, text := range map[string]string{
		files.HAProxyClient:                 HAProxyClientConfig(r.t, files, o.HAProxyNoReuse),
		files.HAProxyServer:                 HAProxyServerConfig(r.t, files),
		filepath.Join(manifests, "l4.yaml"): Manifests(r.t, haproxy, files),
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

	res = &Result{Rounds: o.Rounds, Duration: o.Duration.String(), CPSDuration: o.CPSDuration.String(), Workers: o.Workers, Streams: o.Streams,
		CPUs: runtime.NumCPU(), LoadStart: benchlab.Loadavg()}
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
			fmt.Fprintf(o.Out, "round %d %-8s %s\n", round, mr.Mode, s.describe(len(mr.Proxies) > 0))
		}
	}
	return res, nil
}

func (s Sample) describe(proxies bool) string {
	line := fmt.Sprintf("%6.3f Gbit/s (%.2f GB in %.2f s, %d retransmits)  %6.0f conn/s (%d errors)",
		s.Gbps, float64(s.Stream.Bytes)/1e9, s.Stream.Seconds, s.Stream.Retransmits, s.Rate, s.CPS.Errors)
	if proxies {
		line += fmt.Sprintf("  proxies: %.2f CPU-s/GB, %.3f CPU-ms/conn", s.ProxyCPUPerGB, s.CPSProxyCPUPerK)
	}
	return line
}

// inspect reads the lab's pods and nodes, reports their enrolment, and
// tunes the pods' TCP for short connections.
func (r *runner) inspect(ctx context.Context) error {
	if err := r.lab.Inspect(ctx); err != nil {
		return err
	}
	for _, p := range r.lab.Pods {
		key := p.Namespace + "/" + p.Name
		enrol := p.Enrolment
		if enrol == "" {
			enrol = "not enrolled"
		}
		fmt.Fprintf(r.o.Out, "pod %-26s %-6s %-12s %s\n", key, p.Node, p.IP, enrol)
		if !r.mesh {
			continue
		}
		plain := p.Namespace == r.t.PlainNamespace
		if plain && strings.HasPrefix(p.Enrolment, "enrolled") {
			fmt.Fprintf(r.o.Out, "warning: %s is enrolled although labelled %s (the lab does not honour the label); its runs are checked against the agents' /connections\n", key, outsideMesh)
		}
	}
	for _, key := range []string{r.mesh2("client"), r.mesh2("server"), r.plain("client-plain"), r.plain("server-plain")} {
		ns, err := r.lab.Netns(key)
		if err != nil {
			return err
		}
		// Short connections from 8 workers leave many sockets in
		// TIME_WAIT; let connect reuse them, as load generators do.
		if out, err := benchlab.Exec(ctx, ns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse && echo '10000 65000' > /proc/sys/net/ipv4/ip_local_port_range"); err != nil {
			return fmt.Errorf("pod %s: tune TCP: %w: %s", key, err, out)
		}
	}
	// The kubelet starts containers but has no probe for them here (a
	// TCP probe would start an iperf3 test): wait for their listeners.
	t := r.t
	return r.lab.WaitListening(ctx, map[string][]int{
		r.mesh2("server"):       {t.StreamPort, t.EchoPort},
		r.plain("server-plain"): {t.StreamPort, t.EchoPort, t.TLSStreamPort, t.TLSEchoPort},
		r.plain("client-plain"): {t.ProxyStreamPort, t.ProxyEchoPort},
	}, r.o.Timeout)
}

func (r *runner) mesh2(name string) string { return r.t.MeshNamespace + "/" + name }
func (r *runner) plain(name string) string { return r.t.PlainNamespace + "/" + name }

// client returns the pod a mode's client runs in and the addresses it
// connects to for the stream and the echo.
func (r *runner) client(m Mode) (pod, stream, echo string) {
	t := r.t
	hp := func(ip fmt.Stringer, p int) string { return ip.String() + ":" + strconv.Itoa(p) }
	switch m {
	case ModeFibmesh:
		return r.mesh2("client"), hp(t.ServiceIP, t.StreamPort), hp(t.ServiceIP, t.EchoPort)
	case ModeHAProxy:
		return r.plain("client-plain"), "127.0.0.1:" + strconv.Itoa(t.ProxyStreamPort), "127.0.0.1:" + strconv.Itoa(t.ProxyEchoPort)
	default:
		return r.plain("client-plain"), hp(t.PlainServerIP, t.StreamPort), hp(t.PlainServerIP, t.EchoPort)
	}
}

func (r *runner) path(m Mode) string {
	switch m {
	case ModeFibmesh:
		return "client -> VIP -> agent(node1) =mTLS=> agent(node2) -> server"
	case ModeHAProxy:
		if r.o.HAProxyNoReuse {
			return "client-plain -> haproxy(client pod) =mTLS, no session reuse=> haproxy(server pod) -> server-plain"
		}
		return "client-plain -> haproxy(client pod) =mTLS=> haproxy(server pod) -> server-plain"
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

// proxyPIDs finds the processes of a mode's proxies in the lab's status
// and checks that each is the program it should be.
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

// probeTimeout bounds one connection of a probe.
const probeTimeout = 2 * time.Second

// probe checks, before the first round, that a mode's path carries an
// echo, retrying until the lab's timeout; for fibmesh it also checks that
// the agents serve /connections, without which no run could be verified.
func (r *runner) probe(ctx context.Context, m Mode) error {
	pod, _, echo := r.client(m)
	if m == ModeFibmesh {
		if _, err := r.lab.Connections(ctx, r.t.ClientNode, r.mesh2("client"), ""); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(min(r.o.Timeout, time.Minute))
	for {
		res, err := r.cps(ctx, pod, echo, CPSOptions{Workers: 1, Count: 1, Timeout: probeTimeout})
		if err == nil && res.Conns == 1 {
			return nil
		}
		if err == nil {
			err = errors.New(res.FirstError)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			hint := ""
			if m == ModeFibmesh {
				hint = " (is the agents' slow path proxy wired, and the pods captured?)"
			}
			return fmt.Errorf("%s cannot reach %s%s: %w", pod, echo, hint, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// cps runs "bench-l4 cps" in pod's network namespace.
func (r *runner) cps(ctx context.Context, pod, addr string, o CPSOptions) (CPSResult, error) {
	args := []string{r.o.Self, "cps", "--addr", addr, "--workers", strconv.Itoa(max(1, o.Workers)), "--timeout", o.Timeout.String()}
	if o.Count > 0 {
		args = append(args, "--count", strconv.Itoa(o.Count))
	} else {
		args = append(args, "--duration", o.Duration.String())
	}
	cctx, cancel := context.WithTimeout(ctx, o.Duration+o.Timeout+30*time.Second)
	defer cancel()
	out, err := r.exec(cctx, pod, args...)
	if err != nil {
		return CPSResult{}, err
	}
	return ParseCPS(out)
}

// sample measures one round of mode m: a throughput run, then a
// connections-per-second run, each between two reads of the proxies'
// CPU time.
func (r *runner) sample(ctx context.Context, mr *ModeResult, round int) (Sample, error) {
	m := mr.Mode
	s := Sample{Round: round}
	pod, stream, echo := r.client(m)
	pids, err := r.proxyPIDs(ctx, m)
	if err != nil {
		return s, err
	}

	// Throughput.
	var (
		st         Stream
		cpu0, cpu1 float64
		logs       map[string]benchlab.ConnLog
		start      time.Time
	)
	for attempt := 1; ; attempt++ {
		st, cpu0, cpu1, logs, start, err = r.throughput(ctx, m, pod, stream, pids)
		// An iperf3 server still finishing an aborted test refuses the
		// next one for a moment.
		if err == nil || !strings.Contains(err.Error(), "busy") || attempt == 3 {
			break
		}
		select {
		case <-ctx.Done():
			return s, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	if err != nil {
		return s, err
	}
	s.Stream, s.Gbps = st, st.Gbps()
	s.ProxyCPU = cpu1 - cpu0
	s.ProxyCPUPerGB = s.ProxyCPU / (float64(st.Bytes) / 1e9)
	if err := r.verify(mr, logs, st, start); err != nil {
		return s, err
	}

	// Connections per second.
	cpu0, err = benchlab.CPUSeconds(pids)
	if err != nil {
		return s, err
	}
	res, err := r.cps(ctx, pod, echo, CPSOptions{Workers: r.o.Workers, Duration: r.o.CPSDuration, Timeout: probeTimeout})
	if err != nil {
		return s, err
	}
	if cpu1, err = benchlab.CPUSeconds(pids); err != nil {
		return s, err
	}
	s.CPS, s.Rate = res, res.Rate()
	s.CPSProxyCPU = cpu1 - cpu0
	if res.Conns > 0 {
		s.CPSProxyCPUPerK = s.CPSProxyCPU / float64(res.Conns) * 1000
	}
	if res.ErrorRate() > MaxErrorRate {
		return s, fmt.Errorf("%d of %d connections to %s failed (more than %.0f%%); the first: %s", res.Errors, res.Errors+res.Conns, echo, MaxErrorRate*100, res.FirstError)
	}
	return s, nil
}

// throughput runs iperf3 once in pod against stream (host:port) and
// reads the proxies' CPU time just before and after it; the agents'
// connection tables are read half-way and after.
func (r *runner) throughput(ctx context.Context, m Mode, pod, stream string, pids []int) (st Stream, cpu0, cpu1 float64, logs map[string]benchlab.ConnLog, start time.Time, err error) {
	watch := r.watchConnections(ctx, m, r.o.Duration)
	start = time.Now()
	if cpu0, err = benchlab.CPUSeconds(pids); err != nil {
		watch.stop(ctx)
		return
	}
	host, p, _ := strings.Cut(stream, ":")
	secs := max(1, int((r.o.Duration+time.Second-1)/time.Second))
	ictx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+time.Minute)
	out, runErr := r.exec(ictx, pod, "iperf3", "--client", host, "--port", p, "--time", strconv.Itoa(secs),
		"--parallel", strconv.Itoa(r.o.Streams), "--connect-timeout", "5000", "--json")
	cancel()
	cpu1, cerr := benchlab.CPUSeconds(pids)
	logs = watch.stop(ctx)
	st, err = ParseIperf3(out)
	if err != nil {
		// iperf3 exits 1 with its reason in the JSON: that first.
		err = errors.Join(err, runErr)
		return
	}
	err = cerr
	return
}

// verify checks where a throughput run's bytes went: through both
// agents' tunnel for fibmesh; through neither agent for the other modes
// (when the lab runs a mesh: a pod outside the mesh must not be captured).
func (r *runner) verify(mr *ModeResult, logs map[string]benchlab.ConnLog, st Stream, start time.Time) error {
	if !r.mesh {
		return nil
	}
	t := r.t
	m := mr.Mode
	if m == ModeFibmesh {
		tunnel, err := CheckTunnel(logs[t.ClientNode], logs[t.ServerNode], TunnelWant{
			ClientPod: r.mesh2("client"), ServerPod: r.mesh2("server"),
			Destination: t.ServiceIP.String() + ":" + strconv.Itoa(t.StreamPort), ServerPort: t.StreamPort,
			ClientID: t.SpiffeID(t.MeshNamespace, "client"), ServerID: t.SpiffeID(t.MeshNamespace, "server"),
			Bytes: st.Bytes, Since: start,
		})
		if err == nil {
			mr.Tunnel = tunnel
		}
		return err
	}
	for node, pod := range map[string]string{t.ClientNode: r.plain("client-plain"), t.ServerNode: r.plain("server-plain")} {
		if cs := Bypassed(logs[node], pod, start); len(cs) > 0 {
			return fmt.Errorf("%s is labelled %s, yet %s's agent proxied %d of its connections (first: %s -> %s): the %s figures would include the agent", pod, outsideMesh, node, len(cs), cs[0].Source, cs[0].Destination, m)
		}
	}
	return nil
}

// connWatch reads the agents' /connections around a throughput run:
// once half-way, the connections established then (a small answer: the
// read costs the agents little CPU inside the measured window), and once
// after the run and its CPU reading, everything listed, closed
// connections included.
type connWatch struct {
	r       *runner
	pods    map[string]string // node -> pod whose connections to read
	stopped chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	logs    map[string]benchlab.ConnLog
}

// watchConnections starts watching the agents' connection tables for the
// pods of mode m during a run of length d; nil without a mesh.
func (r *runner) watchConnections(ctx context.Context, m Mode, d time.Duration) *connWatch {
	if !r.mesh {
		return nil
	}
	t := r.t
	w := &connWatch{r: r, logs: map[string]benchlab.ConnLog{t.ClientNode: {}, t.ServerNode: {}}, stopped: make(chan struct{})}
	if m == ModeFibmesh {
		w.pods = map[string]string{t.ClientNode: r.mesh2("client"), t.ServerNode: r.mesh2("server")}
	} else {
		w.pods = map[string]string{t.ClientNode: r.plain("client-plain"), t.ServerNode: r.plain("server-plain")}
	}
	w.wg.Go(func() {
		select {
		case <-ctx.Done():
		case <-w.stopped:
		case <-time.After(d / 2):
			// Relayed in userspace, or offloaded where the kernel has
			// kTLS.
			w.poll(ctx, "established")
			w.poll(ctx, "offloaded")
		}
	})
	return w
}

func (w *connWatch) poll(ctx context.Context, state string) {
	for node, pod := range w.pods {
		cs, err := w.r.lab.Connections(ctx, node, pod, state)
		if err != nil {
			continue // a missed snapshot; the last one decides
		}
		w.mu.Lock()
		w.logs[node].Add(cs)
		w.mu.Unlock()
	}
}

// stop takes the last snapshot and returns the merged tables by node.
func (w *connWatch) stop(ctx context.Context) map[string]benchlab.ConnLog {
	if w == nil {
		return nil
	}
	close(w.stopped)
	w.wg.Wait()
	w.poll(ctx, "")
	return w.logs
}

// exec runs argv in pod's network namespace (benchlab.Exec).
func (r *runner) exec(ctx context.Context, pod string, argv ...string) ([]byte, error) {
	netns, err := r.lab.Netns(pod)
	if err != nil {
		return nil, err
	}
	return benchlab.Exec(ctx, netns, argv...)
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
