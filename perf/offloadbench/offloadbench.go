// Package offloadbench measures what the offload of established mesh
// connections buys, in the lab (controller, two nodes, an agent per
// node), in one run:
//
//   - offloaded: an opaque TCP stream from a client pod on node1 to a
//     server pod on node2 through the Service's VIP: both agents
//     terminate the mTLS tunnel, then hand it to the kernel (kTLS record
//     crypto, the kernel byte path, XDP flow entries); agents run with
//     --offload=auto. Every transfer is checked against both agents'
//     /connections: one they did not offload fails the mode;
//   - userspace: the same stream through the same agents restarted with
//     --offload=off (crypto/tls and the proxy's copy loop);
//   - direct: the same stream between two pods outside the mesh.
//
// Both ends of the stream are sockets the bench opens in the pods'
// network namespaces (no client or server program, so it runs where the
// machine has nothing but busybox: the make vmtest VM). Each transfer
// reports throughput (first byte to last, at the server), the machine's
// busy CPU seconds (/proc/stat, every CPU: kTLS crypto in softirq counts)
// and the agents' (/proc/PID/stat), per GB moved.
//
// Revocation rounds: a paced stream through the agents; once both have
// offloaded it, an AuthorizationPolicy that denies the client is written
// into the lab's manifest directory; the stream dies. Each round records
// the agents' own figure (the controller's push to the first packet the
// XDP drop entry counted, from /offload/flows or the
// fibmesh_agent_offload_revocation_seconds histogram) and the bench's
// (policy written to the stream's death); the policy is removed and the
// path checked open before the next round.
//
// The agents' mode is switched without rebuilding the lab: their binary
// in the lab's bin directory is a script that runs the real agent with
// --offload read from a file, and the lab's kubelet restarts an agent
// that exits. Each round restarts them for each mesh mode and waits for
// them to settle, so the modes are measured minutes apart, not phases
// apart.
package offloadbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/kubelet"
	"github.com/fibmesh/fibmesh/perf/benchlab"
)

// Options configure Run.
type Options struct {
	// Bin is the directory holding fibmesh-lab, fibmesh-controller,
	// fibmesh-agent and fibctl (make build).
	Bin string
	// Prefix and StateDir are the lab's (default fm-ob- and
	// DefaultStateDir).
	Prefix, StateDir string
	// Bytes per transfer (default 256 MiB; VMBytes suits the VM); Rounds of every mode
	// (default 3); RevokeRounds (default 20, negative: none).
	Bytes        int64
	Rounds       int
	RevokeRounds int
	// Offload runs the offloaded mode: set it where the kernel has kTLS.
	// Without it OffloadSkipped says why, and the revocation rounds run
	// on userspace connections.
	Offload        bool
	OffloadSkipped string
	// Where and Kernel label the result ("host", "vm-tcg").
	Where, Kernel string
	// RevokeChunk bytes are written every RevokeInterval by the
	// revocation rounds' stream (default 1 KiB every millisecond, 8
	// Mbit/s: a packet arrives at least every millisecond, so the drop
	// entry counts one within a millisecond of being set, and the stream
	// stays below what the emulated VM carries, so it does not starve
	// the agents that handle the push).
	RevokeChunk    int
	RevokeInterval time.Duration
	// Timeout bounds bringing the lab up, an agent restart, waiting for
	// a connection's state, each revocation (default 3 min);
	// TransferTimeout one transfer (default 10 min).
	Timeout, TransferTimeout time.Duration
	// Out receives progress.
	Out io.Writer
}

