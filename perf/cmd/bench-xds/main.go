// Command bench-xds measures how fast a change reaches every agent: the
// controller's xDS server (in a process of its own, with the synthetic
// mesh of package xdsbench) and N simulated agents (real gRPC streams
// over loopback, one connection each, in this process). Route rounds
// edit one service's canary weights and time, for every agent, the
// change (as the controller saw it) to the agent's ACK of the new route
// configuration; churn rounds flip one pod's readiness and time the
// change to the ACK of the last response it caused (the service's load
// assignments and its flow-table shard). It reports p50/p99 across
// agents (per kind of round, the median over rounds), bytes sent, the
// controller's CPU per round, and its RSS: after the rounds, once freed
// memory is returned to the OS (debug.FreeOSMemory), and its peak
// (VmHWM), reached while every agent syncs at once at the start.
//
//	bench-xds [--agents 1000[,5000...]] [--services 1000] [--pods 10000] [--rounds 10] [--churn-rounds 10] [--protocol delta|sotw]
//
// Last line (of each agent count): xds-convergence: agents=<n>
// p50_ms=<n> p99_ms=<n> rss_mb=<n> peak_rss_mb=<n> bytes_per_edit=<n>,
// where p50/p99 are the worse of the two kinds' medians and
// bytes_per_edit the bytes sent per edit, averaged over every round.
//
// Lines before it, "controller memory before the agents (MB)", "after
// sync" and "after rounds", say where the controller's RSS goes at the point rss_mb is
// read (runtime/metrics): the live heap, in-use spans' unused bytes
// (fragmentation), goroutine stacks, the runtime's metadata, the
// goroutine count and the GC goal; what RSS has beyond the runtime's
// total less released is the executable's mapped text and data.
//
// BENCH_XDS_CPUPROFILE, BENCH_XDS_SYNC_CPUPROFILE, BENCH_XDS_HEAPPROFILE
// and BENCH_XDS_SYNC_HEAPPROFILE name files for the controller's CPU
// profile of the rounds, of the first sync, its heap profile as the collection before rss_mb found
// it (after the sync, then after the rounds) and its heap profile
// mid-sync (half the agents served). BENCH_XDS_MEMPROFILERATE samples the
// heap profiles every that many bytes (default 512 kB).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fibmesh/fibmesh/agent/xdsclient"
	"github.com/fibmesh/fibmesh/controller/ca"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/controller/xds"
	"github.com/fibmesh/fibmesh/controller/xds/envoy"
	"github.com/fibmesh/fibmesh/internal/quantile"
	"github.com/fibmesh/fibmesh/perf/xdsbench"
)

type opts struct {
	agents, services, pods, rounds, churn int
	protocol, out                         string
	timeout                               time.Duration
}

func main() {
	var o opts
	fs := flag.NewFlagSet("bench-xds", flag.ContinueOnError)
	agentList := fs.String("agents", "1000", "simulated agents, one per node; a comma-separated list runs one benchmark per count, in order")
	fs.IntVar(&o.services, "services", 1000, "services (each with a VirtualService and a DestinationRule with 2 subsets)")
	fs.IntVar(&o.pods, "pods", 10000, "pods, spread over the nodes and the services")
	fs.IntVar(&o.rounds, "rounds", 10, "VirtualService edits to time")
	fs.IntVar(&o.churn, "churn-rounds", 10, "endpoint churn rounds to time after the edits: one pod's readiness flips (and back the next round)")
	fs.StringVar(&o.protocol, "protocol", "delta", "xDS protocol of the agents: delta or sotw")
	fs.StringVar(&o.out, "out", "perf/out/bench-xds.json", "where the per-round samples go (JSON)")
	fs.DurationVar(&o.timeout, "timeout", 180*time.Second, "longest wait for all agents, at start and per round")
	role := fs.String("role", "", "internal: 'controller' runs the controller side")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if o.protocol != "delta" && o.protocol != "sotw" {
		fmt.Fprintf(os.Stderr, "bench-xds: --protocol %q: want delta or sotw\n", o.protocol)
		os.Exit(2)
	}
	var counts []int
	for _, f := range strings.Split(*agentList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "bench-xds: --agents %q: want agent counts like 1000 or 5000,1000\n", *agentList)
			os.Exit(2)
		}
		counts = append(counts, n)
	}
	if *role == "controller" {
		o.agents = counts[0]
		if err := controller(o, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench-xds:", err)
			os.Exit(1)
		}
		return
	}
	out := o.out
	if len(counts) > 1 {
		// One process per count: the simulated agents of a large run
		// (5,000 held 6.7 GB) would otherwise stay in this process's heap
		// and its collector would take CPU from the next, smaller run.
		self, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench-xds:", err)
			os.Exit(1)
		}
		for _, n := range counts {
			args := append(slices.Clone(os.Args[1:]), "--agents", strconv.Itoa(n),
				"--out", strings.TrimSuffix(out, ".json")+"-"+strconv.Itoa(n)+".json")
			cmd := exec.Command(self, args...)
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintf(os.Stderr, "bench-xds: %d agents: %v\n", n, err)
				os.Exit(1)
			}
		}
		return
	}
	o.agents = counts[0]
	if err := bench(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-xds:", err)
		os.Exit(1)
	}
}

