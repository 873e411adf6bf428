package fibbench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/internal/quantile"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/perf/xdpgen"
)

// CostSample is one paced window: what the machine spent while the
// generator offered TargetPPS.
type CostSample struct {
	Round     int     `json:"round"`
	Mode      string  `json:"mode"` // "baseline", "xdp", "kernel" or "iptables"
	Services  int     `json:"services,omitempty"`
	TargetPPS float64 `json:"targetPps"`
	SentPPS   float64 `json:"sentPps"` // achieved by the generator
	RxPPS     float64 `json:"rxPps"`   // delivered to the sink(s)
	BusyCPU   float64 `json:"busyCpuSeconds"`
	Window    float64 `json:"windowSeconds"`
	// NsPerPkt is the machine's busy time over the packets delivered;
	// NetNsPerPkt the same less the round's baseline.
	NsPerPkt    float64 `json:"nsPerPkt"`
	NetNsPerPkt float64 `json:"netNsPerPkt"`
	// The same from the CPU time of this process and of ksoftirqd only
	// (attributedTime): what other processes on a shared machine ran in
	// the window is not in it.
	AttribCPU         float64 `json:"attributedCpuSeconds"`
	AttribNsPerPkt    float64 `json:"attributedNsPerPkt"`
	AttribNetNsPerPkt float64 `json:"attributedNetNsPerPkt"`
	// FIBNsPerRun is the FIB programs' own run time per run, by node
	// (BPF run-time statistics; xdp rounds), FIBRunsPerPkt how many runs
	// each delivered packet took on all nodes together.
	FIBNsPerRun    []float64 `json:"fibNsPerRun,omitempty"`
	FIBNsPerRunAll float64   `json:"fibNsPerRunAll,omitempty"` // all nodes together
	FIBRunsPerPkt  float64   `json:"fibRunsPerPkt,omitempty"`
	// NewFlows is the share of delivered packets that opened a new flow
	// (service rounds: the FIB's service_new_flow counter, or node1's
	// conntrack inserts).
	NewFlows float64 `json:"newFlows,omitempty"`
	Node1Fwd uint64  `json:"node1ForwDatagrams"`
	Node2Fwd uint64  `json:"node2ForwDatagrams"`
}

// errPace marks a window that did not hold the offered rate: the
// generator fell short or the path lost packets. Such a window measures
// a saturated path, not the cost at the rate.
var errPace = errors.New("offered rate not held")

// Tolerances of a paced window.
const (
	minRateShare     = 0.95 // sent / target
	minDeliveryShare = 0.95 // delivered / sent
	paceTries        = 3
)

// window is what one paced window needs: the generator's options, how
// to count what was delivered, and the FIB (xdp rounds) whose programs'
// statistics and counters to read.
type window struct {
	run      xdpgen.RunOptions
	count    func() (uint64, error)
	fibs     *fibs
	newFlows func() (uint64, error) // nil: not counted
}

