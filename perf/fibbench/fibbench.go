// Package fibbench measures the lab's cross-node pod-to-pod forwarding
// through the XDP FIB and through the kernel's own forwarding, side by
// side in one run and the same lab, two ways:
//
//   - saturation: an AF_XDP generator in pod A (node1) sends 64-byte UDP
//     frames to pod B (node2) as fast as it can; xdp_sink on pod B's
//     interface counts and drops them; the rate is the sink's count over
//     a timed window;
//   - cost: the same generator paced to a fixed rate well below
//     saturation (100 kpps by default); the machine's busy CPU time
//     (/proc/stat, all CPUs) over the window, divided by the packets the
//     sink got, less the same figure for a baseline path that has no
//     forwarding node (the sink on the generator's own veth peer, the
//     first hop): what forwarding one packet costs, as a router vendor
//     quotes it. BPF run-time statistics give the FIB program's own
//     nanoseconds per run beside it.
//
// The path: pod veth -> node1 -> fabric bridge -> node2 -> pod veth. In
// "xdp" rounds the fibmesh FIB is attached on both nodes; in "kernel"
// rounds it is not, and the kernel's IPv4 forwarding carries the same
// packets.
//
// With Options.Hop set to HopNode, the sink sits on node1's fabric port
// instead (ingress of the bridge port that node1's NIC transmits into):
// the measured path is then one node's forwarding (pod veth -> NIC)
// without the fabric bridge and the second node, whose costs are the same
// in both modes and dilute the cross-node ratio.
//
// On the cross-node path Run also measures a service VIP: new UDP flows
// from node1-pod1 to a ClusterIP whose two backends are node2-pod1 and
// node2-pod2, with N services defined, translated by the FIB ("xdp") or
// by kube-proxy-style iptables DNAT in node1 ("iptables"), priced the
// same way.
package fibbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf"

	"github.com/fibmesh/fibmesh/agent/reconcile"
	"github.com/fibmesh/fibmesh/agent/resolve"
	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/internal/quantile"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/perf/xdpgen"
)

// Clocks: where a cost sample's CPU time comes from.
const (
	// ClockMachine is the machine's busy time (/proc/stat, all CPUs):
	// everything, including what other processes run meanwhile.
	ClockMachine = "machine"
	// ClockAttributed is this process's CPU time and ksoftirqd's
	// (attributedTime): the generator, the kernel work it sets off, and
	// deferred softirq work, without other processes.
	ClockAttributed = "attributed"
)

// Where the sink counts packets.
const (
	HopCrossNode = "cross-node" // pod B on node2 (default)
	HopNode      = "node"       // node1's fabric port: one node's forwarding
)

// Options configure a run.
type Options struct {
	Hop       string        // HopCrossNode (default) or HopNode
	Rounds    int           // saturation rounds of each mode (default 5)
	Window    time.Duration // measured window per saturation round (default 2s)
	Warmup    time.Duration // generator runs this long before a window (default 500ms)
	FrameSize int           // bytes, Ethernet header included (default 64)
	Prefix    string        // lab name prefix (default "fm-bench-")
	Out       io.Writer     // progress lines (default io.Discard)

	// Clock is the CPU time the headline ns/pkt figures come from:
	// ClockAttributed (default) or ClockMachine. Both are measured and
	// reported.
	Clock string
	// CostRounds is how many rounds of {baseline, xdp, kernel} the cost
	// measurement takes (default 5; negative: none).
	CostRounds int
	// CostWindow is the measured window of a cost sample (default 2s).
	CostWindow time.Duration
	// Rate is the offered rate of the cost measurement, packets/s
	// (default 100,000).
	Rate float64

	// Services are the service counts of the VIP measurement, cross-node
	// only (default 100 and 10,000; NoServices: none).
	Services   []int
	NoServices bool
	// Established adds, to every VIP round, windows of one established
	// flow (a fixed 5-tuple) in both modes.
	Established bool
	// ServiceRate is the offered rate of the VIP measurement, packets/s
	// (default 2,000: kube-proxy's rules for 10,000 services cost about
	// 100 µs per new flow here, so 5,000/s already failed to hold when
	// other sessions loaded the 2 cores; at most 58,060: every packet
	// must open a new conntrack entry, and one source address has 64,512
	// source ports against conntrack's shortest UDP timeout, 1 s).
	ServiceRate float64
}

