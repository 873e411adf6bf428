// Command bench-l4 measures L4 throughput, connections per second and the
// proxies' CPU per GB between two pods on two lab nodes, three ways side
// by side: direct (no mesh), fibmesh (mTLS through the two nodes' agents)
// and an haproxy pair with mTLS (see package perf/l4bench). Its last line
// is the contract:
//
//	l4-mesh: fibmesh_gbps=<n> haproxy_gbps=<n> direct_gbps=<n> fibmesh_cps=<n> haproxy_cps=<n>
//
// "bench-l4 cps" is the connections-per-second client the bench runs
// inside the client pods; it prints one JSON line.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fibmesh/fibmesh/perf/l4bench"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "cps" {
		os.Exit(cps(os.Args[2:]))
	}
	fs := flag.NewFlagSet("bench-l4", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `bench-l4: L4 throughput and connections per second, direct vs fibmesh vs an haproxy mTLS pair.

Brings up a 2-node lab (fibmesh-lab up -f DIR [--mesh], prefix fm-l4-) with a
client pod on node1 and a server pod (iperf3 and the echo app) on node2, for
the mesh and, labelled fibmesh.io/capture: disabled, for the direct and
haproxy modes; runs every mode --rounds times, interleaved, and prints the
medians. The fibmesh mode fails unless both agents' /connections show the
transfer carried over mTLS with both pods' SPIFFE IDs. The lab is taken down
at the end, also on failure. Needs root, iperf3 and haproxy (hack/deps.sh
bench-l4) and the binaries of make build. Exit status: 0 every mode measured,
1 a mode failed or the lab did not come up, 2 bad usage.

  bench-l4 [flags]
  bench-l4 cps --addr HOST:PORT [--workers 8] [--duration 5s | --count N]   (the client it runs in the pods)

Flags:
`)
		fs.PrintDefaults()
	}
	var o l4bench.Options
	modes := fs.String("modes", "direct,fibmesh,haproxy", "modes to run, comma-separated; the l4-mesh line needs all three")
	out := fs.String("json", "perf/out/bench-l4.json", "where to write the samples as JSON (empty: nowhere)")
	fs.StringVar(&o.Bin, "bin", "bin", "directory holding fibmesh-lab, fibmesh-controller, fibmesh-agent")
	fs.IntVar(&o.Rounds, "rounds", 3, "rounds of every mode (medians are reported)")
	fs.DurationVar(&o.Duration, "duration", 5*time.Second, "length of each throughput run (whole seconds)")
	fs.DurationVar(&o.CPSDuration, "cps-duration", 5*time.Second, "length of each connections-per-second run")
	fs.IntVar(&o.Workers, "workers", 8, "parallel workers of the connections-per-second run")
	fs.IntVar(&o.Streams, "streams", 1, "parallel TCP streams of the throughput run (iperf3 --parallel)")
	fs.BoolVar(&o.HAProxyNoReuse, "haproxy-no-reuse", false, "make the client-side haproxy do a full TLS handshake per connection (no-ssl-reuse; by default it resumes sessions)")
	fs.StringVar(&o.Prefix, "prefix", "fm-l4-", "the lab's namespace prefix")
	fs.StringVar(&o.StateDir, "state-dir", l4bench.DefaultStateDir, "the lab's state directory")
	fs.DurationVar(&o.Timeout, "timeout", 3*time.Minute, "longest wait for the lab and for each mode's first connection")
	fs.Parse(os.Args[1:])
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var err error
	if o.Modes, err = l4bench.ParseModes(*modes); err != nil {
		fmt.Fprintln(os.Stderr, "bench-l4:", err)
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench-l4: needs root (network namespaces, BPF)")
		os.Exit(2)
	}
	if o.Self, err = os.Executable(); err != nil {
		log.Error("bench-l4: own path", "err", err)
		os.Exit(1)
	}
	o.Out = os.Stdout
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := l4bench.Run(ctx, o)
	if res != nil {
		fmt.Println()
		res.WriteTable(os.Stdout)
		if *out != "" {
			if werr := res.WriteJSON(*out); werr != nil {
				log.Error("bench-l4: samples", "file", *out, "err", werr)
			}
		}
	}
	if err != nil {
		log.Error("bench-l4 failed", "err", err)
		os.Exit(1)
	}
	if ferr := res.Failed(); ferr != nil {
		log.Error("bench-l4: a mode failed", "err", ferr)
		os.Exit(1)
	}
	line, err := res.Line()
	if err != nil {
		// A subset of the modes ran (--modes): the figures are in the table.
		log.Info(err.Error())
		return
	}
	fmt.Println(line)
}

// cps is the connections-per-second client, run inside a pod's network
// namespace: it prints one JSON line (l4bench.CPSResult).
func cps(args []string) int {
	fs := flag.NewFlagSet("bench-l4 cps", flag.ExitOnError)
	var o l4bench.CPSOptions
	fs.StringVar(&o.Addr, "addr", "", "HOST:PORT of an echo server (fibmesh-lab app echo)")
	fs.IntVar(&o.Workers, "workers", 8, "parallel workers, each one connection after the other")
	fs.DurationVar(&o.Duration, "duration", 5*time.Second, "how long to run")
	fs.IntVar(&o.Count, "count", 0, "stop each worker after this many connections instead of --duration")
	fs.DurationVar(&o.Timeout, "timeout", 2*time.Second, "bound on one connection")
	fs.Parse(args)
	if o.Addr == "" {
		fmt.Fprintln(os.Stderr, "bench-l4 cps: --addr is required (HOST:PORT of an echo server)")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res := l4bench.RunCPS(ctx, o)
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "bench-l4 cps:", err)
		return 1
	}
	return 0
}
