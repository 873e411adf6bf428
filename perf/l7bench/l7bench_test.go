package l7bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/lab/cluster"
	"github.com/fibmesh/fibmesh/perf/benchlab"
)

// sample returns a round's sample with the fixed-rate percentiles p50,
// p90, p99 (µs), the full-load rate, and the proxies' CPU and memory.
func sample(round int, p50, p90, p99, rps, cpuPer1k, rss float64) Sample {
	return Sample{Round: round,
		Fixed:    LoadResult{Requests: 10000, Due: 10000, Seconds: 10, Latency: Summary{P50: p50, P90: p90, P99: p99}},
		Full:     LoadResult{Requests: int64(rps * 5), Seconds: 5},
		CPUPer1k: cpuPer1k, RSSMB: rss}
}

func fullResult() *Result {
	return &Result{Rate: 1000, Rounds: 3, Modes: []*ModeResult{
		{Mode: ModeDirect, Samples: []Sample{
			sample(1, 100, 150, 300, 20000, 0, 0), sample(2, 110, 160, 280, 21000, 0, 0), sample(3, 90, 140, 350, 19000, 0, 0)}},
		{Mode: ModeFibmesh, Proxies: []string{"agent-node1", "agent-node2"}, Samples: []Sample{
			sample(1, 180, 250, 400, 9000, 40, 30.2), sample(2, 200, 260, 420, 8000, 42, 31.5), sample(3, 170, 240, 500, 8500, 41, 30.9)}},
		{Mode: ModeHAProxy, Proxies: []string{"h1", "h2"}, Samples: []Sample{
			sample(1, 300, 400, 700, 6000, 55, 12), sample(2, 310, 420, 650, 6500, 50, 12), sample(3, 290, 380, 900, 6200, 60, 12)}},
	}}
}

