// Command bench-fib measures the lab's cross-node pod-to-pod forwarding
// (64-byte UDP) through the XDP FIB and through the kernel's forwarding,
// side by side: the saturation rate, and what each forwarded packet costs
// at a fixed rate below it (the machine's busy CPU ns per packet, less a
// baseline path without forwarding nodes); then the same cost for a
// service VIP, the FIB's Maglev path against kube-proxy's iptables DNAT,
// with 100 and 10,000 services. It prints the medians; its last two lines
// are:
//
//	fib-forwarding: xdp_pps=<n> kernel_pps=<n> ratio=<xdp/kernel> xdp_ns_per_pkt=<n> kernel_ns_per_pkt=<n> cost_ratio=<kernel/xdp>
//	fib-services: services=10000 xdp_ns_per_pkt=<n> iptables_ns_per_pkt=<n> cost_ratio=<iptables/xdp>
//
// Run it as root: make bench-fib. perf/README.md explains the method.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/fibmesh/fibmesh/perf/fibbench"
)

func main() {
	var o fibbench.Options
	flag.IntVar(&o.Rounds, "rounds", 5, "saturation rounds of each mode; medians are reported")
	flag.DurationVar(&o.Window, "window", 0, "measured window per saturation round (default 2s)")
	flag.IntVar(&o.FrameSize, "size", 64, "frame size in bytes, Ethernet header included")
	flag.IntVar(&o.CostRounds, "cost-rounds", 5, "rounds of {baseline, xdp, kernel|iptables} for the per-packet cost; 0: none")
	flag.DurationVar(&o.CostWindow, "cost-window", 0, "measured window per cost sample (default 2s)")
	flag.Float64Var(&o.Rate, "rate", 100_000, "offered rate of the forwarding cost measurement, packets/s")
	flag.Float64Var(&o.ServiceRate, "service-rate", 2_000, "offered rate of the VIP cost measurement, packets/s (each packet a new flow; at most 58060)")
	flag.StringVar(&o.Clock, "clock", fibbench.ClockAttributed, "CPU time of the headline ns/pkt figures: attributed (this process + ksoftirqd) or machine (/proc/stat busy, all CPUs); both are measured and printed (perf/README.md says why attributed)")
	services := flag.String("services", "100,10000", "service counts of the VIP cost measurement, comma-separated; empty: none")
	flag.StringVar(&o.Prefix, "prefix", "fm-bench-", "name prefix of the lab's network namespaces")
	flag.BoolVar(&o.Established, "established", false, "also measure the VIP path for one established flow (a fixed 5-tuple) in both modes")
	out := flag.String("json", "perf/out/bench-fib.json", "where to write the samples as JSON (empty: nowhere)")
	skipNode := flag.Bool("cross-node-only", false, "skip the single-node measurement")
	flag.String("bin", "bin", "unused; accepted for make")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "bench-fib: XDP FIB vs kernel forwarding, cross-node pod to pod, in the lab: rate and CPU cost per packet; service VIP cost vs kube-proxy's iptables. Needs root.\n\nFlags:")
		flag.PrintDefaults()
	}
	flag.Parse()
	if o.CostRounds == 0 {
		o.CostRounds = -1
	}
	o.Services = []int{}
	for _, f := range strings.Split(*services, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench-fib: --services: %q is not a count\n", f)
			os.Exit(2)
		}
		o.Services = append(o.Services, n)
	}
	slices.Sort(o.Services)
	o.NoServices = len(o.Services) == 0 || o.CostRounds < 0
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench-fib: needs root (CAP_BPF, CAP_NET_ADMIN): it builds network namespaces and attaches XDP")
		os.Exit(2)
	}
	o.Out = os.Stdout
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fmt.Printf("bench-fib: %d rounds x {xdp, kernel} at saturation, %d-byte UDP frames from an AF_XDP generator in node1-pod1;\n"+
		"  node:       xdp_sink on node1's fabric port (one node's forwarding)\n"+
		"  cross-node: xdp_sink in node2-pod1 (node1, fabric bridge, node2)\n", o.Rounds, o.FrameSize)
	if o.CostRounds > 0 {
		fmt.Printf("  cost: %d rounds x {baseline, xdp, kernel} at %.0f packets/s: CPU time per delivered packet, less the baseline's\n", o.CostRounds, o.Rate)
		if !o.NoServices {
			fmt.Printf("  services %v: %d rounds x {baseline, xdp, iptables} at %.0f packets/s, a new flow per packet, to the last service's VIP\n", o.Services, o.CostRounds, o.ServiceRate)
		}
	}
	var reps []fibbench.Report
	for _, hop := range []string{fibbench.HopNode, fibbench.HopCrossNode} {
		if hop == fibbench.HopNode && *skipNode {
			continue
		}
		o.Hop = hop
		rep, err := fibbench.Run(ctx, o)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench-fib:", err)
			os.Exit(1)
		}
		reps = append(reps, rep)
		if hop == fibbench.HopNode {
			fmt.Println(rep.Line())
		}
	}
	if *out != "" {
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "bench-fib:", err)
			os.Exit(1)
		}
		b, _ := json.MarshalIndent(reps, "", "  ")
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench-fib:", err)
			os.Exit(1)
		}
	}
	cross := reps[len(reps)-1]
	svcs := cross.Services
	for _, r := range reps {
		if r.Rate > 0 {
			fmt.Printf("%s cost (ns/pkt net of the baseline, medians): machine xdp=%.0f kernel=%.0f; attributed xdp=%.0f kernel=%.0f; FIB program %.0f ns/run x %.2f runs/pkt (BPF stats); other processes used %.2f CPUs in the baseline windows\n",
				r.Hop, r.MachineXDPNs, r.MachineKernelNs, r.AttribXDPNs, r.AttribKernelNs, r.FIBProgNs, r.FIBProgRuns, r.OtherCPU)
		}
	}
	for _, s := range svcs {
		if o.Established {
			fmt.Printf("services=%d established flow (ns/pkt net of the baseline, medians, %s): xdp=%.0f iptables=%.0f\n", s.Services, s.Clock, s.EstablishedXDPNs, s.EstablishedIPTablesNs)
		}
		fmt.Printf("services=%d cost (ns/pkt net of the baseline, medians): machine xdp=%.0f iptables=%.0f; attributed xdp=%.0f iptables=%.0f; node1's FIB program %.0f ns/run (BPF stats); other processes used %.2f CPUs in the baseline windows\n",
			s.Services, s.MachineXDPNs, s.MachineIPTablesNs, s.AttribXDPNs, s.AttribIPTablesNs, s.FIBProgNs, s.OtherCPU)
	}
	for _, s := range svcs[:max(0, len(svcs)-1)] {
		fmt.Println(s.Line(fmt.Sprintf("fib-services-%d", s.Services)))
	}
	fmt.Println(cross.Line())
	if len(svcs) > 0 {
		fmt.Println(svcs[len(svcs)-1].Line("fib-services"))
	}
}