// controller is the controller side: it builds the mesh, serves xDS on
// loopback and answers the parent's commands on in/out:
//
//	change S W   set service S's v1 weight to W; answers "changed T0NS BUILDNS"
//	             and then, once pushed, "pushed PUSHNS"
//	ready P R    set pod P's endpoint ready (R=1) or not (R=0); answers as change
//	heap PATH    writes a heap profile to PATH; answers "heap written"
//	stats        answers one JSON line of counters and memory
func controller(o opts, in io.Reader, out io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	xds.SetDefaultMemoryLimit() // as fibmesh-controller does
	// BENCH_XDS_MEMPROFILERATE: sample the heap profiles finer than
	// every 512 kB (bytes; e.g. 65536).
	if v := os.Getenv("BENCH_XDS_MEMPROFILERATE"); v != "" {
		rate, err := strconv.Atoi(v)
		if err != nil || rate <= 0 {
			return fmt.Errorf("BENCH_XDS_MEMPROFILERATE=%q: want bytes between samples, like 65536", v)
		}
		runtime.MemProfileRate = rate
	}
	mesh, err := xdsbench.New(o.services, o.pods, o.agents)
	if err != nil {
		return err
	}
	var pushErr atomic.Value
	srv := xds.New(xds.Options{OnPush: func(r xds.PushResult) {
		if r.Err != nil {
			pushErr.Store(r.Err)
		}
	}})
	reg := prometheus.NewRegistry()
	reg.MustRegister(srv.Collectors()...)
	authority, err := ca.New("cluster.local")
	if err != nil {
		return err
	}
	if err := srv.SetTrustBundle(ca.BundleSecret(envoy.RootCASecret, authority.Bundle())); err != nil {
		return err
	}
	g := grpc.NewServer(xds.GRPCServerOptions()...)
	srv.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go g.Serve(ln)
	defer g.Stop()
	go srv.Run(ctx)

	start := time.Now()
	m, err := model.Build(mesh.Snapshot, nil, model.Options{})
	if err != nil {
		return err
	}
	buildFirst := time.Since(start)
	srv.Update(m)
	if err := waitPushed(ctx, srv, m.Version, &pushErr); err != nil {
		return err
	}
	runtime.GC()
	fmt.Fprintf(out, "ready %s %d %d\n", ln.Addr(), buildFirst.Nanoseconds(), time.Since(start).Nanoseconds())

	// BENCH_XDS_SYNC_CPUPROFILE: profile the first sync, from the
	// parent's first "stats" (before it starts the agents) to its second
	// (every agent synced).
	syncProfile, nstats := os.Getenv("BENCH_XDS_SYNC_CPUPROFILE"), 0
	profiling := false
	defer func() {
		if profiling {
			pprof.StopCPUProfile()
		}
	}()
	// edit applies one edit to the mesh, builds and pushes the model, and
	// reports: "changed T0NS BUILDNS", then "pushed PUSHNS".
	edit := func(do func()) error {
		// BENCH_XDS_CPUPROFILE: profile the rounds, not the sync.
		if path := os.Getenv("BENCH_XDS_CPUPROFILE"); path != "" && !profiling {
			pf, err := os.Create(path)
			if err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(pf); err != nil {
				return err
			}
			profiling = true
		}
		t0 := time.Now()
		do()
		next, err := model.Build(mesh.Snapshot, m, model.Options{})
		if err != nil {
			return err
		}
		m = next
		built := time.Since(t0)
		srv.Update(m)
		fmt.Fprintf(out, "changed %d %d\n", t0.UnixNano(), built.Nanoseconds())
		if err := waitPushed(ctx, srv, m.Version, &pushErr); err != nil {
			return err
		}
		fmt.Fprintf(out, "pushed %d\n", time.Since(t0).Nanoseconds())
		return nil
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "change":
			s, _ := strconv.Atoi(f[1])
			w, _ := strconv.Atoi(f[2])
			if err := edit(func() { mesh.SetCanary(s, int32(w)) }); err != nil {
				return err
			}
		case len(f) == 3 && f[0] == "ready":
			p, _ := strconv.Atoi(f[1])
			if err := edit(func() { mesh.SetReady(p, f[2] == "1") }); err != nil {
				return err
			}
		case len(f) == 2 && f[0] == "heap":
			// A heap profile now (the parent asks mid-sync).
			runtime.GC()
			hf, err := os.Create(f[1])
			if err != nil {
				return err
			}
			pprof.WriteHeapProfile(hf)
			hf.Close()
			fmt.Fprintln(out, "heap written")
		case len(f) >= 1 && f[0] == "stats":
			nstats++
			if syncProfile != "" && nstats == 2 {
				pprof.StopCPUProfile()
			}
			// CPU first: the collections below are the benchmark's, not
			// the rounds'.
			var ru syscall.Rusage
			cpuMs := 0.0
			if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
				cpuMs = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e6
			}
			// "stats rss": return freed memory first, so that RSS is
			// what the controller holds, not what a burst left mapped
			// (VmHWM keeps the peak). Not between rounds: the next
			// push would fault the pages back in.
			if len(f) == 2 && f[1] == "rss" {
				debug.FreeOSMemory()
				// The heap as that collection found it: what the RSS
				// measured holds (after the sync, then after the
				// rounds, which overwrites it).
				if path := os.Getenv("BENCH_XDS_HEAPPROFILE"); path != "" {
					hf, err := os.Create(path)
					if err != nil {
						return err
					}
					pprof.WriteHeapProfile(hf)
					hf.Close()
				}
			}
			st, err := stats(reg)
			if err != nil {
				return err
			}
			st.Syncing, st.CPUMs = srv.Syncing(), cpuMs
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			st.HeapMB, st.StacksMB = float64(ms.HeapInuse)/(1<<20), float64(ms.StackInuse)/(1<<20)
			st.Mem = memMetrics()
			procRSS(st.Mem)
			b, _ := json.Marshal(st)
			if syncProfile != "" && nstats == 1 {
				pf, err := os.Create(syncProfile)
				if err != nil {
					return err
				}
				if err := pprof.StartCPUProfile(pf); err != nil {
					return err
				}
			}
			fmt.Fprintf(out, "%s\n", b)
		default:
			return fmt.Errorf("controller: unknown command %q", sc.Text())
		}
	}
	return sc.Err()
}

