// Package fibbench measures the cross-node pod-to-pod packet rate of the
// lab through the XDP FIB and through the kernel's own forwarding, side by
// side in one run and the same lab.
//
// The path: an AF_XDP generator in pod A (node1) sends 64-byte UDP frames
// to pod B (node2) as fast as it can; they cross node1 (pod veth -> NIC),
// the fabric bridge, and node2 (NIC -> pod veth); xdp_sink on pod B's
// interface counts and drops them. In "xdp" rounds the fibmesh FIB is
// attached on both nodes; in "kernel" rounds it is not, and the kernel's
// IPv4 forwarding carries the same packets. The rate is the sink's count
// over a timed window while the generator runs.
//
// With Options.Hop set to HopNode, the sink sits on node1's fabric port
// instead (ingress of the bridge port that node1's NIC transmits into):
// the measured path is then one node's forwarding (pod veth -> NIC)
// without the fabric bridge and the second node, whose costs are the same
// in both modes and dilute the cross-node ratio.
package fibbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/fibmesh/fibmesh/agent/reconcile"
	"github.com/fibmesh/fibmesh/agent/resolve"
	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/internal/quantile"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/perf/xdpgen"
)

// Where the sink counts packets.
const (
	HopCrossNode = "cross-node" // pod B on node2 (default)
	HopNode      = "node"       // node1's fabric port: one node's forwarding
)

// Options configure a run.
type Options struct {
	Hop       string        // HopCrossNode (default) or HopNode
	Rounds    int           // rounds of each mode (default 5)
	Window    time.Duration // measured window per round (default 3s)
	Warmup    time.Duration // generator runs this long before the window (default 500ms)
	FrameSize int           // bytes, Ethernet header included (default 64)
	Prefix    string        // lab name prefix (default "fm-bench-")
	Out       io.Writer     // progress lines (default io.Discard)
}

// Sample is one measured round.
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
}

// Line is the report's one-line summary. For the cross-node hop it is the
// last line bench-fib prints.
func (r Report) Line() string {
	name := "fib-forwarding"
	if r.Hop == HopNode {
		name = "fib-node-forwarding"
	}
	return fmt.Sprintf("%s: xdp_pps=%.0f kernel_pps=%.0f ratio=%.2f", name, r.XDPPPS, r.KernelPPS, r.Ratio)
}

const sinkPort = 9

// Run brings a 2-node lab up, measures, and takes the lab down.
func Run(ctx context.Context, o Options) (Report, error) {
	if o.Rounds <= 0 {
		o.Rounds = 5
	}
	if o.Window <= 0 {
		o.Window = 3 * time.Second
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
	switch o.Hop {
	case "":
		o.Hop = HopCrossNode
	case HopCrossNode, HopNode:
	default:
		return Report{}, fmt.Errorf("hop %q: want %s or %s", o.Hop, HopCrossNode, HopNode)
	}
	stateDir, err := os.MkdirTemp("", "fibmesh-bench-")
	if err != nil {
		return Report{}, err
	}
	defer os.RemoveAll(stateDir)
	l, err := lab.Up(ctx, lab.Config{Nodes: 2, PodsPerNode: 1, Prefix: o.Prefix, StateDir: stateDir})
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
	gen   *xdpgen.Generator
	sink  *sinkProg
	nodes []*lab.Node
}

func (b *bench) setup() error {
	src, err := b.lab.Pod("node1-pod1")
	if err != nil {
		return err
	}
	dst, err := b.lab.Pod("node2-pod1")
	if err != nil {
		return err
	}
	for _, n := range []string{"node1", "node2"} {
		node, err := b.lab.Node(n)
		if err != nil {
			return err
		}
		b.nodes = append(b.nodes, node)
	}
	sinkNetns, sinkDev := dst.Netns, dst.IfName
	if b.o.Hop == HopNode {
		sinkNetns, sinkDev = b.lab.FabricNetns, "n1"
	}
	if err := lab.InNetns(sinkNetns, func() error {
		b.sink, err = attachSink(sinkDev, sinkPort)
		return err
	}); err != nil {
		return fmt.Errorf("sink on %s in %s: %w", sinkDev, sinkNetns, err)
	}
	frame := udpFrame(b.o.FrameSize, src.HostMAC, src.MAC, src.IP, dst.IP, 4000, sinkPort)
	return lab.InNetns(src.Netns, func() error {
		ifindex, err := ifindexOf(src.IfName)
		if err != nil {
			return err
		}
		b.gen, err = xdpgen.New(ifindex, frame)
		return err
	})
}

func (b *bench) close() {
	if b.gen != nil {
		b.gen.Close()
	}
	if b.sink != nil {
		b.sink.Close()
	}
}

// startFIB loads the FIB on both nodes and programs it as the agent does
// (agent/reconcile from the nodes' flow tables, next hops resolved with
// netlink), without pins and without a controller: closing the FIBs
// detaches them.
func (b *bench) startFIB() ([]*fib.FIB, error) {
	var fibs []*fib.FIB
	for _, n := range b.nodes {
		err := lab.InNetns(n.Netns, func() error {
			f, err := fib.Open(fib.Options{MaxFlows: 1024})
			if err != nil {
				return err
			}
			fibs = append(fibs, f)
			attach := func(dev string) error { _, _, err := f.Attach(dev); return err }
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
		if err != nil {
			stopFIB(fibs)
			return nil, fmt.Errorf("FIB on %s: %w", n.Name, err)
		}
	}
	return fibs, nil
}

func stopFIB(fibs []*fib.FIB) {
	for _, f := range fibs {
		f.Close()
	}
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
		fibs, err := b.startFIB()
		if err != nil {
			return s, err
		}
		defer stopFIB(fibs)
	}
	gctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var genErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		genErr = b.gen.Run(gctx)
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