// paced runs the generator for Warmup then measures CostWindow.
func (b *bench) paced(ctx context.Context, w window) (CostSample, error) {
	s := CostSample{TargetPPS: w.run.Rate}
	gctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var genErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		genErr = b.gen.Run(gctx, w.run)
	}()
	stop := func() { cancel(); wg.Wait() }
	defer stop()

	select {
	case <-time.After(b.o.Warmup):
	case <-ctx.Done():
		return s, ctx.Err()
	}
	type reading struct {
		busy, attrib time.Duration
		rx, tx       uint64
		f1, f2       lab.ForwardCounters
		st           [][]ebpf.ProgramStats
		newFlows     uint64
		at           time.Time
	}
	// The CPU clocks and the packet counters are read back to back; what
	// costs CPU to read (the counters of another namespace, iptables -L)
	// is read before the window opens and after it closes.
	clocks := func(r *reading) error {
		var errs [3]error
		r.busy, errs[0] = busyTime()
		r.attrib, errs[1] = attributedTime(b.ksoftirqd)
		r.rx, errs[2] = w.count()
		r.tx = b.gen.Sent()
		r.at = time.Now()
		return errors.Join(errs[:]...)
	}
	others := func(r *reading) error {
		var errs [4]error
		r.f1, errs[0] = lab.Counters(b.nodes[0].Netns)
		r.f2, errs[1] = lab.Counters(b.nodes[1].Netns)
		if w.fibs != nil {
			r.st, errs[2] = w.fibs.stats()
		}
		if w.newFlows != nil {
			r.newFlows, errs[3] = w.newFlows()
		}
		return errors.Join(errs[:]...)
	}
	var r0, r1 reading
	if err := errors.Join(others(&r0), clocks(&r0)); err != nil {
		return s, err
	}
	select {
	case <-time.After(b.o.CostWindow):
	case <-ctx.Done():
		return s, ctx.Err()
	}
	if err := errors.Join(clocks(&r1), others(&r1)); err != nil {
		return s, err
	}
	stop()
	if err := errors.Join(genErr, ctx.Err()); err != nil {
		return s, err
	}
	el := r1.at.Sub(r0.at).Seconds()
	rx := r1.rx - r0.rx
	s.Window = el
	s.SentPPS = float64(r1.tx-r0.tx) / el
	s.RxPPS = float64(rx) / el
	s.BusyCPU = (r1.busy - r0.busy).Seconds()
	s.Node1Fwd = r1.f1.ForwDatagrams - r0.f1.ForwDatagrams
	s.Node2Fwd = r1.f2.ForwDatagrams - r0.f2.ForwDatagrams
	if rx == 0 {
		return s, fmt.Errorf("no packet reached the sink (sent %d): the path is broken", r1.tx-r0.tx)
	}
	s.NsPerPkt = float64(r1.busy-r0.busy) / float64(rx)
	s.AttribCPU = (r1.attrib - r0.attrib).Seconds()
	s.AttribNsPerPkt = float64(r1.attrib-r0.attrib) / float64(rx)
	if w.fibs != nil && r0.st != nil {
		var runs uint64
		var total time.Duration
		for node := range r1.st {
			var rt time.Duration
			var n uint64
			for i := range r1.st[node] {
				rt += r1.st[node][i].Runtime - r0.st[node][i].Runtime
				n += r1.st[node][i].RunCount - r0.st[node][i].RunCount
			}
			runs += n
			total += rt
			if n > 0 {
				s.FIBNsPerRun = append(s.FIBNsPerRun, float64(rt)/float64(n))
			} else {
				s.FIBNsPerRun = append(s.FIBNsPerRun, 0)
			}
		}
		s.FIBRunsPerPkt = float64(runs) / float64(rx)
		if runs > 0 {
			s.FIBNsPerRunAll = float64(total) / float64(runs)
		}
	}
	if w.newFlows != nil {
		s.NewFlows = float64(r1.newFlows-r0.newFlows) / float64(rx)
	}
	if s.SentPPS < minRateShare*w.run.Rate {
		return s, fmt.Errorf("%w: the generator sent %.0f packets/s of %.0f (the machine is too busy, or the rate is above what the generator can do)", errPace, s.SentPPS, w.run.Rate)
	}
	if s.RxPPS < minDeliveryShare*s.SentPPS {
		return s, fmt.Errorf("%w: %.0f packets/s sent, %.0f delivered: the path is saturated at this rate", errPace, s.SentPPS, s.RxPPS)
	}
	return s, nil
}

// sample sets mode up, measures one window and tears mode down, trying
// again (up to paceTries in all) when the window did not hold the rate.
func (b *bench) sample(ctx context.Context, what string, setup func() (window, func() error, error)) (CostSample, error) {
	for try := 1; ; try++ {
		w, teardown, err := setup()
		if err != nil {
			return CostSample{}, err
		}
		s, err := b.paced(ctx, w)
		if terr := teardown(); terr != nil {
			return s, errors.Join(err, terr)
		}
		if err == nil || !errors.Is(err, errPace) || try == paceTries {
			return s, err
		}
		fmt.Fprintf(b.o.Out, "  %s: %v; again (try %d of %d)\n", what, err, try+1, paceTries)
	}
}

// rotate returns modes rotated left by r, so that over the rounds every
// mode takes every position: a drift of the machine's load over a round
// does not always favour the same mode.
func rotate(modes []string, r int) []string {
	r %= len(modes)
	return append(append([]string(nil), modes[r:]...), modes[:r]...)
}

// enableStats turns BPF run-time statistics on for as long as the
// returned closer is open; nil when the kernel refuses (the figures are
// then left out).
func enableStats() func() {
	c, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return func() {}
	}
	return func() { c.Close() }
}

// stats reads the run-time statistics of every node's FIB programs.
func (fs *fibs) stats() ([][]ebpf.ProgramStats, error) {
	out := make([][]ebpf.ProgramStats, len(fs.progs))
	for node, progs := range fs.progs {
		for _, p := range progs {
			st, err := p.Stats()
			if err != nil {
				return nil, fmt.Errorf("FIB program stats: %w", err)
			}
			out[node] = append(out[node], *st)
		}
	}
	return out, nil
}

