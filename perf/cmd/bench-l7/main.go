// Command bench-l7 measures what the mesh's L7 path costs for 1 KB
// HTTP/1.1 answers between two pods on two lab nodes, three ways side by
// side: direct (no mesh), fibmesh (the two nodes' agents, mTLS, an HTTP
// port) and an haproxy pair in HTTP mode with mTLS (see package
// perf/l7bench): the latency each adds over direct at a fixed 1,000
// requests per second (open loop), requests per second at full load, and
// the proxies' CPU per 1,000 requests and memory. Its last line is the
// contract:
//
//	l7-mesh: rps=<n> haproxy_rps=<n> direct_rps=<n> added_p50_us=<n> added_p99_us=<n> haproxy_added_p99_us=<n> cpu_ms_per_1k=<n> rss_mb=<n>
//
// "bench-l7 serve" is the server app the bench runs in the server pods,
// "bench-l7 load" the load generator it runs inside the client pods (it
// prints one JSON line).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/fibmesh/fibmesh/perf/l7bench"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "load":
			os.Exit(load(os.Args[2:]))
		case "serve":
			os.Exit(serve(os.Args[2:]))
		}
	}
	fs := flag.NewFlagSet("bench-l7", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `bench-l7: HTTP/1.1 latency, requests per second and proxy CPU, direct vs fibmesh (L7) vs an haproxy mTLS pair.

Brings up a 2-node lab (fibmesh-lab up -f DIR [--mesh], prefix fm-l7-) with a
client pod on node1 and a server pod (1 KB answers) on node2, for the mesh
(Service port http-web, STRICT mTLS) and, labelled fibmesh.io/capture:
disabled, for the direct and haproxy rows. Every round of every row runs a
fixed-rate phase (open loop, latency from each request's due time) and a
full-load phase (closed loop), interleaved, and the medians are printed. The
fibmesh row says whether its requests took the L7 path (the server saw an
x-forwarded-client-cert naming the client) or the L4 one (both agents'
/connections show mTLS between the pods), and fails if neither. The lab is
taken down at the end, also on failure. Needs root, haproxy (hack/deps.sh
bench-l4) and the binaries of make build. Exit status: 0 every row measured,
1 a row failed or the lab did not come up, 2 bad usage.

  bench-l7 [flags]
  bench-l7 load --addr HOST:PORT [--rate N] [--conns 32] [--duration 5s] ...  (the generator; -h for its flags)
  bench-l7 serve [--port 8080] [--size 1024]                                  (the server app)

Flags:
`)
		fs.PrintDefaults()
	}
	var o l7bench.Options
	modes := fs.String("modes", "direct,fibmesh,haproxy", "rows to run, comma-separated; the l7-mesh line needs all three")
	out := fs.String("json", "perf/out/bench-l7.json", "where to write the samples as JSON (empty: nowhere)")
	fs.StringVar(&o.Bin, "bin", "bin", "directory holding fibmesh-lab, fibmesh-controller, fibmesh-agent")
	fs.IntVar(&o.Rounds, "rounds", 3, "rounds of every row (medians are reported)")
	fs.Float64Var(&o.Rate, "rate", 1000, "requests per second of the fixed-rate phase (open loop)")
	fs.IntVar(&o.Conns, "conns", 32, "keep-alive connections of the fixed-rate phase")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "measured length of the fixed-rate phase")
	fs.IntVar(&o.LoadConns, "load-conns", 64, "connections of the full-load phase (closed loop)")
	fs.DurationVar(&o.LoadDuration, "load-duration", 5*time.Second, "measured length of the full-load phase")
	fs.DurationVar(&o.Warmup, "warmup", time.Second, "unmeasured warm-up before each phase")
	fs.IntVar(&o.Size, "size", l7bench.DefaultBodySize, "bytes of every answer's body")
	fs.IntVar(&o.RequestSize, "request-size", 256, "bytes of every request's head")
	fs.StringVar(&o.Prefix, "prefix", "fm-l7-", "the lab's namespace prefix")
	fs.StringVar(&o.StateDir, "state-dir", l7bench.DefaultStateDir, "the lab's state directory")
	fs.DurationVar(&o.Timeout, "timeout", 3*time.Minute, "longest wait for the lab and for each row's first answer")
	fs.StringVar(&o.ProfileDir, "profile", "", "directory to write a CPU profile of each agent to, recorded during the fibmesh row's first full-load phase (costs the agents a few per cent)")
	fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench-l7: unexpected argument %q (subcommands: load, serve)\n", fs.Arg(0))
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var err error
	if o.Modes, err = l7bench.ParseModes(*modes); err != nil {
		fmt.Fprintln(os.Stderr, "bench-l7:", err)
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench-l7: needs root (network namespaces, BPF)")
		os.Exit(2)
	}
	if o.Self, err = os.Executable(); err != nil {
		log.Error("bench-l7: own path", "err", err)
		os.Exit(1)
	}
	o.Out = os.Stdout
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := l7bench.Run(ctx, o)
	if res != nil {
		fmt.Println()
		res.WriteTable(os.Stdout)
		if *out != "" {
			if werr := res.WriteJSON(*out); werr != nil {
				log.Error("bench-l7: samples", "file", *out, "err", werr)
			}
		}
	}
	if err != nil {
		log.Error("bench-l7 failed", "err", err)
		os.Exit(1)
	}
	if ferr := res.Failed(); ferr != nil {
		log.Error("bench-l7: a row failed", "err", ferr)
		os.Exit(1)
	}
	line, err := res.Line()
	if err != nil {
		// A subset of the rows ran (--modes): the figures are above.
		log.Info(err.Error())
		return
	}
	fmt.Println(line)
}

// load is the generator, run inside a pod's network namespace: it prints
// one JSON line (l7bench.LoadResult).
func load(args []string) int {
	o, err := l7bench.ParseLoadArgs(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res := l7bench.RunLoad(ctx, o)
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "bench-l7 load:", err)
		return 1
	}
	return 0
}

// serve is the server app of the bench's server pods.
func serve(args []string) int {
	fs := flag.NewFlagSet("bench-l7 serve", flag.ExitOnError)
	port := fs.Int("port", 8080, "TCP port to answer HTTP/1.1 and h2c on (all addresses)")
	size := fs.Int("size", l7bench.DefaultBodySize, "bytes of every answer's body")
	fs.Parse(args)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := l7bench.Serve(ctx, ":"+strconv.Itoa(*port), *size, func(a net.Addr) {
		log.Info("bench-l7 serve: listening", "addr", a.String(), "size", *size)
	})
	if err != nil {
		log.Error("bench-l7 serve", "err", err)
		return 1
	}
	return 0
}