// Sample is one measured saturation round.
type Sample struct {
	Mode     string  `json:"mode"` // "xdp" or "kernel"
	PPS      float64 `json:"pps"`  // packets/s received by the sink
	SentPPS  float64 `json:"sentPps"`
	Node1Fwd uint64  `json:"node1ForwDatagrams"` // kernel-forwarded packets on node1 in the window
	Node2Fwd uint64  `json:"node2ForwDatagrams"`
}

// Report is the outcome of Run.
type Report struct {
	Hop       string   `json:"hop"`
	Samples   []Sample `json:"samples"`
	XDPPPS    float64  `json:"xdpPps"`    // median
	KernelPPS float64  `json:"kernelPps"` // median
	Ratio     float64  `json:"ratio"`

	// Cost at Rate: medians over the rounds of each round's figure less
	// that round's baseline (zero when CostRounds < 0). XDPNs, KernelNs
	// and CostRatio are by Clock; the Machine and Attrib figures are both
	// clocks' medians.
	Cost            []CostSample `json:"costSamples,omitempty"`
	Rate            float64      `json:"ratePps,omitempty"`
	Clock           string       `json:"clock,omitempty"`
	XDPNs           float64      `json:"xdpNsPerPkt,omitempty"`
	KernelNs        float64      `json:"kernelNsPerPkt,omitempty"`
	CostRatio       float64      `json:"costRatio,omitempty"`        // KernelNs / XDPNs
	BaselineNs      float64      `json:"baselineNsPerPkt,omitempty"` // gross, of the baseline path (machine)
	MachineXDPNs    float64      `json:"machineXdpNsPerPkt,omitempty"`
	MachineKernelNs float64      `json:"machineKernelNsPerPkt,omitempty"`
	AttribXDPNs     float64      `json:"attributedXdpNsPerPkt,omitempty"`
	AttribKernelNs  float64      `json:"attributedKernelNsPerPkt,omitempty"`
	// OtherCPU is the median CPU share (of one CPU) that the rest of the
	// machine used in the baseline windows: busy less attributed. It is
	// the noise in the machine figures.
	OtherCPU    float64 `json:"otherCpu"`
	FIBProgNs   float64 `json:"fibProgNsPerRun,omitempty"` // BPF stats: the FIB program's own ns per run (median)
	FIBProgRuns float64 `json:"fibProgRunsPerPkt,omitempty"`

	Services []ServiceReport `json:"services,omitempty"`
}

// Line is the report's one-line summary. For the cross-node hop it is the
// forwarding line bench-fib prints last but one (or last).
func (r Report) Line() string {
	name := "fib-forwarding"
	if r.Hop == HopNode {
		name = "fib-node-forwarding"
	}
	l := fmt.Sprintf("%s: xdp_pps=%.0f kernel_pps=%.0f ratio=%.2f", name, r.XDPPPS, r.KernelPPS, r.Ratio)
	if r.Rate > 0 {
		l += fmt.Sprintf(" xdp_ns_per_pkt=%.0f kernel_ns_per_pkt=%.0f cost_ratio=%.2f", r.XDPNs, r.KernelNs, r.CostRatio)
	}
	return l
}

const sinkPort = 9

