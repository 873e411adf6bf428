package ktlsbench

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"slices"
	"testing"

	"github.com/fibmesh/fibmesh/fastpath/ktls"
	"github.com/fibmesh/fibmesh/fastpath/splice"
	"github.com/fibmesh/fibmesh/internal/netnstest"
	"github.com/fibmesh/fibmesh/internal/quantile"
	"github.com/fibmesh/fibmesh/internal/testpki"
	"github.com/fibmesh/fibmesh/internal/vmcheck"
)

var (
	benchFlag = flag.Bool("ktls-bench", false, "run the kTLS benchmark (make bench-ktls)")
	bytesFlag = flag.Int64("ktls-bench-bytes", 64<<20, "bytes per round")
	roundFlag = flag.Int("ktls-bench-rounds", 3, "rounds of each mode")
)

// TestBenchKTLS is `make bench-ktls`: rounds of every mode, interleaved,
// over one veth pair; a table of medians, a JSON line with every sample,
// and last the summary line.
func TestBenchKTLS(t *testing.T) {
	if !*benchFlag {
		t.Skip("the benchmark runs with -ktls-bench (make bench-ktls)")
	}
	if *roundFlag < 1 {
		t.Fatalf("-ktls-bench-rounds=%d: want at least 1", *roundFlag)
	}
	caps, err := ktls.Probe()
	if err != nil {
		t.Fatal(err)
	}
	if !caps.ULP {
		t.Fatalf("no kTLS on this kernel (%s): run make bench-ktls, which uses the VM", caps.ULPError)
	}
	where := "host"
	if vmcheck.InVM() {
		where = "vm-tcg"
	}
	pair := netnstest.NewPair(t)
	ccfg, scfg := mtlsConfigs(t)
	cfg := Config{A: pair.A.Do, B: pair.B.Do, AddrB: pair.B.Addr, Bytes: *bytesFlag, Client: ccfg, Server: scfg}
	modes := []Mode{KTLS, Userspace, Plain}
	sm, err := splice.OpenSockmap(splice.SockmapOptions{})
	if err == nil {
		if err = sm.SelfTest(); err == nil {
			cfg.Sockmap = sm
			modes = append(modes, KTLSSockmap)
		} else {
			sm.Close()
		}
	}
	if cfg.Sockmap == nil {
		t.Logf("sockmap byte path not measured: %v", err)
	} else {
		defer sm.Close()
	}
	t.Logf("%v; %d MB per round, %d rounds per mode, %s", caps, cfg.Bytes>>20, *roundFlag, where)

	var all []Sample
	for r := range *roundFlag {
		// Rotate the order so no mode always runs first (cold caches)
		// or last.
		order := append(append([]Mode{}, modes[r%len(modes):]...), modes[:r%len(modes)]...)
		for _, m := range order {
			s, err := Round(context.Background(), cfg, m)
			if err != nil {
				t.Fatalf("round %d: %v", r+1, err)
			}
			fmt.Printf("round %d %-12s %7.3f Gbit/s  %7.2f CPU-s/GB (machine)  %7.2f CPU-s/GB (process)  %.2f s\n",
				r+1, m, s.Gbps(), s.CPUPerGB(), s.ProcessCPUPerGB(), s.Seconds)
			all = append(all, s)
		}
	}
	med := map[Mode]Sample{}
	fmt.Printf("\nmedians of %d rounds; CPU-s/GB: machine = /proc/stat busy time of all CPUs, process = getrusage\n", *roundFlag)
	fmt.Printf("%-12s %10s %10s %16s %16s %10s\n", "mode", "Gbit/s", "vs plain", "CPU-s/GB machine", "CPU-s/GB process", "where")
	for _, m := range modes {
		med[m] = median(all, m)
	}
	for _, m := range modes {
		fmt.Printf("%-12s %10.3f %9.2fx %16.2f %16.2f %10s\n", m, med[m].Gbps(), med[m].Gbps()/med[Plain].Gbps(), med[m].CPUPerGB(), med[m].ProcessCPUPerGB(), where)
	}
	js, _ := json.Marshal(map[string]any{"where": where, "kernel": caps.Kernel, "bytes": cfg.Bytes, "samples": all})
	fmt.Printf("ktls-json: %s\n", js)
	fmt.Printf("ktls: ktls_gbps=%.3f userspace_gbps=%.3f plain_gbps=%.3f where=%s\n",
		med[KTLS].Gbps(), med[Userspace].Gbps(), med[Plain].Gbps(), where)
}

// median returns the sample with mode m of median throughput, its CPU
// figures replaced by the mode's median of each (every round moves the same
// bytes, so CPU seconds order as CPU per GB does).
func median(all []Sample, m Mode) Sample {
	var ss []Sample
	for _, s := range all {
		if s.Mode == m {
			ss = append(ss, s)
		}
	}
	mid := func(key func(Sample) float64) Sample {
		slices.SortFunc(ss, func(a, b Sample) int { return cmp.Compare(key(a), key(b)) })
		return ss[quantile.Rank(len(ss), 0.5)]
	}
	out := mid(Sample.Gbps)
	out.CPUSeconds = mid(func(s Sample) float64 { return s.CPUSeconds }).CPUSeconds
	out.ProcessCPU = mid(func(s Sample) float64 { return s.ProcessCPU }).ProcessCPU
	return out
}

// TestRoundSmall runs every mode once with a few MB, as a test: on a host
// without kTLS only the modes that need none.
func TestRoundSmall(t *testing.T) {
	pair := netnstest.NewPair(t)
	ccfg, scfg := mtlsConfigs(t)
	cfg := Config{A: pair.A.Do, B: pair.B.Do, AddrB: pair.B.Addr, Bytes: 4 << 20, Client: ccfg, Server: scfg}
	modes := []Mode{Plain, Userspace}
	if caps, err := ktls.Probe(); err == nil && caps.ULP {
		modes = append(modes, KTLS)
	} else {
		t.Logf("no kTLS here: the ktls mode runs in make vmtest")
	}
	for _, m := range modes {
		s, err := Round(context.Background(), cfg, m)
		if err != nil {
			t.Fatal(err)
		}
		if s.Seconds <= 0 || s.CPUSeconds < 0 {
			t.Errorf("%s: bad sample %+v", m, s)
		}
		t.Logf("%s: %.3f Gbit/s, %.2f CPU-s/GB", m, s.Gbps(), s.CPUPerGB())
	}
}

// mtlsConfigs is a mesh-like mTLS pair: one CA, SPIFFE SVIDs, TLS 1.3.
func mtlsConfigs(t testing.TB) (client, server *tls.Config) {
	client, server = testpki.MTLS(t, "bench", "bench.mesh")
	client.MinVersion, server.MinVersion = tls.VersionTLS13, tls.VersionTLS13
	return client, server
}