func waitPushed(ctx context.Context, srv *xds.Server, version uint64, pushErr *atomic.Value) error {
	for {
		select {
		case v := <-srv.Pushed():
			if v >= version {
				return nil
			}
		case <-time.After(time.Minute):
			if e := pushErr.Load(); e != nil {
				return e.(error)
			}
			return fmt.Errorf("model version %d not pushed in a minute", version)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ctlStats is what the controller reports.
type ctlStats struct {
	RSSMB     float64            `json:"rss_mb"`
	HWMMB     float64            `json:"hwm_mb"`
	Pushes    float64            `json:"pushes"`
	Responses map[string]float64 `json:"responses"`
	Bytes     map[string]float64 `json:"bytes"`
	Connected float64            `json:"connected"`
	Syncing   int                `json:"syncing"` // streams whose first sync is not done
	// CPUMs is the controller's CPU time (user + system) so far: a
	// round's share does not depend on what else the machine runs.
	CPUMs float64 `json:"cpu_ms"`
	// HeapMB and StacksMB are the Go runtime's heap in use and goroutine
	// stacks (runtime.MemStats HeapInuse, StackInuse).
	HeapMB   float64 `json:"heap_mb"`
	StacksMB float64 `json:"stacks_mb"`
	// Mem is where the runtime's memory goes (runtime/metrics, MB but
	// goroutines and gc_cycles), as memMetrics reads it.
	Mem map[string]float64 `json:"mem"`
}

// memSamples are the runtime/metrics memMetrics reads, by the name it
// reports them under.
var memSamples = []struct{ name, metric string }{
	{"live", "/gc/heap/live:bytes"},                           // marked live by the last GC
	{"objects", "/memory/classes/heap/objects:bytes"},         // live and not yet swept
	{"unused", "/memory/classes/heap/unused:bytes"},           // in-use spans, no object: fragmentation
	{"free", "/memory/classes/heap/free:bytes"},               // free spans still mapped
	{"released", "/memory/classes/heap/released:bytes"},       // free spans returned to the OS
	{"stacks", "/memory/classes/heap/stacks:bytes"},           // goroutine stacks
	{"os_stacks", "/memory/classes/os-stacks:bytes"},          // threads' stacks
	{"metadata", "/memory/classes/metadata/other:bytes"},      // GC and allocator metadata
	{"mspan", "/memory/classes/metadata/mspan/inuse:bytes"},   // span structures
	{"mcache", "/memory/classes/metadata/mcache/inuse:bytes"}, //
	{"other", "/memory/classes/other:bytes"},                  // the rest of the runtime's
	{"profiling", "/memory/classes/profiling/buckets:bytes"},  // profiling buckets
	{"total", "/memory/classes/total:bytes"},                  // all the runtime mapped
	{"goal", "/gc/heap/goal:bytes"},                           // heap size the next GC aims at
	{"goroutines", "/sched/goroutines:goroutines"},            // count
	{"gc_cycles", "/gc/cycles/total:gc-cycles"},               // count
	{"alloc", "/gc/heap/allocs:bytes"},                        // allocated in all
	{"alloc_objects", "/gc/heap/allocs:objects"},              // count
}

// memMetrics reads memSamples: bytes in MB, counts as they are.
func memMetrics() map[string]float64 {
	ss := make([]metrics.Sample, len(memSamples))
	for i, m := range memSamples {
		ss[i].Name = m.metric
	}
	metrics.Read(ss)
	out := make(map[string]float64, len(ss))
	for i, s := range ss {
		if s.Value.Kind() != metrics.KindUint64 {
			continue // not in this Go version
		}
		v := float64(s.Value.Uint64())
		if strings.HasSuffix(s.Name, ":bytes") {
			v /= 1 << 20
		}
		out[memSamples[i].name] = v
	}
	return out
}

// memLine is memMetrics as one line, in memSamples' order.
// procRSS adds to m where the RSS is (MB): anonymous memory (the
// runtime's) and the executable's pages, mapped from its file.
func procRSS(m map[string]float64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && (f[0] == "RssAnon:" || f[0] == "RssFile:") {
			kb, _ := strconv.ParseFloat(f[1], 64)
			m[strings.ToLower(strings.TrimSuffix(f[0], ":"))] = kb / 1024
		}
	}
}

func memLine(m map[string]float64) string {
	var b strings.Builder
	for _, k := range []string{"rssanon", "rssfile"} {
		if v, ok := m[k]; ok {
			fmt.Fprintf(&b, " %s=%.1f", k, v)
		}
	}
	for _, s := range memSamples {
		v, ok := m[s.name]
		if !ok {
			continue
		}
		if strings.HasSuffix(s.metric, ":bytes") {
			fmt.Fprintf(&b, " %s=%.1f", s.name, v)
		} else {
			fmt.Fprintf(&b, " %s=%.0f", s.name, v)
		}
	}
	return strings.TrimSpace(b.String())
}

func stats(reg *prometheus.Registry) (ctlStats, error) {
	st := ctlStats{Responses: map[string]float64{}, Bytes: map[string]float64{}}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return st, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "VmRSS:" || f[0] == "VmHWM:") {
			kb, _ := strconv.ParseFloat(f[1], 64)
			if f[0] == "VmRSS:" {
				st.RSSMB = kb / 1024
			} else {
				st.HWMMB = kb / 1024
			}
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		return st, err
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			label := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "type" {
					label = l.GetValue()
				}
			}
			switch mf.GetName() {
			case "fibmesh_xds_pushes_total":
				st.Pushes = m.GetCounter().GetValue()
			case "fibmesh_xds_responses_total":
				st.Responses[label] = m.GetCounter().GetValue()
			case "fibmesh_xds_response_bytes_total":
				st.Bytes[label] = m.GetCounter().GetValue()
			case "fibmesh_xds_connected_agents":
				st.Connected = m.GetGauge().GetValue()
			}
		}
	}
	return st, nil
}