func (o *Options) defaults() error {
	if o.Rounds <= 0 {
		o.Rounds = 5
	}
	if o.Window <= 0 {
		o.Window = 2 * time.Second
	}
	if o.Warmup <= 0 {
		o.Warmup = 500 * time.Millisecond
	}
	if o.FrameSize <= 0 {
		o.FrameSize = 64
	}
	if o.Prefix == "" {
		o.Prefix = "fm-bench-"
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	switch o.Clock {
	case "":
		o.Clock = ClockAttributed
	case ClockMachine, ClockAttributed:
	default:
		return fmt.Errorf("clock %q: want %s or %s", o.Clock, ClockMachine, ClockAttributed)
	}
	if o.CostRounds == 0 {
		o.CostRounds = 5
	}
	if o.CostWindow <= 0 {
		o.CostWindow = 2 * time.Second
	}
	if o.Rate == 0 {
		o.Rate = 100_000
	}
	if o.Rate < 0 {
		return fmt.Errorf("rate %v packets/s: want > 0", o.Rate)
	}
	if o.Services == nil {
		o.Services = []int{100, 10_000}
	}
	for _, n := range o.Services {
		if n < 1 || n > maxServices {
			return fmt.Errorf("services %d: want 1..%d", n, maxServices)
		}
	}
	if o.ServiceRate == 0 {
		o.ServiceRate = 2_000
	}
	if o.ServiceRate < 0 || o.ServiceRate > maxServiceRate {
		return fmt.Errorf("service rate %v packets/s: want 1..%d, so that a source port is not reused while its conntrack entry lives (%d ports, %s UDP timeout)",
			o.ServiceRate, maxServiceRate, srcPorts, conntrackUDPTimeout)
	}
	switch o.Hop {
	case "":
		o.Hop = HopCrossNode
	case HopCrossNode, HopNode:
	default:
		return fmt.Errorf("hop %q: want %s or %s", o.Hop, HopCrossNode, HopNode)
	}
	return nil
}

// Run brings a 2-node lab up, measures, and takes the lab down.
func Run(ctx context.Context, o Options) (Report, error) {
	if err := o.defaults(); err != nil {
		return Report{}, err
	}
	stateDir, err := os.MkdirTemp("", "fibmesh-bench-")
	if err != nil {
		return Report{}, err
	}
	defer os.RemoveAll(stateDir)
	// Two pods per node: node2-pod2 is the VIP's second backend.
	l, err := lab.Up(ctx, lab.Config{Nodes: 2, PodsPerNode: 2, Prefix: o.Prefix, StateDir: stateDir})
	if err != nil {
		return Report{}, fmt.Errorf("lab up: %w", err)
	}
	defer l.Down()

	b := &bench{o: o, lab: l}
	if err := b.setup(); err != nil {
		return Report{}, err
	}
	defer b.close()

	rep := Report{Hop: o.Hop}
	for r := 1; r <= o.Rounds; r++ {
		for _, mode := range []string{"xdp", "kernel"} {
			s, err := b.round(ctx, mode)
			if err != nil {
				return rep, fmt.Errorf("round %d (%s): %w", r, mode, err)
			}
			fmt.Fprintf(o.Out, "%s round %d %-6s rx_pps=%.0f tx_pps=%.0f node1_kernel_forwarded=%d node2_kernel_forwarded=%d\n",
				o.Hop, r, mode, s.PPS, s.SentPPS, s.Node1Fwd, s.Node2Fwd)
			rep.Samples = append(rep.Samples, s)
		}
	}
	rep.XDPPPS = median(rep.Samples, "xdp")
	rep.KernelPPS = median(rep.Samples, "kernel")
	if rep.KernelPPS > 0 {
		rep.Ratio = rep.XDPPPS / rep.KernelPPS
	}
	if o.CostRounds > 0 {
		if err := b.forwardingCost(ctx, &rep); err != nil {
			return rep, err
		}
	}
	if o.Hop == HopCrossNode && !o.NoServices && len(o.Services) > 0 {
		for _, n := range o.Services {
			sr, err := b.serviceCost(ctx, n)
			if err != nil {
				return rep, fmt.Errorf("%d services: %w", n, err)
			}
			rep.Services = append(rep.Services, sr)
		}
	}
	return rep, nil
}

// median returns the median packet rate of the samples of mode (0 for
// none).
func median(ss []Sample, mode string) float64 {
	var v []float64
	for _, s := range ss {
		if s.Mode == mode {
			v = append(v, s.PPS)
		}
	}
	return quantile.Median(v)
}

type bench struct {
	o     Options
	lab   *lab.Lab
	src   *lab.Pod
	dst   []*lab.Pod // node2-pod1, node2-pod2
	gen   *xdpgen.Generator
	sink  *sinkProg   // where the forwarded packets are counted
	sinks []*sinkProg // node2-pod1's, node2-pod2's (the VIP's backends), cross-node only
	nodes []*lab.Node
	// ksoftirqd are the pids of the ksoftirqd threads (attributedTime).
	ksoftirqd []int
}

func (b *bench) setup() error {
	var err error
	if b.ksoftirqd, err = ksoftirqdPIDs(); err != nil {
		return err
	}
	src, err := b.lab.Pod("node1-pod1")
	if err != nil {
		return err
	}
	b.src = src
	for _, name := range []string{"node2-pod1", "node2-pod2"} {
		p, err := b.lab.Pod(name)
		if err != nil {
			return err
		}
		b.dst = append(b.dst, p)
	}
	for _, n := range []string{"node1", "node2"} {
		node, err := b.lab.Node(n)
		if err != nil {
			return err
		}
		b.nodes = append(b.nodes, node)
	}
	if b.o.Hop == HopNode {
		b.sink, err = sinkIn(b.lab.FabricNetns, "n1", sinkPort)
		if err != nil {
			return err
		}
	} else {
		for _, p := range b.dst {
			s, err := sinkIn(p.Netns, p.IfName, sinkPort)
			if err != nil {
				return err
			}
			b.sinks = append(b.sinks, s)
		}
		b.sink = b.sinks[0]
	}
	frame := udpFrame(b.o.FrameSize, src.HostMAC, src.MAC, src.IP, b.dst[0].IP, 4000, sinkPort)
	b.gen, err = newGen(src, frame)
	return err
}

// sinkIn attaches a sink for port to dev in netns.
func sinkIn(netns, dev string, port uint16) (s *sinkProg, err error) {
	err = lab.InNetns(netns, func() error {
		s, err = attachSink(dev, port)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sink on %s in %s: %w", dev, netns, err)
	}
	return s, nil
}

// newGen opens a generator of frame on pod's interface.
func newGen(pod *lab.Pod, frame []byte) (g *xdpgen.Generator, err error) {
	err = lab.InNetns(pod.Netns, func() error {
		ifindex, err := ifindexOf(pod.IfName)
		if err != nil {
			return err
		}
		g, err = xdpgen.New(ifindex, frame)
		return err
	})
	return g, err
}

func (b *bench) close() {
	if b.gen != nil {
		b.gen.Close()
	}
	if b.sink != nil && len(b.sinks) == 0 {
		b.sink.Close()
	}
	for _, s := range b.sinks {
		s.Close()
	}
}

// fibs are the FIBs loaded on the lab's nodes, with the programs that
// their attachments run (one per NIC profile in use), by node.
type fibs struct {
	nodes []*lab.Node
	fibs  []*fib.FIB
	progs [][]*ebpf.Program
	devs  [][]string // the interfaces each node's FIB is attached to
}

// detach takes the FIBs off every interface, keeping their maps.
func (fs *fibs) detach() error {
	for i, n := range fs.nodes {
		err := lab.InNetns(n.Netns, func() error {
			for _, dev := range fs.devs[i] {
				if err := fs.fibs[i].Detach(dev); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("detach the FIB on %s: %w", n.Name, err)
		}
	}
	return nil
}

// attach puts the FIBs back on the interfaces detach took them off, with
// an empty flow table.
func (fs *fibs) attach() error {
	for i, n := range fs.nodes {
		f := fs.fibs[i]
		entries, err := f.Flows.List()
		if err != nil {
			return fmt.Errorf("flows on %s: %w", n.Name, err)
		}
		keys := make([]fib.FlowKey, len(entries))
		for j, e := range entries {
			keys[j] = e.Key
		}
		if err := f.Flows.Delete(keys...); err != nil {
			return fmt.Errorf("flush flows on %s: %w", n.Name, err)
		}
		err = lab.InNetns(n.Netns, func() error {
			for _, dev := range fs.devs[i] {
				if _, _, err := f.Attach(dev); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("attach the FIB on %s: %w", n.Name, err)
		}
	}
	return nil
}

func (fs *fibs) close() {
	for _, f := range fs.fibs {
		f.Close()
	}
}

// startFIB loads the FIB on both nodes and programs it as the agent does
// (agent/reconcile from the nodes' flow tables, next hops resolved with
// netlink), without pins and without a controller: closing the FIBs
// detaches them.
func (b *bench) startFIB() (*fibs, error) {
	fs := &fibs{nodes: b.nodes}
	for _, n := range b.nodes {
		var progs []*ebpf.Program
		var devs []string
		err := lab.InNetns(n.Netns, func() error {
			// The agent's flow table size (the default): a VIP's new
			// flows are inserted, not evicting others.
			f, err := fib.Open(fib.Options{})
			if err != nil {
				return err
			}
			fs.fibs = append(fs.fibs, f)
			attach := func(dev string) error {
				_, det, err := f.Attach(dev)
				if err != nil {
					return err
				}
				devs = append(devs, dev)
				p, err := f.ProgramFor(fib.NICFor(det))
				if err != nil {
					return err
				}
				for _, q := range progs {
					if q == p {
						return nil
					}
				}
				progs = append(progs, p)
				return nil
			}
			rec, err := reconcile.New(reconcile.Config{Node: n.Name, NIC: n.NIC, Dataplane: reconcile.FIB(f, attach), Resolver: &resolve.Netlink{}})
			if err != nil {
				return err
			}
			if err := rec.Apply(Tables(b.lab, n.Name)); err != nil {
				return err
			}
			if p := rec.Status().Pending; len(p) > 0 {
				return fmt.Errorf("not programmed: %v", p)
			}
			return nil
		})
		fs.progs = append(fs.progs, progs)
		fs.devs = append(fs.devs, devs)
		if err != nil {
			fs.close()
			return nil, fmt.Errorf("FIB on %s: %w", n.Name, err)
		}
	}
	return fs, nil
}

// Tables returns the flow tables the controller would serve node of a
// numbered lab (by xDS resource name): the mesh table routes each node's
// pod CIDR and each pod's /32 via the node's IP; the node's own table
// lists its pods.
func Tables(l *lab.Lab, node string) map[string]*fibv1.FlowTable {
	mesh := &fibv1.FlowTable{Version: "lab"}
	own := &fibv1.FlowTable{Node: node, Version: "lab"}
	for _, n := range l.Nodes {
		mesh.Routes = append(mesh.Routes, &fibv1.Route{Prefix: n.PodCIDR.String(), NextHop: n.IP.String(), Node: n.Name})
		for _, p := range n.Pods {
			mesh.Routes = append(mesh.Routes, &fibv1.Route{Prefix: p.IP.String() + "/32", NextHop: n.IP.String(), Node: n.Name})
			if n.Name == node {
				own.LocalPods = append(own.LocalPods, &fibv1.LocalPod{Namespace: p.Namespace, Name: p.Name, Ip: p.IP.String()})
			}
		}
	}
	return map[string]*fibv1.FlowTable{xdsapi.MeshTable: mesh, node: own}
}

func (b *bench) round(ctx context.Context, mode string) (Sample, error) {
	s := Sample{Mode: mode}
	if mode == "xdp" {
		fs, err := b.startFIB()
		if err != nil {
			return s, err
		}
		defer fs.close()
	}
	gctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var genErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		genErr = b.gen.Run(gctx, xdpgen.RunOptions{})
	}()
	stop := func() { cancel(); wg.Wait() }

	select {
	case <-time.After(b.o.Warmup):
	case <-ctx.Done():
		stop()
		return s, ctx.Err()
	}
	f1a, err1 := lab.Counters(b.nodes[0].Netns)
	f2a, err2 := lab.Counters(b.nodes[1].Netns)
	c0, err3 := b.sink.count()
	tx0 := b.gen.Sent()
	t0 := time.Now()
	select {
	case <-time.After(b.o.Window):
	case <-ctx.Done():
	}
	c1, err4 := b.sink.count()
	tx1 := b.gen.Sent()
	el := time.Since(t0).Seconds()
	f1b, err5 := lab.Counters(b.nodes[0].Netns)
	f2b, err6 := lab.Counters(b.nodes[1].Netns)
	stop()
	if err := errors.Join(genErr, err1, err2, err3, err4, err5, err6, ctx.Err()); err != nil {
		return s, err
	}
	s.PPS = float64(c1-c0) / el
	s.SentPPS = float64(tx1-tx0) / el
	s.Node1Fwd = f1b.ForwDatagrams - f1a.ForwDatagrams
	s.Node2Fwd = f2b.ForwDatagrams - f2a.ForwDatagrams
	if c1 == c0 {
		return s, fmt.Errorf("no packet reached the sink in %s (sent %d): the path is broken", mode, tx1-tx0)
	}
	return s, nil
}