func (o Options) withDefaults() Options {
	if o.Bytes <= 0 {
		o.Bytes = 256 << 20
	}
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if o.RevokeRounds == 0 {
		o.RevokeRounds = 20
	}
	if o.RevokeChunk <= 0 {
		o.RevokeChunk = 1 << 10
	}
	if o.RevokeInterval <= 0 {
		o.RevokeInterval = time.Millisecond
	}
	if o.Prefix == "" {
		o.Prefix = "fm-ob-"
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if o.Timeout <= 0 {
		o.Timeout = 3 * time.Minute
	}
	if o.TransferTimeout <= 0 {
		o.TransferTimeout = 10 * time.Minute
	}
	if o.Where == "" {
		o.Where = "host"
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	return o
}

// VMBytes is the transfer size for the make vmtest VM: its emulated lab
// carries about 10 Mbit/s through the mesh (every packet crosses four
// veths and their XDP programs without segmentation offloads), so 32 MiB
// takes about 30 s.
const VMBytes = 32 << 20

// DefaultStateDir is the lab's state directory: a fixed one, so that a
// run that was killed before it took its lab down has its kubelet
// stopped by the next run's "fibmesh-lab up".
var DefaultStateDir = filepath.Join(filepath.Dir(lab.DefaultStateDir), "bench-offload")

// runner is one run's lab and state.
type runner struct {
	o         Options
	t         Topology
	lab       *benchlab.Lab
	res       *Result
	manifests string // the lab's -f directory
	work      string
	modeFile  string
	mode      AgentMode // the agents' current --offload
	mesh      *sink     // in the mesh server pod
	plain     *sink     // in the plain server pod
}

// Run builds the lab, measures every mode Rounds times and the
// revocation rounds, and takes the lab down (also when it fails or ctx is
// cancelled). The error is for a run that could not measure at all; a
// mode or round that failed is in Result.Errors.
func Run(ctx context.Context, o Options) (res *Result, err error) {
	o = o.withDefaults()
	if !o.Offload && o.OffloadSkipped == "" {
		o.OffloadSkipped = "Options.Offload not set"
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		return nil, errors.New("nsenter is not installed (util-linux): the lab runs everything through it")
	}
	src, err := filepath.Abs(o.Bin)
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "fibmesh-bench-offload-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	r := &runner{o: o, t: DefaultTopology(), work: work, modeFile: filepath.Join(work, "agent-offload"),
		manifests: filepath.Join(work, "manifests")}
	// The first phase runs with the agents offloading where the kernel can.
	r.mode = AgentOff
	if o.Offload {
		r.mode = AgentAuto
	}
	if err := os.WriteFile(r.modeFile, []byte(r.mode), 0o644); err != nil {
		return nil, err
	}
	bin := filepath.Join(work, "bin")
	if err := binDir(bin, src, r.modeFile); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(r.manifests, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(r.manifests, "bench.yaml"), []byte(Manifests(r.t)), 0o644); err != nil {
		return nil, err
	}
	r.lab = &benchlab.Lab{Bin: filepath.Join(bin, "fibmesh-lab"), Prefix: o.Prefix, StateDir: o.StateDir}

	res = &Result{Where: o.Where, Kernel: o.Kernel, Bytes: o.Bytes, Rounds: o.Rounds, RevokeRounds: max(0, o.RevokeRounds),
		OffloadSkipped: o.OffloadSkipped, CPUs: runtime.NumCPU(), LoadStart: benchlab.Loadavg()}
	r.res = res
	defer func() { res.LoadEnd = benchlab.Loadavg() }()

	fmt.Fprintf(o.Out, "lab: 2 nodes, controller and agents (--offload=%s), prefix %s (fibmesh-lab up -f %s --mesh)\n", r.mode, o.Prefix, r.manifests)
	defer func() {
		if derr := r.lab.Down(); derr != nil {
			err = errors.Join(err, derr)
		}
	}()
	start := time.Now()
	if err := r.lab.Up(ctx, r.manifests, true, o.Timeout); err != nil {
		return res, fmt.Errorf("%w\n%s", err, r.logTails())
	}
	if err := r.lab.Inspect(ctx); err != nil {
		return res, err
	}
	fmt.Fprintf(o.Out, "lab up in %s\n", time.Since(start).Round(time.Millisecond))
	for _, p := range r.lab.Pods {
		fmt.Fprintf(o.Out, "pod %-24s %-6s %-12s %s\n", p.Namespace+"/"+p.Name, p.Node, p.IP, p.Enrolment)
	}
	if err := r.checkAgentMode(ctx); err != nil {
		return res, err
	}
	if err := r.openSinks(); err != nil {
		return res, err
	}
	defer r.mesh.Close()
	defer r.plain.Close()
	for _, m := range []Mode{ModeUserspace, ModeDirect} { // the mesh and the direct path
		if err := r.waitOpen(ctx, m); err != nil {
			return res, err
		}
	}

	// Every round runs each mesh mode right after its agents (re)started
	// and settled, each with a direct transfer before or after it, so the
	// modes compare within minutes of each other; the revocation rounds
	// run last, with the agents offloading where they can.
	mesh := []Mode{ModeUserspace}
	if o.Offload {
		mesh = []Mode{ModeOffloaded, ModeUserspace}
	}
	if err := r.settle(ctx); err != nil {
		return res, err
	}
	for round := 1; round <= o.Rounds && ctx.Err() == nil; round++ {
		for i := range mesh {
			// Rotate so that no mode always runs first.
			m := mesh[(i+round-1)%len(mesh)]
			want := AgentOff
			if m == ModeOffloaded {
				want = AgentAuto
			}
			if r.mode != want {
				if err := r.restartAgents(ctx, want); err != nil {
					return res, err
				}
			}
			order := []Mode{m, ModeDirect}
			if round%2 == 0 {
				slices.Reverse(order)
			}
			for _, mode := range order {
				r.round(ctx, mode, round)
			}
		}
	}
	if o.RevokeRounds > 0 && ctx.Err() == nil {
		if o.Offload && r.mode != AgentAuto {
			if err := r.restartAgents(ctx, AgentAuto); err != nil {
				return res, err
			}
		}
		r.revocations(ctx)
	}
	return res, ctx.Err()
}

// round measures one transfer of mode m and records it.
func (r *runner) round(ctx context.Context, m Mode, round int) {
	s, err := r.sample(ctx, m, round)
	if err != nil {
		if ctx.Err() == nil {
			r.fail("round %d %s (agents --offload=%s): %v", round, m, r.mode, err)
		}
		return
	}
	r.res.Samples = append(r.res.Samples, s)
	fmt.Fprintf(r.o.Out, "round %d %-9s %7.3f Gbit/s (%d MiB in %.2f s)  machine %7.2f CPU-s/GB  agents %7.2f CPU-s/GB  %s\n",
		round, m, s.Gbps(), s.Bytes>>20, s.Seconds, s.MachineCPUPerGB(), s.AgentCPUPerGB(), s.Path)
}

// settleBusy is the agents' CPU use, in CPUs, below which they count as
// idle; settleWindow the window it is measured over.
const (
	settleBusy   = 0.05
	settleWindow = time.Second
)

// settle waits until the agents are idle (their start-up work done:
// enrolments restored, SVIDs fetched, the FIB reconciled), at most
// Timeout, so that it does not count against the mode measured next,
// and says how long it waited.
func (r *runner) settle(ctx context.Context) error {
	start := time.Now()
	deadline := start.Add(r.o.Timeout)
	for {
		pids, err := r.agentPIDs(ctx)
		if err != nil {
			return err
		}
		c0, err := benchlab.CPUSeconds(pids)
		if err != nil {
			return err
		}
		t0 := time.Now()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(settleWindow):
		}
		c1, err := benchlab.CPUSeconds(pids)
		if err != nil {
			return err
		}
		busy := (c1 - c0) / time.Since(t0).Seconds()
		if busy < settleBusy || time.Now().After(deadline) {
			fmt.Fprintf(r.o.Out, "agents (--offload=%s) at %.0f%% of a CPU after %s\n", r.mode, busy*100, time.Since(start).Round(time.Millisecond))
			return nil
		}
	}
}