// round is one edit's result.
type round struct {
	Round     int       `json:"round"`
	Kind      string    `json:"kind"` // route (a VirtualService edit) or churn (a pod's readiness)
	BuildMs   float64   `json:"model_build_ms"`
	PushMs    float64   `json:"push_ms"` // change → caches updated
	P50Ms     float64   `json:"p50_ms"`
	P99Ms     float64   `json:"p99_ms"`
	MaxMs     float64   `json:"max_ms"`
	Agents    int       `json:"agents_acked"`
	Bytes     float64   `json:"bytes_sent"`
	CPUMs     float64   `json:"controller_cpu_ms"`
	Responses float64   `json:"responses_sent"`
	Samples   []float64 `json:"-"`
}

func bench(o opts) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"--role", "controller", "--agents", strconv.Itoa(o.agents), "--services", strconv.Itoa(o.services), "--pods", strconv.Itoa(o.pods)}
	fmt.Printf("bench-xds: %d agents (%s)\n", o.agents, o.protocol)
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	toCtl, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	fromCtl, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		toCtl.Close()
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	lines := bufio.NewScanner(fromCtl)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	read := func(want string) ([]string, error) {
		if !lines.Scan() {
			return nil, fmt.Errorf("controller exited before %q: %v", want, lines.Err())
		}
		f := strings.Fields(lines.Text())
		if want != "" && (len(f) == 0 || f[0] != want) {
			return nil, fmt.Errorf("controller said %q, want %s", lines.Text(), want)
		}
		return f, nil
	}
	f, err := read("ready")
	if err != nil {
		return err
	}
	addr := f[1]
	buildNs, _ := strconv.ParseInt(f[2], 10, 64)
	readyNs, _ := strconv.ParseInt(f[3], 10, 64)
	fmt.Printf("mesh: %d services, %d pods, %d nodes; first model build %.1f ms, first push done %.1f ms after start\n",
		o.services, o.pods, o.agents, float64(buildNs)/1e6, float64(readyNs)/1e6)

	ctlStatsNow := func(rss bool) (ctlStats, error) {
		if rss {
			fmt.Fprintln(toCtl, "stats rss")
		} else {
			fmt.Fprintln(toCtl, "stats")
		}
		if !lines.Scan() {
			return ctlStats{}, fmt.Errorf("controller exited: %v", lines.Err())
		}
		var st ctlStats
		err := json.Unmarshal(lines.Bytes(), &st)
		return st, err
	}

	// Where the RSS goes with the mesh built and pushed, before any
	// agent: the model, the served resources, what the build left.
	stReady, err := ctlStatsNow(true)
	if err != nil {
		return err
	}

	// Agents.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agents := make([]*agent, o.agents)
	var wg sync.WaitGroup
	connStart := time.Now()
	for i := range agents {
		a, err := startAgent(ctx, addr, xdsbench.NodeName(i), o.protocol == "delta", &wg)
		if err != nil {
			return err
		}
		agents[i] = a
	}
	defer func() {
		cancel()
		wg.Wait()
	}()
	deadline := time.After(o.timeout)
	for i, a := range agents {
		// BENCH_XDS_SYNC_HEAPPROFILE: a heap profile of the controller
		// when half the agents have had their first responses.
		if path := os.Getenv("BENCH_XDS_SYNC_HEAPPROFILE"); path != "" && i == len(agents)/2 {
			fmt.Fprintf(toCtl, "heap %s\n", path)
			if _, err := read("heap"); err != nil {
				return err
			}
		}
		select {
		case <-a.synced:
		case <-deadline:
			return fmt.Errorf("agents not synced in %s", o.timeout)
		case err := <-failures:
			return err
		}
	}
	// Every agent has had a response of every type; a first sync goes
	// out in pages, so wait until the controller says none is left.
	st0, err := ctlStatsNow(false)
	for err == nil && st0.Syncing > 0 {
		select {
		case <-deadline:
			return fmt.Errorf("%d agents still syncing after %s", st0.Syncing, o.timeout)
		case err := <-failures:
			return err
		case <-time.After(50 * time.Millisecond): // polling the controller's count
		}
		st0, err = ctlStatsNow(false)
	}
	if err == nil {
		st0, err = ctlStatsNow(true)
	}
	if err != nil {
		return err
	}
	fmt.Printf("agents: %d connected (%s), all synced %.0f ms after the first dial; %.1f MB sent to sync them; controller CPU %.1f s (mesh build included); controller RSS %.0f MB\n",
		int(st0.Connected), o.protocol, float64(time.Since(connStart).Milliseconds()), sum(st0.Bytes)/1e6, st0.CPUMs/1e3, st0.RSSMB)

	var rounds []round
	prev := st0
	total := o.rounds + o.churn
	// BENCH_XDS_AGENTS_CPUPROFILE: the simulated agents' side of the
	// rounds (BENCH_XDS_CPUPROFILE is the controller's).
	if path := os.Getenv("BENCH_XDS_AGENTS_CPUPROFILE"); path != "" {
		pf, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	for r := range total {
		var cmdLine, what string
		var items []wantItem
		if r < o.rounds {
			// A VirtualService edit: every agent gets the one route
			// configuration.
			svc := (r * 7919 * xdsbench.CanaryEvery) % (o.services - o.services%xdsbench.CanaryEvery)
			route := xdsbench.RouteName(svc)
			w := int32(80 - r%2*30) // 80/20, 50/50, ...
			cmdLine = fmt.Sprintf("change %d %d", svc, w)
			what = fmt.Sprintf("%s → %d/%d", route, w, 100-w)
			items = []wantItem{{typeURL: resource.RouteType, match: func(n string) bool { return n == route }}}
		} else {
			// Endpoint churn: one pod's readiness flips (and flips back
			// the next round): its service's load assignments and the
			// flow table's VIP backends change.
			c := r - o.rounds
			pod := (c / 2 * 7919) % o.pods
			ready := c%2 == 1
			host := xdsbench.ServiceHost(xdsbench.PodService(pod, o.pods, o.services))
			cmdLine = fmt.Sprintf("ready %d %d", pod, map[bool]int{false: 0, true: 1}[ready])
			what = fmt.Sprintf("pod p%d ready=%v (%s)", pod, ready, host)
			items = []wantItem{
				{typeURL: resource.EndpointType, match: func(n string) bool { return strings.HasSuffix(n, "|"+host) }},
				{typeURL: xds.Types[len(xds.Types)-1], match: func(string) bool { return true }},
			}
		}
		for _, a := range agents {
			a.arm(items)
		}
		fmt.Fprintln(toCtl, cmdLine)
		f, err := read("changed")
		if err != nil {
			return err
		}
		t0, _ := strconv.ParseInt(f[1], 10, 64)
		built, _ := strconv.ParseInt(f[2], 10, 64)
		f, err = read("pushed")
		if err != nil {
			return err
		}
		pushed, _ := strconv.ParseInt(f[1], 10, 64)
		rd := round{Round: r + 1, Kind: map[bool]string{true: "route", false: "churn"}[r < o.rounds], BuildMs: float64(built) / 1e6, PushMs: float64(pushed) / 1e6}
		deadline := time.After(o.timeout)
		for _, a := range agents {
			select {
			case at := <-a.got:
				rd.Samples = append(rd.Samples, float64(at-t0)/1e6)
			case <-deadline:
				return fmt.Errorf("round %d (%s): only %d of %d agents ACKed what it caused in %s", r+1, what, len(rd.Samples), len(agents), o.timeout)
			case err := <-failures:
				return err
			}
		}
		st, err := ctlStatsNow(false)
		if err != nil {
			return err
		}
		slices.Sort(rd.Samples)
		rd.Agents = len(rd.Samples)
		rd.P50Ms, rd.P99Ms, rd.MaxMs = quantile.Sorted(rd.Samples, .5), quantile.Sorted(rd.Samples, .99), rd.Samples[len(rd.Samples)-1]
		rd.Bytes, rd.Responses = sum(st.Bytes)-sum(prev.Bytes), sum(st.Responses)-sum(prev.Responses)
		rd.CPUMs = st.CPUMs - prev.CPUMs
		prev = st
		fmt.Printf("round %2d: %s: model build %5.1f ms, push %5.1f ms, ACKed by %d agents: p50 %6.1f ms, p99 %6.1f ms, max %6.1f ms; %d responses, %.0f kB; controller CPU %.0f ms\n",
			rd.Round, what, rd.BuildMs, rd.PushMs, rd.Agents, rd.P50Ms, rd.P99Ms, rd.MaxMs, int(rd.Responses), rd.Bytes/1e3, rd.CPUMs)
		rounds = append(rounds, rd)
	}
	st, err := ctlStatsNow(true)
	if err != nil {
		return err
	}
	// Per kind of round, the median of the rounds' p50 and p99; the last
	// line gives the worse kind's (the aim holds for both), and the bytes
	// sent per edit averaged over every round.
	type kindStats struct{ p50, p99, bytes float64 }
	byKind := map[string]kindStats{}
	var p50, p99, allBytes float64
	for _, kind := range []string{"route", "churn"} {
		var p50s, p99s, bytes []float64
		for _, rd := range rounds {
			if rd.Kind == kind {
				p50s, p99s, bytes = append(p50s, rd.P50Ms), append(p99s, rd.P99Ms), append(bytes, rd.Bytes)
			}
		}
		if len(p50s) == 0 {
			continue
		}
		ks := kindStats{quantile.Of(p50s, .5), quantile.Of(p99s, .5), quantile.Of(bytes, .5)}
		byKind[kind] = ks
		p50, p99 = max(p50, ks.p50), max(p99, ks.p99)
		for _, b := range bytes {
			allBytes += b
		}
	}
	perEdit := allBytes / float64(max(1, len(rounds)))
	for _, kind := range []string{"route", "churn"} {
		if ks, ok := byKind[kind]; ok {
			fmt.Printf("%s rounds (median): p50 %.1f ms, p99 %.1f ms, %.0f kB sent per edit\n", map[string]string{"route": "VirtualService edit", "churn": "endpoint churn"}[kind], ks.p50, ks.p99, ks.bytes/1e3)
		}
	}
	fmt.Printf("controller: %d pushes, %d responses, %.1f MB sent in all; RSS %.0f MB after the rounds (heap %.0f MB, stacks %.0f MB; peak %.0f MB, during the first sync)\n",
		int(st.Pushes), int(sum(st.Responses)), sum(st.Bytes)/1e6, st.RSSMB, st.HeapMB, st.StacksMB, st.HWMMB)
	// Where the RSS goes (MB, runtime/metrics after the same forced
	// collection and release as rss_mb), after the sync and after the
	// rounds: a diagnostic line, not the benchmark's result.
	fmt.Printf("controller memory before the agents (MB): rss=%.0f %s\n", stReady.RSSMB, memLine(stReady.Mem))
	fmt.Printf("controller memory after sync (MB): rss=%.0f %s\n", st0.RSSMB, memLine(st0.Mem))
	fmt.Printf("controller memory after rounds (MB): rss=%.0f %s\n", st.RSSMB, memLine(st.Mem))
	if err := writeJSON(o, rounds, st, st0); err != nil {
		return err
	}
	fmt.Printf("medians of %d rounds (%d route edits, %d endpoint churns); samples in %s\n", len(rounds), o.rounds, o.churn, o.out)
	fmt.Printf("xds-convergence: agents=%d p50_ms=%.1f p99_ms=%.1f rss_mb=%.0f peak_rss_mb=%.0f bytes_per_edit=%.0f\n", len(agents), p50, p99, st.RSSMB, st.HWMMB, perEdit)
	return nil
}

