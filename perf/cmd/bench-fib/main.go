// Command bench-fib measures the lab's cross-node pod-to-pod packet rate
// (64-byte UDP) through the XDP FIB and through the kernel's forwarding,
// side by side, and prints the medians. Its last line is:
//
//	fib-forwarding: xdp_pps=<n> kernel_pps=<n> ratio=<xdp/kernel>
//
// Run it as root: make bench-fib.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/fibmesh/fibmesh/perf/fibbench"
)

func main() {
	var o fibbench.Options
	flag.IntVar(&o.Rounds, "rounds", 5, "rounds of each mode; medians are reported")
	flag.DurationVar(&o.Window, "window", 0, "measured window per round (default 3s)")
	flag.IntVar(&o.FrameSize, "size", 64, "frame size in bytes, Ethernet header included")
	out := flag.String("json", "perf/out/bench-fib.json", "where to write the samples as JSON (empty: nowhere)")
	skipNode := flag.Bool("cross-node-only", false, "skip the single-node measurement")
	flag.String("bin", "bin", "unused; accepted for make")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "bench-fib: XDP FIB vs kernel forwarding, cross-node pod to pod, in the lab. Needs root.\n\nFlags:")
		flag.PrintDefaults()
	}
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench-fib: needs root (CAP_BPF, CAP_NET_ADMIN): it builds network namespaces and attaches XDP")
		os.Exit(2)
	}
	o.Out = os.Stdout
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fmt.Printf("bench-fib: %d rounds x {xdp, kernel}, %d-byte UDP frames from an AF_XDP generator in node1-pod1;\n"+
		"  node:       xdp_sink on node1's fabric port (one node's forwarding)\n"+
		"  cross-node: xdp_sink in node2-pod1 (node1, fabric bridge, node2)\n", o.Rounds, o.FrameSize)
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
	fmt.Println(reps[len(reps)-1].Line())
}