func TestResultLine(t *testing.T) {
	got, err := fullResult().Line()
	if err != nil {
		t.Fatal(err)
	}
	// added p50 by round: 80, 90, 80 -> 80; p99: 100, 140, 150 -> 140;
	// haproxy p99: 400, 370, 550 -> 400.
	want := "l7-mesh: rps=8500 haproxy_rps=6200 direct_rps=20000 added_p50_us=80 added_p99_us=140 haproxy_added_p99_us=400 cpu_ms_per_1k=41.0 rss_mb=30.9"
	if got != want {
		t.Errorf("Line() =\n%s\nwant\n%s", got, want)
	}

	failed := fullResult()
	failed.Modes[2].Error = "round 2: 500 of 9000 requests failed"
	if _, err := failed.Line(); err == nil || !strings.Contains(err.Error(), "haproxy mode failed") {
		t.Errorf("a failed mode: err = %v", err)
	}
	if err := failed.Failed(); err == nil || !strings.Contains(err.Error(), "haproxy mode: round 2") {
		t.Errorf("Failed() = %v", err)
	}
	partial := fullResult()
	partial.Modes = partial.Modes[1:]
	if _, err := partial.Line(); err == nil || !strings.Contains(err.Error(), "direct mode did not run") {
		t.Errorf("a mode not run: err = %v", err)
	}
	if _, ok := partial.Added(ModeFibmesh, P99); ok {
		t.Error("Added without direct reported a figure")
	}

	var b strings.Builder
	fullResult().WriteTable(&b)
	for _, want := range []string{
		"direct   rps=20000  at 1000 req/s: p50=100us",
		"fibmesh  rps=8500  at 1000 req/s: p50=180us p90=250us p99=420us",
		"added p50=80us p90=100us p99=140us  proxies: 41.00 CPU-ms/1k req",
		"RSS 30.9 MiB  rps by round: 9000 8000 8500",
		"fibmesh vs haproxy: rps 1.37x, CPU-ms per 1k requests 0.75x (aim < 1x); fibmesh added p99 140us (aim <= 100us)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

// Rounds pair up by number: a round direct failed has no added figure.
func TestAddedPairsRounds(t *testing.T) {
	r := fullResult()
	r.Modes[0].Samples = r.Modes[0].Samples[1:] // direct lost round 1
	got, ok := r.Added(ModeFibmesh, P50)
	// rounds 2 and 3: 90, 80 -> the lower middle, 80.
	if !ok || got != 80 {
		t.Errorf("Added = %v, %v; want 80, true", got, ok)
	}
}

func TestParseModes(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []Mode
		wantErr string
	}{
		{"direct,fibmesh,haproxy", AllModes, ""},
		{"haproxy, direct", []Mode{ModeDirect, ModeHAProxy}, ""},
		{"fibmesh", []Mode{ModeFibmesh}, ""},
		{"envoy", nil, `unknown mode "envoy"`},
		{"direct,direct", nil, "given twice"},
		{"", nil, "unknown mode"},
	} {
		got, err := ParseModes(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseModes(%q) = %v, want an error containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !cmp.Equal(got, tc.want) {
			t.Errorf("ParseModes(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestCheckXFCC(t *testing.T) {
	const client = "spiffe://cluster.local/ns/bench/sa/client"
	xfcc := "By=spiffe://cluster.local/ns/bench/sa/server;Hash=ab;Subject=\"\";URI=" + client
	for _, tc := range []struct {
		name    string
		res     LoadResult
		wantErr string
	}{
		{"every answer", LoadResult{Requests: 100, XFCC: 100, XFCCSample: xfcc}, ""},
		{"another identity", LoadResult{Requests: 100, XFCC: 100, XFCCSample: "URI=spiffe://cluster.local/ns/x/sa/y"}, "does not name the client's"},
		{"some bypassed", LoadResult{Requests: 100, XFCC: 90, XFCCSample: xfcc}, "only 90 of 100"},
	} {
		got, err := CheckXFCC(tc.res, client)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !strings.HasPrefix(got, "L7 path: 100 of 100") {
			t.Errorf("%s: %q, %v", tc.name, got, err)
		}
	}
}

func TestMTLSConn(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	const peer = "spiffe://cluster.local/ns/bench/sa/server"
	conn := func(dir, dest, tlsv, id string, start time.Time) benchlab.AgentConn {
		return benchlab.AgentConn{Direction: dir, Destination: dest, TLSVersion: tlsv, TLSCipher: "TLS_AES_128_GCM_SHA256", PeerIdentity: id, Start: start}
	}
	for _, tc := range []struct {
		name string
		cs   []benchlab.AgentConn
		want string
	}{
		{"match", []benchlab.AgentConn{conn("outbound", "10.96.0.200:8080", "TLS 1.3", peer, t0)}, "TLS 1.3 TLS_AES_128_GCM_SHA256"},
		{"plaintext", []benchlab.AgentConn{conn("outbound", "10.96.0.200:8080", "", "", t0)}, ""},
		{"another peer", []benchlab.AgentConn{conn("outbound", "10.96.0.200:8080", "TLS 1.3", "spiffe://x/ns/a/sa/b", t0)}, ""},
		{"another destination", []benchlab.AgentConn{conn("outbound", "10.96.0.200:9090", "TLS 1.3", peer, t0)}, ""},
		{"inbound", []benchlab.AgentConn{conn("inbound", "10.96.0.200:8080", "TLS 1.3", peer, t0)}, ""},
		{"before the run", []benchlab.AgentConn{conn("outbound", "10.96.0.200:8080", "TLS 1.3", peer, t0.Add(-time.Minute))}, ""},
	} {
		if got := MTLSConn(tc.cs, "outbound", "10.96.0.200:8080", peer, t0); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func testFiles(t *testing.T) (Topology, Files) {
	t.Helper()
	top := DefaultTopology()
	dir := t.TempDir()
	var f Files
	var err error
	if f.PKIFiles, err = benchlab.WritePKI(dir, top.PKISpec()); err != nil {
		t.Fatal(err)
	}
	f.HAProxyClient, f.HAProxyServer = filepath.Join(dir, "haproxy-client.cfg"), filepath.Join(dir, "haproxy-server.cfg")
	return top, f
}

// The manifests go through the lab's own strict decoder: every pod where
// the bench expects it, the plain pair out of the mesh, the Service's
// port HTTP by its name.
func TestManifests(t *testing.T) {
	top, f := testFiles(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "l7.yaml"), []byte(Manifests(top, "/bin/bench-l7", "/usr/sbin/haproxy", 1024, f)), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := cluster.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Errors) > 0 {
		t.Fatalf("the lab refuses parts of the manifests: %v", m.Errors)
	}
	type pod struct {
		Node, IP, SA, Capture string
		Containers            []string
	}
	got := map[string]pod{}
	for _, p := range m.Pods {
		var cs []string
		for _, c := range p.Spec.Containers {
			cs = append(cs, c.Name+": "+strings.Join(c.Command, " "))
		}
		got[cluster.PodKey(p)] = pod{p.Spec.NodeName, p.Status.PodIP, p.Spec.ServiceAccountName, p.Labels[model.LabelCapture], cs}
	}
	app := "app: /bin/bench-l7 serve --port 8080 --size 1024"
	want := map[string]pod{
		"bench/client": {"node1", "10.200.1.11", "client", "", []string{"idle: sleep infinity"}},
		"bench/server": {"node2", "10.200.2.11", "server", "", []string{app}},
		"bench-plain/client-plain": {"node1", "10.200.1.12", "", "disabled", []string{"idle: sleep infinity",
			"haproxy: /usr/sbin/haproxy -db -f " + f.HAProxyClient}},
		"bench-plain/server-plain": {"node2", "10.200.2.12", "", "disabled", []string{app, "haproxy: /usr/sbin/haproxy -db -f " + f.HAProxyServer}},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("pods (-want +got):\n%s", d)
	}
	if len(m.Services) != 1 {
		t.Fatalf("%d services, want 1", len(m.Services))
	}
	s := m.Services[0]
	if s.Namespace != "bench" || s.Spec.ClusterIP != "10.96.0.200" || s.Spec.Selector["app"] != "server" || len(s.Spec.Ports) != 1 {
		t.Fatalf("service: %+v", s)
	}
	p := s.Spec.Ports[0]
	if got := model.PortProtocol(string(p.Protocol), p.AppProtocol, p.Name); got != model.ProtocolHTTP || p.Port != 8080 {
		t.Errorf("service port %s %d is %v, want HTTP on 8080 (the L7 path)", p.Name, p.Port, got)
	}
	var kinds []string
	for _, o := range m.Others {
		kinds = append(kinds, o.Kind+" "+o.Namespace+"/"+o.Name)
	}
	for _, want := range []string{"PeerAuthentication bench/default", "Namespace /bench-plain", "ServiceAccount bench/server"} {
		if !strings.Contains(strings.Join(kinds, "\n"), want) {
			t.Errorf("objects %v lack %s", kinds, want)
		}
	}
}

func TestHAProxyConfigs(t *testing.T) {
	top, f := testFiles(t)
	for _, tc := range []struct {
		name, cfg string
		want      []string
	}{
		{"client", HAProxyClientConfig(top, f), []string{
			"mode http", "bind 127.0.0.1:18080",
			"server server_plain 10.200.2.12:28080 ssl verify required ca-file " + f.CA + " crt " + f.ClientPEM +
				" sni str(server-plain.bench-plain.svc) verifyhost server-plain.bench-plain.svc",
			"ssl-default-server-options ssl-min-ver TLSv1.3",
		}},
		{"server", HAProxyServerConfig(top, f), []string{
			"mode http", "bind 10.200.2.12:28080 ssl crt " + f.ServerPEM + " ca-file " + f.CA + " verify required",
			"server app 127.0.0.1:8080", "ssl-default-bind-options ssl-min-ver TLSv1.3",
		}},
	} {
		for _, w := range tc.want {
			if !strings.Contains(tc.cfg, w) {
				t.Errorf("%s config lacks %q:\n%s", tc.name, w, tc.cfg)
			}
		}
		if strings.Contains(tc.cfg, "mode tcp") || strings.Contains(tc.cfg, "maxconn") {
			t.Errorf("%s config has mode tcp or maxconn:\n%s", tc.name, tc.cfg)
		}
		hp, err := exec.LookPath("haproxy")
		if err != nil {
			t.Logf("haproxy not installed (hack/deps.sh bench-l4): configuration not checked by haproxy -c")
			continue
		}
		path := filepath.Join(t.TempDir(), tc.name+".cfg")
		if err := os.WriteFile(path, []byte(tc.cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(hp, "-c", "-f", path).CombinedOutput(); err != nil {
			t.Errorf("haproxy -c %s: %v\n%s", tc.name, err, out)
		}
	}
}
