// Command bench-fds measures FDS propagation in the lab (see package
// perf/fdsbench): a Pod added to the manifest directory → its route in
// the remote node's XDP FIB, and the same for a Pod removed. Its last
// line is the contract:
//
//	fds-propagation: p50_ms=<n> p99_ms=<n> rounds=50
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fibmesh/fibmesh/perf/fdsbench"
)

func main() {
	fs := flag.NewFlagSet("bench-fds", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `bench-fds: FDS propagation, manifest write → route in the remote node's XDP FIB.

Brings up a 2-node lab with its controller and agents (fibmesh-lab up -f DIR
--mesh), then, Rounds times: writes a Pod for node2 into DIR and times until
its /32 route is in node1's pinned FIB; removes it and times until the route
is gone. Needs root and the binaries of make build.

Flags:
`)
		fs.PrintDefaults()
	}
	var o fdsbench.Options
	fs.StringVar(&o.Bin, "bin", "bin", "directory holding fibmesh-lab, fibmesh-controller, fibmesh-agent")
	fs.IntVar(&o.Rounds, "rounds", 50, "rounds of add + remove")
	fs.StringVar(&o.Prefix, "prefix", "fm-fds-", "the lab's namespace prefix")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Second, "longest wait for one sample")
	fs.Parse(os.Args[1:])
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench-fds: needs root (network namespaces, BPF)")
		os.Exit(2)
	}
	o.Out = os.Stdout
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := fdsbench.Run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-fds:", err)
		os.Exit(1)
	}
	for _, n := range fdsbench.Names(res.AgentRSS) {
		fmt.Printf("%s rss_mb=%.1f\n", n, float64(res.AgentRSS[n])/(1<<20))
	}
	fmt.Println(fdsbench.Summary("fds-propagation-remove", res.Remove))
	fmt.Println(fdsbench.Summary("fds-propagation", res.Add))
}
