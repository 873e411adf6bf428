package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/fibmesh/fibmesh/agent"
	"github.com/fibmesh/fibmesh/controller/ca"
	"github.com/fibmesh/fibmesh/fastpath/ktls"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/kubelet"
	"github.com/fibmesh/fibmesh/perf/dashboards"
	"github.com/fibmesh/fibmesh/slowpath/proxy"
	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// The dashboards test (issue "telemetry and dashboards"): a real
// Prometheus (Debian's prometheus package) scrapes the lab's agents and
// controller every second while the examples' L7 traffic (200s and the
// authorization policy's 403s) and TCP connections run; then every query
// of every panel of perf/dashboards runs through Prometheus's HTTP API
// and must return data, and istio_requests_total must carry the right
// workloads, principals and response codes.

// promPrefix is the network namespace prefix of this file's lab.
const promPrefix = "fm-td-"

// promScrape is Prometheus's scrape interval; the dashboards'
// $__rate_interval is what Grafana makes of it (4 scrapes, and some
// slack for a missed one).
const (
	promScrape       = time.Second
	promRateInterval = "10s"
)

// tcpManifests add an opaque TCP service to the examples' production
// namespace (the examples are HTTP only): tcp-echo on node2, called by
// the tcp-client pod on node1. They are written once Prometheus runs, so
// that its pushes, convergence and CSRs happen while it scrapes.
var tcpManifests = map[string]string{
	"90-tcp.yaml": manifests(
		serviceAccounts("production", "tcp-echo", "tcp-client"),
		echoPod{namespace: "production", name: "tcp-echo", node: "node2", serviceAccount: "tcp-echo", labels: map[string]string{"version": "v1"},
			port: 9000, ready: true, deployment: true}.yaml(),
		echoService{namespace: "production", name: "tcp-echo", app: "tcp-echo", ports: []string{"tcp-echo:9000"}}.yaml(),
		echoPod{namespace: "production", name: "tcp-client", node: "node1", serviceAccount: "tcp-client", labels: map[string]string{"version": "v1"},
			port: 8080}.yaml()),
}

// noDataInLab lists the panel queries (dashboards.Query.Name without
// the refId: "file / title (id)") that cannot have data in this lab,
// with the reason. They must still run without error; everything else
// must return data.
var noDataInLab = map[string]string{
	"node.json / Revocation Latency P99 (15)": "needs an offloaded connection revoked by a policy change (kTLS kernel): TestOffload/Revoke covers the metric",
	"node.json / Connections Revoked by Reason (16)": "needs an established L4 connection revoked by a config change; this test changes no policy: " +
		"TestOffload/Revoke covers the metric",
}

// noDataWithoutKTLS lists the panels that need offloaded connections:
// they must have data where the kernel has kTLS.
var noDataWithoutKTLS = []string{
	"node.json / Offloaded Connections by Mode (11)",
	"node.json / Offloaded Bytes by Mode (12)",
	"node.json / kTLS Connections by Version, Cipher and Mode (28)",
	"node.json / kTLS Connections Opened by NIC Profile and Mode (29)",
}

// wantVarValues are values the dashboards' variables must list in this
// lab, by variable name.
var wantVarValues = map[string][]string{
	"namespace": {"production"},
	"workload":  {"reviews-v1", "reviews-v2", "tcp-echo"},
}

// promServer is a Prometheus process in the lab's fabric namespace.
type promServer struct {
	cmd    *exec.Cmd
	client *http.Client
	base   string // http://127.0.0.1:PORT
	log    string
}