// forwardingCost measures the cost rounds of the forwarding path: per
// round a baseline, an xdp and a kernel window, each net of the round's
// baseline.
func (b *bench) forwardingCost(ctx context.Context, rep *Report) error {
	defer enableStats()()
	run := xdpgen.RunOptions{Rate: b.o.Rate}
	rep.Rate = b.o.Rate
	var base, other, xdp, kern, xdpA, kernA, prog, runs []float64
	for r := 1; r <= b.o.CostRounds; r++ {
		got := map[string]CostSample{}
		for _, mode := range rotate([]string{"baseline", "xdp", "kernel"}, r-1) {
			what := fmt.Sprintf("%s cost round %d %s", b.o.Hop, r, mode)
			s, err := b.sample(ctx, what, func() (window, func() error, error) {
				return b.forwardingMode(mode, run)
			})
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			s.Round, s.Mode = r, mode
			got[mode] = s
		}
		for _, mode := range []string{"baseline", "xdp", "kernel"} {
			s := got[mode]
			if mode != "baseline" {
				s.NetNsPerPkt = s.NsPerPkt - got["baseline"].NsPerPkt
				s.AttribNetNsPerPkt = s.AttribNsPerPkt - got["baseline"].AttribNsPerPkt
			}
			rep.Cost = append(rep.Cost, s)
			fmt.Fprintf(b.o.Out, "%s cost round %d %s\n", b.o.Hop, r, costNote(s))
			switch mode {
			case "baseline":
				base = append(base, s.NsPerPkt)
				other = append(other, s.otherCPU())
			case "xdp":
				xdp = append(xdp, s.NetNsPerPkt)
				xdpA = append(xdpA, s.AttribNetNsPerPkt)
				if len(s.FIBNsPerRun) > 0 {
					prog = append(prog, s.FIBNsPerRunAll)
					runs = append(runs, s.FIBRunsPerPkt)
				}
			case "kernel":
				kern = append(kern, s.NetNsPerPkt)
				kernA = append(kernA, s.AttribNetNsPerPkt)
			}
		}
	}
	rep.Clock = b.o.Clock
	rep.BaselineNs = quantile.Median(base)
	rep.MachineXDPNs, rep.MachineKernelNs = quantile.Median(xdp), quantile.Median(kern)
	rep.AttribXDPNs, rep.AttribKernelNs = quantile.Median(xdpA), quantile.Median(kernA)
	rep.OtherCPU = quantile.Median(other)
	rep.XDPNs, rep.KernelNs = rep.MachineXDPNs, rep.MachineKernelNs
	if b.o.Clock == ClockAttributed {
		rep.XDPNs, rep.KernelNs = rep.AttribXDPNs, rep.AttribKernelNs
	}
	rep.CostRatio = ratio(rep.KernelNs, rep.XDPNs)
	rep.FIBProgNs = quantile.Median(prog)
	rep.FIBProgRuns = quantile.Median(runs)
	return nil
}

// forwardingMode sets a forwarding cost window up: the baseline's sink
// on node1-pod1's host veth, or the FIB, or nothing (kernel).
func (b *bench) forwardingMode(mode string, run xdpgen.RunOptions) (window, func() error, error) {
	w := window{run: run, count: b.sink.count}
	switch mode {
	case "baseline":
		s, err := sinkIn(b.nodes[0].Netns, b.src.HostVeth, sinkPort)
		if err != nil {
			return w, nil, err
		}
		w.count = s.count
		return w, s.Close, nil
	case "xdp":
		fs, err := b.startFIB()
		if err != nil {
			return w, nil, err
		}
		w.fibs = fs
		return w, func() error { fs.close(); return nil }, nil
	case "kernel":
		return w, func() error { return nil }, nil
	}
	return w, nil, fmt.Errorf("mode %q", mode)
}

// otherCPU is the share of one CPU that other processes used in the
// window: machine busy time less the attributed time.
func (s CostSample) otherCPU() float64 {
	return max(0, s.BusyCPU-s.AttribCPU) / s.Window
}

// ratio is a/b, 0 unless both are positive (a cost at or below the
// baseline is noise, and a ratio of it means nothing).
func ratio(a, b float64) float64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	return a / b
}

// costNote is a cost sample's progress line (after its round).
func costNote(s CostSample) string {
	return fmt.Sprintf("%-8s rate=%.0f tx_pps=%.0f rx_pps=%.0f busy_cpu_s=%.3f ns_per_pkt=%.0f net_ns_per_pkt=%.0f attributed_cpu_s=%.3f attributed_net_ns_per_pkt=%.0f%s",
		s.Mode, s.TargetPPS, s.SentPPS, s.RxPPS, s.BusyCPU, s.NsPerPkt, s.NetNsPerPkt, s.AttribCPU, s.AttribNetNsPerPkt, progNote(s))
}

// progNote is a progress line's tail: the BPF statistics and the share
// of new flows, where measured.
func progNote(s CostSample) string {
	n := ""
	for i, v := range s.FIBNsPerRun {
		n += fmt.Sprintf(" fib_prog_ns_per_run_node%d=%.0f", i+1, v)
	}
	if len(s.FIBNsPerRun) > 0 {
		n += fmt.Sprintf(" fib_runs_per_pkt=%.2f", s.FIBRunsPerPkt)
	}
	if s.NewFlows > 0 {
		n += fmt.Sprintf(" new_flows=%.2f", s.NewFlows)
	}
	return n
}
