package offloadbench

import (
	"context"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fibmesh/fibmesh/controller/config"
)

func TestParseProcStat(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    float64
		wantErr string
	}{
		// user nice system idle iowait irq softirq steal guest guest_nice
		{name: "busy fields only", in: "cpu  1000 20 300 99999 7777 5 75 4 0 0", want: 14},
		{name: "no steal column", in: "cpu 100 0 100 5 5 0 0", want: 2},
		{name: "per-cpu line", in: "cpu0 1 2 3 4 5 6 7", wantErr: `want "cpu"`},
		{name: "short", in: "cpu 1 2 3", wantErr: "at least 7"},
		{name: "not a number", in: "cpu 1 2 x 4 5 6 7", wantErr: `counter 3 "x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseProcStat(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	if _, err := MachineCPU(); err != nil {
		t.Errorf("this machine's /proc/stat: %v", err)
	}
}

func TestParseHistogram(t *testing.T) {
	const metrics = `# HELP fibmesh_agent_offload_revocation_seconds From the push to the first dropped packet.
# TYPE fibmesh_agent_offload_revocation_seconds histogram
fibmesh_agent_offload_revocation_seconds_bucket{le="0.001"} 1
fibmesh_agent_offload_revocation_seconds_bucket{le="+Inf"} 3
fibmesh_agent_offload_revocation_seconds_sum 0.0125
fibmesh_agent_offload_revocation_seconds_count 3
fibmesh_agent_other_seconds_sum{x="a b}"} 99
fibmesh_agent_other_seconds_count 9
`
	for _, tc := range []struct {
		name, text, metric string
		sum, count         float64
		wantErr            string
	}{
		{name: "plain", text: metrics, metric: revocationMetric, sum: 0.0125, count: 3},
		{name: "label sets added", metric: "m", text: "m_sum{node=\"a\"} 1.5\nm_sum{node=\"b\"} 2\nm_count{node=\"a\"} 1\nm_count{node=\"b\"} 2 1700000000\n", sum: 3.5, count: 3},
		{name: "braces in a label value", text: metrics, metric: "fibmesh_agent_other_seconds", sum: 99, count: 9},
		{name: "absent", text: metrics, metric: "nope", wantErr: "no histogram nope"},
		{name: "bad value", text: "m_sum x\n", metric: "m", wantErr: `value "x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sum, count, err := ParseHistogram(tc.text, tc.metric)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || sum != tc.sum || count != tc.count {
				t.Errorf("got %v, %v, %v; want %v, %v", sum, count, err, tc.sum, tc.count)
			}
		})
	}
}