// startPrometheus runs prometheus in netns, scraping agents (addr:port)
// and the controller, with its storage in a temporary directory.
func startPrometheus(t *testing.T, netns string, agents []string, controller string) *promServer {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("needs Prometheus: apt-get install -y prometheus (Debian's package; the test runs the binary itself, not the service)")
	}
	dir := t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n  evaluation_interval: %s\n", promScrape, promScrape, promScrape)
	fmt.Fprintf(&b, "scrape_configs:\n- job_name: fibmesh-agent\n  static_configs:\n")
	for _, a := range agents {
		fmt.Fprintf(&b, "  - targets: [%q]\n", a)
	}
	fmt.Fprintf(&b, "- job_name: fibmesh-controller\n  static_configs:\n  - targets: [%q]\n", controller)
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	const listen = "127.0.0.1:19090"
	p := &promServer{client: kubelet.NetnsHTTPClient(netns, 10*time.Second), base: "http://" + listen, log: filepath.Join(dir, "prometheus.log")}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command("ip", "netns", "exec", netns, bin, "--config.file="+cfg,
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+listen,
		"--storage.tsdb.retention.time=1h", "--log.level=warn")
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			if b, err := os.ReadFile(p.log); err == nil {
				t.Logf("prometheus.log (last 8 KiB):\n%s", tailBytes(b, 8192))
			}
		}
	})
	t.Logf("prometheus %s in %s, scraping %v and %s every %s", bin, netns, agents, controller, promScrape)
	// Every target up.
	testenv.Eventually(t, 60*time.Second, "prometheus scraping every target", func() error {
		select {
		case err := <-exited:
			b, _ := os.ReadFile(p.log)
			t.Fatalf("prometheus exited: %v\n%s", err, tailBytes(b, 4096))
		default:
		}
		var r struct {
			Data struct {
				ActiveTargets []struct {
					ScrapeURL string `json:"scrapeUrl"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"activeTargets"`
			} `json:"data"`
		}
		if err := p.get("/api/v1/targets", nil, &r); err != nil {
			return err
		}
		if n := len(r.Data.ActiveTargets); n != len(agents)+1 {
			return fmt.Errorf("%d targets, want %d", n, len(agents)+1)
		}
		for _, tg := range r.Data.ActiveTargets {
			if tg.Health != "up" {
				return fmt.Errorf("target %s: %s %s", tg.ScrapeURL, tg.Health, tg.LastError)
			}
		}
		return nil
	})
	return p
}

// get GETs path with query from Prometheus's HTTP API and decodes the
// JSON answer into v; an answer with status "error" is an error.
func (p *promServer) get(path string, q url.Values, v any) error {
	u := p.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	resp, err := p.client.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var st struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	if st.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, st.ErrorType, st.Error)
	}
	return json.Unmarshal(body, v)
}

// promSample is one series of an instant query's result.
type promSample struct {
	Metric map[string]string
	Value  float64
}

// query runs an instant query; a scalar result is one sample without
// labels.
func (p *promServer) query(expr string) ([]promSample, error) {
	var r struct {
		Data struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := p.get("/api/v1/query", url.Values{"query": {expr}}, &r); err != nil {
		return nil, err
	}
	parse := func(v []any) (float64, error) {
		if len(v) != 2 {
			return 0, fmt.Errorf("value %v", v)
		}
		s, _ := v[1].(string)
		return strconv.ParseFloat(s, 64)
	}
	switch r.Data.ResultType {
	case "vector":
		var vs []struct {
			Metric map[string]string `json:"metric"`
			Value  []any             `json:"value"`
		}
		if err := json.Unmarshal(r.Data.Result, &vs); err != nil {
			return nil, err
		}
		out := make([]promSample, 0, len(vs))
		for _, s := range vs {
			f, err := parse(s.Value)
			if err != nil {
				return nil, err
			}
			out = append(out, promSample{Metric: s.Metric, Value: f})
		}
		return out, nil
	case "scalar":
		var v []any
		if err := json.Unmarshal(r.Data.Result, &v); err != nil {
			return nil, err
		}
		f, err := parse(v)
		return []promSample{{Value: f}}, err
	}
	return nil, fmt.Errorf("result type %q, want vector or scalar", r.Data.ResultType)
}

// labelValues returns the values of label on the series selector
// matches (Grafana's label_values(selector, label)).
func (p *promServer) labelValues(selector, label string) ([]string, error) {
	var r struct {
		Data []string `json:"data"`
	}
	q := url.Values{"match[]": {selector}, "start": {strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)}}
	if err := p.get("/api/v1/label/"+label+"/values", q, &r); err != nil {
		return nil, err
	}
	return r.Data, nil
}