func writeJSON(o opts, rounds []round, end, synced ctlStats) error {
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(map[string]any{
		"agents": o.agents, "services": o.services, "pods": o.pods, "protocol": o.protocol,
		"rounds": rounds, "controller_after_sync": synced, "controller_end": end,
	}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(o.out, b, 0o644)
}

func sum(m map[string]float64) float64 {
	var s float64
	for _, v := range m {
		s += v
	}
	return s
}

// failures carries the first agent stream to fail.
var failures = make(chan error, 1)

// agent is one simulated agent: an xDS client as its node.
type agent struct {
	c      *xdsclient.Client
	synced chan struct{}
	// want is what the current round waits for; got receives the time
	// (Unix ns) the last of it was ACKed.
	want atomic.Pointer[armed]
	got  chan int64
}

// wantItem is one response a round's change causes: of typeURL, naming a
// resource match accepts.
type wantItem struct {
	typeURL string
	match   func(name string) bool
}

// armed is a round's wait on one agent (the agent's goroutine's own once
// stored).
type armed struct {
	items []wantItem
	seen  []bool
	left  int
	last  int64
}

func (a *agent) arm(items []wantItem) {
	a.want.Store(&armed{items: items, seen: make([]bool, len(items)), left: len(items)})
}

func startAgent(ctx context.Context, addr, node string, delta bool, wg *sync.WaitGroup) (*agent, error) {
	conn, err := grpc.NewClient(addr, append(xdsclient.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		return nil, err
	}
	c := xdsclient.New(conn, xdsclient.Config{Node: node, Delta: delta, NoStore: true, Subscriptions: xds.AgentSubscriptions(node)})
	a := &agent{c: c, synced: make(chan struct{}), got: make(chan int64, 1)}
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer conn.Close()
		if err := c.Run(ctx); err != nil {
			select {
			case failures <- fmt.Errorf("agent %s: %w", node, err):
			default:
			}
		}
	}()
	go func() {
		defer wg.Done()
		seen := map[string]bool{}
		for {
			select {
			case <-ctx.Done():
				return
			case u := <-c.Updates():
				if u.NACK != nil {
					select {
					case failures <- fmt.Errorf("agent %s NACKed %s: %v", node, u.TypeURL, u.NACK):
					default:
					}
					continue
				}
				if len(seen) < len(xds.Types) {
					seen[u.TypeURL] = true
					if len(seen) == len(xds.Types) {
						close(a.synced)
					}
				}
				w := a.want.Load()
				if w == nil {
					continue
				}
				for i, it := range w.items {
					if !w.seen[i] && it.typeURL == u.TypeURL && slices.ContainsFunc(u.Changed, it.match) {
						w.seen[i] = true
						w.left--
						w.last = max(w.last, u.At.UnixNano())
					}
				}
				if w.left == 0 {
					a.want.CompareAndSwap(w, nil)
					a.got <- w.last
				}
			}
		}
	}()
	return a, nil
}