// fail records a failed mode or round.
func (r *runner) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.res.Errors = append(r.res.Errors, msg)
	fmt.Fprintf(r.o.Out, "FAILED: %s\n", msg)
}

// openSinks opens the stream's server ends in both server pods.
func (r *runner) openSinks() error {
	for _, x := range []struct {
		pod string
		s   **sink
	}{{r.t.meshPod("server"), &r.mesh}, {r.t.plainPod("server-plain"), &r.plain}} {
		ns, err := r.lab.Netns(x.pod)
		if err != nil {
			return err
		}
		if *x.s, err = listen(ns, r.t.StreamPort); err != nil {
			return err
		}
	}
	return nil
}

// path returns the client pod's network namespace, the address it
// connects to and the sink that reads it, for mode m.
func (r *runner) path(m Mode) (netns string, addr netip.AddrPort, s *sink, err error) {
	port := uint16(r.t.StreamPort)
	if m == ModeDirect {
		netns, err = r.lab.Netns(r.t.plainPod("client-plain"))
		return netns, netip.AddrPortFrom(r.t.PlainServerIP, port), r.plain, err
	}
	netns, err = r.lab.Netns(r.t.meshPod("client"))
	return netns, netip.AddrPortFrom(r.t.ServiceIP, port), r.mesh, err
}