// promTraffic runs the test's traffic until stop: the authorization
// example's allowed GETs (200) and denied POSTs (403) from frontend, the
// client's denied GETs (another identity: 403), and short TCP echo
// connections from tcp-client, beside one long-lived one that echoes a
// line every 100 ms. It counts what it got.
type promTraffic struct {
	ok200, frontend403, client403, tcpConns atomic.Int64
	errs                                    chan error
}

func runPromTraffic(ctx context.Context, l *meshLab, t *testing.T, tcpVIP netip.AddrPort) *promTraffic {
	t.Helper()
	frontend := newPodClient(t, l.podNamed(t, "production", "frontend-"))
	client := newPodClient(t, l.pod(t, "production", "client"))
	tcpClient := l.pod(t, "production", "tcp-client")
	reviews := l.serviceVIP(t, "production", "reviews", 9080)
	dial := func() (net.Conn, error) {
		var c net.Conn
		err := lab.InNetns(tcpClient.Netns, func() (err error) {
			c, err = net.DialTimeout("tcp", tcpVIP.String(), 5*time.Second)
			return err
		})
		return c, err
	}
	tr := &promTraffic{errs: make(chan error, 1)}
	fail := func(err error) {
		select {
		case tr.errs <- err:
		default:
		}
	}
	long, err := dial()
	if err != nil {
		t.Fatalf("tcp-client → tcp-echo: %v", err)
	}
	// The long-lived connection echoes on its own, every 100 ms, so that
	// a slow request of the loop below (the example's fault delay) never
	// leaves it idle for a second fibctl top samples.
	go func() {
		defer long.Close()
		for i := 0; ctx.Err() == nil; i++ {
			if err := echoOn(long, fmt.Sprintf("long-lived %d %s\n", i, strings.Repeat("x", 4096)), 5*time.Second); err != nil && ctx.Err() == nil {
				fail(fmt.Errorf("long-lived TCP connection: %w", err))
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	go func() {
		for i := 0; ctx.Err() == nil; i++ {
			rid := []string{"X-Request-Id", fmt.Sprintf("td-%d", i)}
			check := func(what string, pc *podClient, c call, want int, n *atomic.Int64) {
				a, err := pc.do(ctx, reviews, c)
				switch {
				case ctx.Err() != nil:
				case err != nil:
					fail(fmt.Errorf("%s: %w", what, err))
				case a.status != want:
					fail(fmt.Errorf("%s: got %v, want %d", what, a, want))
				default:
					n.Add(1)
				}
			}
			// Every other GET is a canary tester's, so reviews-v2 serves
			// some from the start (the dashboards' workload variable
			// must list it) rather than 10% of the split by chance.
			get := rid
			if i%2 == 0 {
				get = append([]string{"X-Canary-User", "true"}, rid...)
			}
			check("frontend GET", frontend, call{path: "/api/reviews/1", host: "reviews:9080", hdr: get}, 200, &tr.ok200)
			check("frontend POST", frontend, call{method: "POST", path: "/api/reviews/1", host: "reviews:9080", hdr: rid}, 403, &tr.frontend403)
			check("client GET", client, call{path: "/api/reviews/1", host: "reviews:9080", hdr: rid}, 403, &tr.client403)
			if i%2 == 0 {
				c, err := dial()
				if err == nil {
					err = echoOn(c, fmt.Sprintf("short %d\n", i), 5*time.Second)
					c.Close()
				}
				if err != nil && ctx.Err() == nil {
					fail(fmt.Errorf("short TCP connection: %w", err))
				} else if err == nil {
					tr.tcpConns.Add(1)
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return tr
}

// registeredNames returns every metric name the agents and the
// controller can expose: what their running processes expose now (names
// of the exposition's samples), and the names their collectors describe
// (series not exposed yet: vectors without children), histograms with
// their _bucket, _sum and _count.
func registeredNames(t *testing.T, l *meshLab, nodes []*lab.Node) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	scrape := func(netns, url string) {
		body := l.get(t, netns, url)
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Text()
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			names[line[:strings.IndexAny(line, "{ ")]] = true
		}
	}
	for _, n := range nodes {
		scrape(n.Netns, "http://127.0.0.1:15090/metrics")
	}
	scrape(l.fabricNetns(), "http://"+kubelet.ControllerMonitoring+"/metrics")
	// The proxy's, the CA's and the agent's sparse collectors,
	// described.
	p, err := proxy.New(proxy.Config{
		Snapshot: func() *xdsconf.Snapshot { return nil },
		Certificate: func(string, string) (*tls.Certificate, spiffeid.ID, error) {
			return nil, spiffeid.ID{}, errors.New("none")
		},
		TrustBundle: func() []*x509.Certificate { return nil },
		TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"),
	})
	if err != nil {
		t.Fatal(err)
	}
	cs := append(p.Collectors(), ca.NewServer(nil, nil, nil).Collectors()...)
	cs = append(cs, agent.SparseCollectors()...)
	descRE := regexp.MustCompile(`fqName: "([^"]+)"`)
	for _, c := range cs {
		ch := make(chan *prometheus.Desc, 64)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := descRE.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("descriptor %s: no fqName", d)
			}
			for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
				names[m[1]+suffix] = true
			}
		}
	}
	return names
}

func TestPrometheusDashboards(t *testing.T) {
	testenv.NeedBPFFS(t)
	if _, err := exec.LookPath("prometheus"); err != nil {
		t.Skip("needs Prometheus: apt-get install -y prometheus (Debian's package; the test runs the binary itself, not the service)")
	}
	ds, err := dashboards.Load()
	if err != nil {
		t.Fatal(err)
	}
	caps, err := ktls.Probe()
	if err != nil {
		t.Fatalf("kTLS probe: %v", err)
	}
	l := upMesh(t, promPrefix, manifestsIn(t, "../examples"))
	diagnoseOnFailure(t, l, "node1", "node2")
	nodes := l.agentsReady(t, 60*time.Second)
	var agents []string
	for _, n := range nodes {
		agents = append(agents, netip.AddrPortFrom(n.IP, 15090).String())
	}
	prom := startPrometheus(t, l.fabricNetns(), agents, kubelet.ControllerMonitoring)

	// The TCP workloads arrive while Prometheus scrapes: a push, its
	// convergence on both nodes, two CSRs.
	for name, body := range tcpManifests {
		l.write(t, name, body)
	}
	testenv.Eventually(t, 90*time.Second, "tcp-echo and tcp-client started and enrolled", func() error {
		found := 0
		for _, p := range l.status(t).Pods {
			if p.Namespace != "production" || (p.Name != "tcp-client" && !strings.HasPrefix(p.Name, "tcp-echo-")) {
				continue
			}
			found++
			if !p.Started {
				return fmt.Errorf("%s/%s: %s", p.Namespace, p.Name, p.Waiting)
			}
		}
		if found != 2 {
			return fmt.Errorf("%d of tcp-echo and tcp-client scheduled", found)
		}
		return nil
	})
	tcpVIP := l.serviceVIP(t, "production", "tcp-echo", 9000)
	l.waitEcho(t, "production", "tcp-client", tcpVIP, 60*time.Second)
	frontend := newPodClient(t, l.podNamed(t, "production", "frontend-"))
	waitL7(t, frontend, l.serviceVIP(t, "production", "reviews", 9080), call{path: "/api/reviews/0", host: "reviews:9080",
		hdr: []string{"X-Request-Id", "td-ready"}}, 200)

	ctx, stopTraffic := context.WithCancel(context.Background())
	defer stopTraffic()
	tr := runPromTraffic(ctx, l, t, tcpVIP)
	trafficErr := func() {
		t.Helper()
		select {
		case err := <-tr.errs:
			t.Fatalf("traffic: %v", err)
		default:
		}
	}

	// Prometheus has the requests: both codes.
	testenv.Eventually(t, 60*time.Second, "istio_requests_total with 200 and 403, from reviews-v1 and v2, in Prometheus", func() error {
		trafficErr()
		s, err := prom.query(`sum by (response_code, destination_workload) (istio_requests_total{reporter="destination", destination_workload_namespace="production"})`)
		if err != nil {
			return err
		}
		codes, workloads := map[string]bool{}, map[string]bool{}
		for _, x := range s {
			codes[x.Metric["response_code"]] = codes[x.Metric["response_code"]] || x.Value > 0
			workloads[x.Metric["destination_workload"]] = workloads[x.Metric["destination_workload"]] || x.Value > 0
		}
		if !codes["200"] || !codes["403"] || !workloads["reviews-v1"] || !workloads["reviews-v2"] {
			return fmt.Errorf("response codes %v and workloads %v, want 200 and 403 from reviews-v1 and reviews-v2", codes, workloads)
		}
		return nil
	})

	t.Run("panels", func(t *testing.T) { checkPanels(t, prom, ds, caps.ULP, trafficErr) })
	t.Run("metric names", func(t *testing.T) {
		names := registeredNames(t, l, nodes)
		for _, d := range ds {
			for _, q := range d.Queries() {
				for _, m := range dashboards.MetricNames(q.Expr) {
					if !names[m] {
						t.Errorf("%s: metric %s is neither exposed by the lab's agents and controller nor registered by a collector", q.Name(), m)
					}
				}
			}
			for _, v := range d.Templating.List {
				if v.Type != "query" {
					continue
				}
				sel, _, _ := v.LabelValues()
				for _, m := range dashboards.MetricNames(sel) {
					if !names[m] {
						t.Errorf("%s: variable %s: metric %s is not exposed", d.File, v.Name, m)
					}
				}
			}
		}
	})

	t.Run("fibctl top", func(t *testing.T) { checkTop(t, l) })

	stopTraffic()
	t.Logf("traffic: %d GETs answered 200, %d POSTs and %d GETs from another identity answered 403, %d short TCP connections",
		tr.ok200.Load(), tr.frontend403.Load(), tr.client403.Load(), tr.tcpConns.Load())
	t.Run("istio_requests_total", func(t *testing.T) { checkIstioRequests(t, l, prom, tr) })
	t.Run("istio_tcp", func(t *testing.T) { checkIstioTCP(t, prom, tr) })
}

// checkPanels runs every panel query of every dashboard, its variables
// set as a user would (namespace production, every workload and node
// the variable's own query lists), and wants data: a vector with a
// finite value. Queries listed in noDataInLab (and, without kTLS,
// noDataWithoutKTLS) must run without error.
func checkPanels(t *testing.T, prom *promServer, ds []dashboards.Dashboard, ktlsULP bool, trafficErr func()) {
	excluded := map[string]string{}
	for k, v := range noDataInLab {
		excluded[k] = v
	}
	for _, k := range noDataWithoutKTLS {
		if !ktlsULP {
			excluded[k] = "needs offloaded connections: this kernel has no kTLS (make vmtest's VM has it, and there these panels must have data)"
		}
	}
	seen := map[string]bool{}
	for _, d := range ds {
		t.Run(d.File, func(t *testing.T) {
			vals := map[string]string{"__rate_interval": promRateInterval, "__interval": promScrape.String(), "__range": "1h"}
			for _, v := range d.Templating.List {
				if v.Type != "query" {
					continue
				}
				sel, label, err := v.LabelValues()
				if err != nil {
					t.Fatal(err)
				}
				sel, err = dashboards.Expand(sel, vals)
				if err != nil {
					t.Fatalf("variable %s: %v", v.Name, err)
				}
				got, err := prom.labelValues(sel, label)
				if err != nil {
					t.Fatalf("variable %s: label_values(%s, %s): %v", v.Name, sel, label, err)
				}
				for _, w := range wantVarValues[v.Name] {
					if !slices.Contains(got, w) {
						t.Errorf("variable %s: label_values(%s, %s) = %v, want %s among them", v.Name, sel, label, got, w)
					}
				}
				if len(got) == 0 {
					t.Fatalf("variable %s: label_values(%s, %s) lists nothing", v.Name, sel, label)
				}
				// The dashboards' default selection: namespace
				// production (the examples'), All for the others.
				switch {
				case v.Name == "namespace":
					vals[v.Name] = "production"
				case v.IncludeAll:
					vals[v.Name] = v.AllValue
				default:
					vals[v.Name] = regexp.QuoteMeta(got[0])
				}
				t.Logf("$%s = %s (of %v)", v.Name, vals[v.Name], got)
			}
			// Poll: a rate needs two scrapes in its window after the
			// traffic began; a panel gets until the deadline.
			pending := map[string]dashboards.Query{}
			for _, q := range d.Queries() {
				pending[q.Name()] = q
			}
			lastErr := map[string]string{}
			deadline := time.Now().Add(45 * time.Second)
			for len(pending) > 0 && time.Now().Before(deadline) {
				trafficErr()
				for name, q := range pending {
					panel := strings.TrimSuffix(name, " / "+q.RefID)
					expr, err := dashboards.Expand(q.Expr, vals)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					s, err := prom.query(expr)
					if _, ok := excluded[panel]; ok {
						seen[panel] = true
					}
					if err != nil {
						t.Errorf("%s: %s: %v", name, expr, err)
						delete(pending, name)
						continue
					}
					finite := 0
					for _, x := range s {
						if !math.IsNaN(x.Value) && !math.IsInf(x.Value, 0) {
							finite++
						}
					}
					if why, ok := excluded[panel]; ok {
						t.Logf("%s: no data expected (%s); got %d series", name, why, len(s))
						delete(pending, name)
						continue
					}
					if finite > 0 {
						delete(pending, name)
						continue
					}
					lastErr[name] = fmt.Sprintf("%d series, none with a finite value: %v", len(s), s)
				}
				if len(pending) > 0 {
					time.Sleep(promScrape)
				}
			}
			names := make([]string, 0, len(pending))
			for n := range pending {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				t.Errorf("%s: no data: %s\n  query: %s", n, lastErr[n], pending[n].Expr)
			}
		})
	}
	for k := range excluded {
		if !seen[k] {
			t.Errorf("exclusion %q names no panel of the dashboards: update noDataInLab", k)
		}
	}
}

// checkIstioRequests checks istio_requests_total as Prometheus has it
// once the traffic stopped: the same counts as the agents expose, and
// the series the authorization example must produce, from both reporters.
func checkIstioRequests(t *testing.T, l *meshLab, prom *promServer, tr *promTraffic) {
	const (
		frontendID = "spiffe://cluster.local/ns/production/sa/frontend"
		reviewsID  = "spiffe://cluster.local/ns/production/sa/reviews"
		clientID   = "spiffe://cluster.local/ns/production/sa/default"
		reviewsSvc = "reviews.production.svc.cluster.local"
	)
	by := "reporter, source_workload, source_workload_namespace, source_principal, destination_workload, " +
		"destination_workload_namespace, destination_principal, destination_service, response_code, connection_security_policy"
	// Prometheus caught up with the agents: its latest sample of every
	// series equals the agents' own count (both nodes' /metrics).
	var s []promSample
	testenv.Eventually(t, 30*time.Second, "Prometheus's istio_requests_total equal to the agents'", func() error {
		var err error
		s, err = prom.query(`sum(istio_requests_total{destination_workload_namespace="production"})`)
		if err != nil {
			return err
		}
		var agents float64
		for _, n := range []string{"node1", "node2"} {
			agents += l.metricWith(t, n, "istio_requests_total", `destination_workload_namespace="production"`)
		}
		if len(s) != 1 || s[0].Value != agents {
			return fmt.Errorf("Prometheus %v, the agents %v", s, agents)
		}
		return nil
	})
	s, err := prom.query(fmt.Sprintf(`sum by (%s) (istio_requests_total{destination_workload_namespace="production"})`, by))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, x := range s {
		lines = append(lines, fmt.Sprintf("%v %v", x.Metric, x.Value))
	}
	sort.Strings(lines)
	t.Logf("istio_requests_total by %s:\n%s", by, strings.Join(lines, "\n"))
	reviewsWorkload := regexp.MustCompile(`^reviews-v[12]$`)
	// Istio's connection_security_policy: the server side says how the
	// request came (mutual_tls); the client side does not know it
	// (unknown).
	policy := map[string]string{"destination": "mutual_tls", "source": "unknown"}
	tests := []struct {
		name string
		want map[string]string // labels; destination_workload is checked against reviewsWorkload
		min  int64             // at least this many requests
	}{
		{"frontend → reviews 200, server side", map[string]string{"reporter": "destination", "source_workload": "frontend",
			"source_principal": frontendID, "destination_principal": reviewsID, "response_code": "200"}, tr.ok200.Load()},
		{"frontend → reviews 200, client side", map[string]string{"reporter": "source", "source_workload": "frontend",
			"source_principal": frontendID, "destination_principal": reviewsID, "response_code": "200"}, tr.ok200.Load()},
		{"frontend POST → reviews 403 (the policy allows GET only), server side", map[string]string{"reporter": "destination",
			"source_workload": "frontend", "source_principal": frontendID, "destination_principal": reviewsID, "response_code": "403"}, tr.frontend403.Load()},
		{"frontend POST → reviews 403, client side", map[string]string{"reporter": "source",
			"source_workload": "frontend", "source_principal": frontendID, "destination_principal": reviewsID, "response_code": "403"}, tr.frontend403.Load()},
		{"client → reviews 403 (not frontend's identity), server side", map[string]string{"reporter": "destination",
			"source_workload": "client", "source_principal": clientID, "destination_principal": reviewsID, "response_code": "403"}, tr.client403.Load()},
	}
	for _, tt := range tests {
		var sum float64
		for _, x := range s {
			match := reviewsWorkload.MatchString(x.Metric["destination_workload"]) &&
				x.Metric["source_workload_namespace"] == "production" && x.Metric["destination_workload_namespace"] == "production" &&
				x.Metric["destination_service"] == reviewsSvc && x.Metric["connection_security_policy"] == policy[x.Metric["reporter"]]
			for k, v := range tt.want {
				match = match && x.Metric[k] == v
			}
			if match {
				sum += x.Value
			}
		}
		if sum < float64(tt.min) || sum == 0 {
			t.Errorf("%s: %v requests in Prometheus with %v, destination_workload reviews-v1 or -v2, destination_service %s, connection_security_policy %s; want >= %d (sent)",
				tt.name, sum, tt.want, reviewsSvc, policy[tt.want["reporter"]], tt.min)
		}
	}
}

// checkIstioTCP checks istio_tcp_connections_opened_total and the byte
// counters of the TCP traffic as Prometheus has them: tcp-client →
// tcp-echo, over mTLS, from both reporters, each side naming its own
// workload and both principals.
func checkIstioTCP(t *testing.T, prom *promServer, tr *promTraffic) {
	const (
		clientID = "spiffe://cluster.local/ns/production/sa/tcp-client"
		echoID   = "spiffe://cluster.local/ns/production/sa/tcp-echo"
	)
	// tcpPeerWorkload are the values accepted for the workload of the
	// side that did not report: on an opaque TCP stream the agents
	// exchange no workload metadata (HTTP has it, proxy.WorkloadMeta), so
	// the peer's workload may be unknown; its principal, verified in the
	// handshake, is always checked. Istio's TCP metadata exchange fills
	// it in: when the agents do, drop "unknown" here.
	tcpPeerWorkload := map[string][]string{
		"source":      {"tcp-echo", "unknown"},   // destination_workload seen by tcp-client's agent
		"destination": {"tcp-client", "unknown"}, // source_workload seen by tcp-echo's agent
	}
	for _, tt := range []struct {
		metric, reporter, policy string
		min                      float64
	}{
		{"istio_tcp_connections_opened_total", "destination", "mutual_tls", float64(tr.tcpConns.Load())},
		{"istio_tcp_connections_opened_total", "source", "unknown", float64(tr.tcpConns.Load())},
		{"istio_tcp_connections_closed_total", "destination", "mutual_tls", float64(tr.tcpConns.Load())},
		{"istio_tcp_connections_closed_total", "source", "unknown", float64(tr.tcpConns.Load())},
		{"istio_tcp_sent_bytes_total", "destination", "mutual_tls", 1},
		{"istio_tcp_received_bytes_total", "destination", "mutual_tls", 1},
		{"istio_tcp_sent_bytes_total", "source", "unknown", 1},
		{"istio_tcp_received_bytes_total", "source", "unknown", 1},
	} {
		expr := fmt.Sprintf(`sum by (source_workload, destination_workload) (%s{reporter=%q, source_workload_namespace="production", source_principal=%q, `+
			`destination_workload_namespace="production", destination_principal=%q, destination_service="tcp-echo.production.svc.cluster.local", connection_security_policy=%q})`,
			tt.metric, tt.reporter, clientID, echoID, tt.policy)
		testenv.Eventually(t, 10*time.Second, expr, func() error {
			s, err := prom.query(expr)
			if err != nil {
				return err
			}
			var sum float64
			for _, x := range s {
				src, dst := x.Metric["source_workload"], x.Metric["destination_workload"]
				own, peer := src, dst
				ownWant := "tcp-client"
				if tt.reporter == "destination" {
					own, peer, ownWant = dst, src, "tcp-echo"
				}
				if own != ownWant || !slices.Contains(tcpPeerWorkload[tt.reporter], peer) {
					return fmt.Errorf("series %v: want the reporting side's workload %s and the peer's one of %v", x.Metric, ownWant, tcpPeerWorkload[tt.reporter])
				}
				sum += x.Value
			}
			if sum < tt.min || sum == 0 {
				all, _ := prom.query(fmt.Sprintf(`%s{destination_workload_namespace="production"}`, tt.metric))
				return fmt.Errorf("got %v, want >= %v\n  %s in Prometheus: %v", s, tt.min, tt.metric, all)
			}
			return nil
		})
	}
}

// checkTop runs fibctl top -o json on node1 while the traffic runs: the
// long-lived TCP connection of tcp-client is listed, with a rate.
func checkTop(t *testing.T, l *meshLab) {
	cmd := exec.Command(filepath.Join(binDir, "fibctl"), "--node", l.nodeNetns("node1"), "top", "-o", "json", "--interval", "1s",
		"--pod", "production/tcp-client")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("fibctl top -o json: %v\n%s", err, stderr.String())
	}
	var snap struct {
		IntervalSeconds float64 `json:"intervalSeconds"`
		Summary         struct {
			Connections int            `json:"connections"`
			ByOffload   map[string]int `json:"byOffload"`
		} `json:"summary"`
		Connections []struct {
			Pod          string  `json:"pod"`
			Direction    string  `json:"direction"`
			State        string  `json:"state"`
			Offload      string  `json:"offload"`
			PeerIdentity string  `json:"peerIdentity"`
			BytesPerSec  float64 `json:"bytesPerSec"`
			OutPerSec    float64 `json:"outPerSec"`
			InPerSec     float64 `json:"inPerSec"`
		} `json:"connections"`
	}
	if err := json.Unmarshal(out, &snap); err != nil {
		t.Fatalf("fibctl top -o json: %v\n%s", err, out)
	}
	if snap.IntervalSeconds < 1 || len(snap.Connections) == 0 {
		t.Fatalf("fibctl top -o json: interval %v s, %d connections, want >= 1 s and tcp-client's:\n%s", snap.IntervalSeconds, len(snap.Connections), out)
	}
	c := snap.Connections[0] // the busiest
	if c.Pod != "production/tcp-client" || c.Direction != "outbound" || c.PeerIdentity != "spiffe://cluster.local/ns/production/sa/tcp-echo" ||
		c.OutPerSec <= 0 || c.InPerSec <= 0 || c.Offload == "" {
		t.Errorf("fibctl top -o json: the busiest connection %+v, want tcp-client's long-lived one to tcp-echo, bytes both ways, an offload mode", c)
	}
	if snap.Summary.Connections != len(snap.Connections) || snap.Summary.ByOffload[c.Offload] == 0 {
		t.Errorf("fibctl top -o json: summary %+v for %d connections", snap.Summary, len(snap.Connections))
	}
	// The live view, twice, piped: no ANSI codes.
	view, err := exec.Command(filepath.Join(binDir, "fibctl"), "--node", l.nodeNetns("node1"), "top", "--interval", "500ms", "--count", "2").CombinedOutput()
	if err != nil || bytes.Contains(view, []byte("\x1b[")) || bytes.Count(view, []byte("fibctl top: node")) != 2 {
		t.Errorf("fibctl top --count 2: %v, want two views without ANSI codes:\n%q", err, view)
	}
	t.Logf("fibctl --node %s top --count 2:\n%s", l.nodeNetns("node1"), view)
}