func TestResultLine(t *testing.T) {
	const gb = 1e9 / 8 // bytes that take one second at 1 Gbit/s
	s := func(m Mode, gbps, machine, agents float64) Sample {
		return Sample{Mode: m, Bytes: int64(gb), Seconds: 1 / gbps, MachineCPU: machine * gb / 1e9, AgentCPU: agents * gb / 1e9}
	}
	full := &Result{Where: "vm-tcg", Samples: []Sample{
		s(ModeOffloaded, 0.2, 40, 10), s(ModeOffloaded, 0.16, 44, 12), s(ModeOffloaded, 0.18, 42, 11),
		s(ModeUserspace, 0.08, 100, 60), s(ModeUserspace, 0.1, 90, 55), s(ModeUserspace, 0.09, 80, 50),
		s(ModeDirect, 1.5, 8, 0), s(ModeDirect, 1.7, 9, 0), s(ModeDirect, 1.6, 9, 0),
	}}
	for i := 1; i <= 20; i++ {
		full.Revocations = append(full.Revocations, Revocation{Round: i, Offloaded: true, DeathMs: float64(40 + i), AgentMs: float64(i) / 10, AgentSource: "offload/flows"})
	}
	deathOnly := &Result{Where: "host", OffloadSkipped: "no kTLS",
		Samples:     []Sample{s(ModeUserspace, 1.4, 5, 3), s(ModeDirect, 3, 1, 0)},
		Revocations: []Revocation{{DeathMs: 50, AgentNote: "not offloaded"}, {DeathMs: 70, AgentMs: 1, AgentSource: "offload/flows"}, {DeathMs: 60, AgentNote: "no-drop"}},
	}
	// Most rounds have the agents' figure: theirs, over those rounds.
	mostly := &Result{Where: "vm-tcg", Revocations: []Revocation{{DeathMs: 900, AgentMs: 12, AgentSource: "offload/flows"},
		{DeathMs: 800, AgentNote: "no-drop"}, {DeathMs: 700, AgentMs: 30, AgentSource: revocationMetric}}}
	for _, tc := range []struct {
		name string
		r    *Result
		want string
	}{
		{name: "every mode", r: full, want: "offload: offloaded_gbps=0.180 userspace_gbps=0.090 direct_gbps=1.600 cpu_ratio=0.47 revoke_p99_ms=2.0 where=vm-tcg"},
		// Fewer than half the rounds have the agents' figure: the bench's own, for all.
		{name: "no kTLS, bench's figure", r: deathOnly, want: "offload: offloaded_gbps=0.000 userspace_gbps=1.400 direct_gbps=3.000 cpu_ratio=0.00 revoke_p99_ms=70.0 where=host"},
		{name: "agents' figure in most rounds", r: mostly, want: "offload: offloaded_gbps=0.000 userspace_gbps=0.000 direct_gbps=0.000 cpu_ratio=0.00 revoke_p99_ms=30.0 where=vm-tcg"},
		{name: "nothing", r: &Result{Where: "host"}, want: "offload: offloaded_gbps=0.000 userspace_gbps=0.000 direct_gbps=0.000 cpu_ratio=0.00 revoke_p99_ms=0.0 where=host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.r.Line(); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
			var b strings.Builder
			tc.r.WriteTable(&b) // must not panic on missing modes
		})
	}
	if _, src, _ := deathOnly.RevokeQuantile(0.5); src != "death" {
		t.Errorf("source %q, want death (a round has no agent figure)", src)
	}
	var b strings.Builder
	full.WriteTable(&b)
	for _, want := range []string{"machine 0.47, agents 0.20", "aim <= 0.5 on the machine's: met", "p99 2.0 ms (aim p99 <= 10 ms: met); the agents' figure"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestManifestsDecode(t *testing.T) {
	tp := DefaultTopology()
	for _, tc := range []struct {
		file, text string
		want       []string
	}{
		{"bench.yaml", Manifests(tp), []string{
			"Namespace//bench", "Namespace//bench-plain", "ServiceAccount/bench/client", "ServiceAccount/bench/server",
			"PeerAuthentication/bench/default", "Service/bench/server",
			"Pod/bench/client", "Pod/bench/server", "Pod/bench-plain/client-plain", "Pod/bench-plain/server-plain"}},
		{PolicyFile, DenyPolicy(tp), []string{"AuthorizationPolicy/bench/bench-revoke"}},
	} {
		res, skipped, err := config.DecodeFile(tc.file, []byte(tc.text))
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		var got []string
		for _, r := range append(res, skipped...) {
			got = append(got, r.GVK.Kind+"/"+r.Namespace+"/"+r.Name)
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("%s (-want +got):\n%s", tc.file, d)
		}
	}
	if !strings.Contains(DenyPolicy(tp), `"cluster.local/ns/bench/sa/client"`) {
		t.Errorf("the policy does not name the client's principal:\n%s", DenyPolicy(tp))
	}
}

func TestBinDir(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	src, dir := t.TempDir(), filepath.Join(t.TempDir(), "bin")
	for _, c := range labCommands {
		body := "#!/bin/sh\necho " + c + "\n"
		if c == "fibmesh-agent" {
			body = "#!/bin/sh\nfor a in \"$@\"; do echo \"[$a]\"; done\n"
		}
		if err := os.WriteFile(filepath.Join(src, c), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	modeFile := filepath.Join(t.TempDir(), "it's mode")
	if err := binDir(dir, src, modeFile); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []AgentMode{AgentOff, AgentAuto} {
		if err := os.WriteFile(modeFile, []byte(mode), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(filepath.Join(dir, "fibmesh-agent"), "--node", "node 1").CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if want := "[--offload=" + string(mode) + "]\n[--node]\n[node 1]\n"; string(out) != want {
			t.Errorf("mode %s: the script ran the agent with\n%s want\n%s", mode, out, want)
		}
	}
	if out, err := exec.Command(filepath.Join(dir, "fibctl")).Output(); err != nil || string(out) != "fibctl\n" {
		t.Errorf("fibctl is not linked: %q %v", out, err)
	}
	if err := binDir(filepath.Join(t.TempDir(), "b"), t.TempDir(), modeFile); err == nil || !strings.Contains(err.Error(), "make build") {
		t.Errorf("a source without the binaries: err = %v, want one that says make build", err)
	}
}

// TestStreamLoopback runs the stream's two ends over loopback: a
// transfer counts every byte at both ends; a paced stream flows until
// stopped; a stream the server resets dies at the client.
func TestStreamLoopback(t *testing.T) {
	s, err := listen("", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(s.port()))
	ctx := context.Background()
	for _, n := range []int64{1, bufSize - 1, 3*bufSize + 17} {
		r, err := transfer(ctx, "", addr, s, n, 30*time.Second)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if r.Bytes != n || r.Err != nil || r.End.Before(r.First) {
			t.Errorf("%d bytes: server saw %+v", n, r)
		}
	}
	if _, err := transfer(ctx, "", netip.MustParseAddrPort("127.0.0.1:1"), s, 10, 5*time.Second); err == nil {
		t.Error("a transfer to a closed port succeeded")
	}

	p, err := startPaced(ctx, "", addr, s, 1024, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.sent.Load() < 10*1024 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	p.stop()
	select {
	case r := <-p.res:
		if r.Bytes == 0 || r.Bytes > p.sent.Load() {
			t.Errorf("paced: server read %d of %d sent", r.Bytes, p.sent.Load())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("paced: the server end did not see the stream end")
	}

	// A server that resets the stream: the client's writes fail.
	id := streamIDs.Add(1)
	c, err := dial(ctx, "", addr, id, 5*time.Second) // no expect: the sink drops it after the id
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	var werr error
	for werr == nil {
		_, werr = c.Write(payload[:1024])
		time.Sleep(time.Millisecond)
	}
	if strings.Contains(werr.Error(), "timeout") {
		t.Errorf("a stream the server closed still took writes for 10 s")
	}
}