// probeBytes is what a probe of a path sends.
const probeBytes = 64 << 10

// waitOpen waits until a small transfer of mode m's path goes through.
func (r *runner) waitOpen(ctx context.Context, m Mode) error {
	netns, addr, s, err := r.path(m)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(r.o.Timeout)
	for {
		_, err := transfer(ctx, netns, addr, s, probeBytes, 10*time.Second)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s path: %s cannot stream to %s after %s: %w", m, netns, addr, r.o.Timeout, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// agentPIDs returns both agents' process ids.
func (r *runner) agentPIDs(ctx context.Context) ([]int, error) {
	return r.lab.PIDs(ctx, "fibmesh-agent", "agent-"+r.t.ClientNode, "agent-"+r.t.ServerNode)
}

// checkAgentMode checks that both agents run with --offload=r.mode (the
// bench's script is what the lab started).
func (r *runner) checkAgentMode(ctx context.Context) error {
	pids, err := r.agentPIDs(ctx)
	if err != nil {
		return err
	}
	want := "--offload=" + string(r.mode)
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			return fmt.Errorf("agent pid %d: %w", pid, err)
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if !slices.Contains(args, want) {
			return fmt.Errorf("agent pid %d runs %q, without %s: the lab did not start the bench's agent script", pid, args, want)
		}
	}
	return nil
}

// restartAgents switches the agents to mode: it writes the mode file,
// stops both agents (SIGTERM; the lab's kubelet starts them again at
// once) and waits until both are back, ready, with the mode, and the
// mesh path streams again.
func (r *runner) restartAgents(ctx context.Context, mode AgentMode) error {
	old, err := r.agentPIDs(ctx)
	if err != nil {
		return err
	}
	if err := os.WriteFile(r.modeFile, []byte(mode), 0o644); err != nil {
		return err
	}
	start := time.Now()
	for _, pid := range old {
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			return fmt.Errorf("stop agent pid %d: %w", pid, err)
		}
	}
	r.mode = mode
	deadline := time.Now().Add(r.o.Timeout)
	for {
		st, err := kubelet.Get(ctx, r.o.StateDir)
		if err == nil && st.Ready && agentsRestarted(st, old) {
			break
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("not ready: %v", st.NotReady)
			}
			return fmt.Errorf("agents restarted with --offload=%s did not come back within %s: %w\n%s", mode, r.o.Timeout, err, r.logTails())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := r.checkAgentMode(ctx); err != nil {
		return err
	}
	if err := r.waitOpen(ctx, ModeUserspace); err != nil {
		return err
	}
	fmt.Fprintf(r.o.Out, "agents restarted with --offload=%s in %s\n", mode, time.Since(start).Round(time.Millisecond))
	return r.settle(ctx)
}

// logTails returns the end of the mesh's and the kubelet's logs: in the
// VM they are gone once it powers off.
func (r *runner) logTails() string {
	var b strings.Builder
	for _, name := range []string{"agent-" + r.t.ClientNode, "agent-" + r.t.ServerNode, "controller", "kubelet"} {
		path := filepath.Join(r.o.StateDir, name+".log")
		fmt.Fprintf(&b, "--- the end of %s:\n", path)
		for l := range strings.Lines(benchlab.Tail(path, 6)) {
			// A verifier's log is one line of kilobytes: its head says
			// what failed, its tail why.
			if l = strings.TrimRight(l, "\n"); len(l) > 1200 {
				l = l[:600] + " [...] " + l[len(l)-600:]
			}
			fmt.Fprintln(&b, l)
		}
	}
	return b.String()
}

// agentsRestarted says every agent in st runs, ready, with a process id
// not among old.
func agentsRestarted(st *kubelet.Status, old []int) bool {
	n := 0
	for _, p := range st.Processes {
		if !strings.HasPrefix(p.Name, "agent-") {
			continue
		}
		if p.State != kubelet.StateRunning || !p.Ready || p.PID == 0 || slices.Contains(old, p.PID) {
			return false
		}
		n++
	}
	return n == len(old)
}

// sample runs one transfer of mode m and checks how the agents carried
// it.
func (r *runner) sample(ctx context.Context, m Mode, round int) (Sample, error) {
	s := Sample{Mode: m, Round: round, Agents: r.mode}
	netns, addr, sk, err := r.path(m)
	if err != nil {
		return s, err
	}
	pids, err := r.agentPIDs(ctx)
	if err != nil {
		return s, err
	}
	c0, err := readCPU(pids)
	if err != nil {
		return s, err
	}
	got, err := transfer(ctx, netns, addr, sk, r.o.Bytes, r.o.TransferTimeout)
	if err != nil {
		return s, err
	}
	c1, err := readCPU(pids)
	if err != nil {
		return s, err
	}
	s.Bytes, s.Seconds = got.Bytes, got.Seconds()
	s.MachineCPU, s.AgentCPU = c1.machine-c0.machine, c1.agents-c0.agents
	if m == ModeDirect {
		s.Path = "pod to pod, outside the mesh"
		return s, nil
	}
	s.Path, err = r.verify(ctx, m, got.Client)
	return s, err
}

// tunnelConns returns the stream's connections on each agent: the
// client's outbound one from src to the VIP and the server's inbound one
// from src (the original source) to the stream port.
func (r *runner) tunnelConns(ctx context.Context, src netip.AddrPort) (client, server []agentConn, err error) {
	vip := netip.AddrPortFrom(r.t.ServiceIP, uint16(r.t.StreamPort)).String()
	cs, err := connections(ctx, r.lab.NodeNetns[r.t.ClientNode], r.t.meshPod("client"))
	if err != nil {
		return nil, nil, err
	}
	for _, c := range cs {
		if c.Direction == "outbound" && c.Destination == vip && c.Source == src.String() {
			client = append(client, c)
		}
	}
	ss, err := connections(ctx, r.lab.NodeNetns[r.t.ServerNode], r.t.meshPod("server"))
	if err != nil {
		return nil, nil, err
	}
	for _, c := range ss {
		if c.Direction == "inbound" && benchlab.Port(c.Destination) == r.t.StreamPort && c.Source == src.String() {
			server = append(server, c)
		}
	}
	return client, server, nil
}

// verify checks that both agents carried the transfer from src, over mTLS with the peer's identity, offloaded (ModeOffloaded)
// or in userspace (ModeUserspace), and says how.
func (r *runner) verify(ctx context.Context, m Mode, src netip.AddrPort) (string, error) {
	client, server, err := r.tunnelConns(ctx, src)
	if err != nil {
		return "", err
	}
	if len(client) != 1 || len(server) != 1 {
		var all []string
		for _, c := range append(client, server...) {
			all = append(all, c.describe())
		}
		return "", fmt.Errorf("want one connection of the stream on each agent, got %d on %s's and %d on %s's: %v", len(client), r.t.ClientNode, len(server), r.t.ServerNode, all)
	}
	c, sv := client[0], server[0]
	wantPeer := map[string]string{"client": "spiffe://" + r.t.Principal(r.t.MeshNamespace, "server"), "server": "spiffe://" + r.t.Principal(r.t.MeshNamespace, "client")}
	for side, x := range map[string]agentConn{"client": c, "server": sv} {
		if x.TLSVersion == "" || x.PeerIdentity != wantPeer[side] {
			return "", fmt.Errorf("the %s's agent: %s: not mTLS with peer %s (tls %q, peer %q)", side, x.describe(), wantPeer[side], x.TLSVersion, x.PeerIdentity)
		}
		switch {
		case m == ModeOffloaded && !x.offloaded():
			return "", fmt.Errorf("the %s's agent did not offload it: %s", side, x.describe())
		case m == ModeUserspace && x.offloaded():
			return "", fmt.Errorf("the %s's agent offloaded it with --offload=off: %s", side, x.describe())
		}
	}
	how := func(x agentConn) string {
		if x.Offload == "" {
			return "userspace"
		}
		return x.Offload
	}
	return fmt.Sprintf("client -> VIP -> agent(%s, %s) =%s %s=> agent(%s, %s) -> server", r.t.ClientNode, how(c), c.TLSVersion, c.TLSCipher, r.t.ServerNode, how(sv)), nil
}
