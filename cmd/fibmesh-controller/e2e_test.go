package main

// End-to-end tests of the fibmesh-controller binary, run the way users run
// it: built with go build, started as a subprocess on controller/testdata/cluster/, and
// spoken to over its xDS and monitoring ports by real clients (the
// agent's xdsclient, agent/svid's Rotator, the fibctl binary). They need no root
// and no cluster.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/fibmesh/fibmesh/agent/svid"
	"github.com/fibmesh/fibmesh/agent/xdsclient"
	cav1 "github.com/fibmesh/fibmesh/api/ca/v1"
	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	"github.com/fibmesh/fibmesh/controller/ca"
	"github.com/fibmesh/fibmesh/controller/xds"
	"github.com/fibmesh/fibmesh/controller/xds/envoy"
	"github.com/fibmesh/fibmesh/controller/xds/fds"
	"github.com/fibmesh/fibmesh/internal/testenv"
)

// wait bounds every wait on the controller: generous, since -race and a
// loaded machine slow it down. Nothing sleeps in place of an event: the
// tests wait on the clients' updates, or poll the controller's endpoints
// (/healthz, /readyz, /debug/...), never on its log.
const wait = 10 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if bins.dir != "" {
			os.RemoveAll(bins.dir)
		}
		os.Exit(code)
	}))
}

// bins are the fibmesh-controller and fibctl binaries, built once and
// removed by TestMain.
var bins struct {
	once            sync.Once
	dir             string
	controller, ctl string
	err             error
}

// binaries builds fibmesh-controller and fibctl (with -race when the test
// is) into a temporary directory, once per test binary.
func binaries(t *testing.T) (controller, fibctl string) {
	t.Helper()
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "fibmesh-e2e-bin-")
		if bins.err != nil {
			return
		}
		if bins.err = testenv.BuildCommands(bins.dir, "cmd/fibmesh-controller", "cmd/fibctl"); bins.err != nil {
			return
		}
		bins.controller = filepath.Join(bins.dir, "fibmesh-controller")
		bins.ctl = filepath.Join(bins.dir, "fibctl")
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return bins.controller, bins.ctl
}

// controllerProc is a running fibmesh-controller.
type controllerProc struct {
	cmd      *exec.Cmd
	xds, mon string // its --xds-listen and --monitoring-listen addresses
	log      *logLines
	exited   chan struct{}
	exitErr  error
}

// logLines collects a process's stderr, line by line, to show when a
// test fails.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func newLogLines() *logLines { return &logLines{} }

func (l *logLines) add(line string) {
	l.mu.Lock()
	l.lines = append(l.lines, line)
	l.mu.Unlock()
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// freeAddr returns a loopback address with a port that was free a moment
// ago, for a listen flag: the test then knows where the controller
// listens without reading its log.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startController starts the binary with args and listen addresses of
// its own (--xds-listen, --xds-tls-listen, --monitoring-listen on
// loopback), and waits until its monitoring endpoint answers /healthz;
// it is killed when the test ends unless it has exited.
func startController(t *testing.T, bin string, args ...string) *controllerProc {
	t.Helper()
	p := &controllerProc{xds: freeAddr(t), mon: freeAddr(t), log: newLogLines(), exited: make(chan struct{})}
	// A free webhook port unless the test names one (the last flag wins):
	// the default :15017 collides between test processes run at once.
	args = append([]string{"--webhook-listen", freeAddr(t)}, args...)
	args = append(args, "--xds-listen", p.xds, "--xds-tls-listen", freeAddr(t), "--monitoring-listen", p.mon)
	p.cmd = exec.Command(bin, args...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.log.add(sc.Text())
		}
		p.exitErr = p.cmd.Wait() // after the pipe is drained, as Wait requires
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("controller log:\n%s", p.log)
		}
	})
	poll(t, "GET /healthz = 200", func() (bool, string) {
		select {
		case <-p.exited:
			t.Fatalf("the controller exited (%v) before serving; its log:\n%s", p.exitErr, p.log)
		default:
		}
		code, b, err := p.get("/healthz")
		return err == nil && code == http.StatusOK, fmt.Sprintf("%d %v %s", code, err, b)
	})
	return p
}

// stop sends SIGTERM and checks that the controller exits 0 within 10 s.
func (p *controllerProc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("the controller did not exit within 10s of SIGTERM; its log:\n%s", p.log)
	}
	if p.exitErr != nil {
		t.Errorf("after SIGTERM the controller exited with %v, want status 0; its log:\n%s", p.exitErr, p.log)
	}
}

// httpc talks to the monitoring endpoint. No keep-alive: no idle
// connection's goroutines outlive a test (goleak).
var httpc = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// get returns the status and body of GET http://p.mon/path.
func (p *controllerProc) get(path string) (int, []byte, error) {
	resp, err := httpc.Get("http://" + p.mon + path)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// mustGet is get for a path that must answer 200.
func (p *controllerProc) mustGet(t *testing.T, path string) []byte {
	t.Helper()
	code, b, err := p.get(path)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s: %d %v: %s", path, code, err, b)
	}
	return b
}

// poll calls ok until it returns true, failing after wait (with the last
// state ok reported): for state of the controller process that it
// announces no other way.
func poll(t *testing.T, what string, ok func() (bool, string)) {
	t.Helper()
	testenv.Eventually(t, wait, what, func() error {
		if done, last := ok(); !done {
			return fmt.Errorf("last: %s", last)
		}
		return nil
	})
}

func (p *controllerProc) waitReady(t *testing.T) {
	t.Helper()
	poll(t, "GET /readyz = 200", func() (bool, string) {
		code, b, err := p.get("/readyz")
		return err == nil && code == http.StatusOK, fmt.Sprintf("%d %v %s", code, err, b)
	})
}

// status is the controller's /debug/config_status.
func (p *controllerProc) status(t *testing.T) []xds.NodeStatus {
	t.Helper()
	var all []xds.NodeStatus
	if err := json.Unmarshal(p.mustGet(t, xds.StatusPath), &all); err != nil {
		t.Fatalf("%s: %v", xds.StatusPath, err)
	}
	return all
}

// waitSynced waits until every one of nodes is connected and has ACKed
// every type at the version last sent, and returns their status.
func (p *controllerProc) waitSynced(t *testing.T, nodes ...string) map[string]xds.NodeStatus {
	t.Helper()
	var out map[string]xds.NodeStatus
	poll(t, "nodes "+strings.Join(nodes, ", ")+" SYNCED for every type", func() (bool, string) {
		all := p.status(t)
		out = map[string]xds.NodeStatus{}
		for _, ns := range all {
			if ns.Streams == 0 || len(ns.Types) != len(xds.Types) {
				continue
			}
			synced := true
			for _, ts := range ns.Types {
				synced = synced && ts.Synced()
			}
			if synced {
				out[ns.Node] = ns
			}
		}
		for _, n := range nodes {
			if _, ok := out[n]; !ok {
				return false, fmt.Sprintf("%+v", all)
			}
		}
		return true, ""
	})
	return out
}

// agent is an xdsclient of one node against the controller.
type agent struct {
	*xdsclient.Client
	node string
	conn *grpc.ClientConn
	done chan error // Run's result
}

// startAgent connects an xDS client as node, subscribed to every type the
// way the agent is; stop it by cancelling ctx.
func startAgent(t *testing.T, ctx context.Context, addr, node string, delta bool, subs ...xdsclient.Subscription) *agent {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	if subs == nil {
		subs = xds.AgentSubscriptions(node)
	}
	a := &agent{Client: xdsclient.New(conn, xdsclient.Config{Node: node, Delta: delta, Subscriptions: subs}), node: node, conn: conn, done: make(chan error, 1)}
	go func() { a.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		// Run has returned by now, or returns on the test's cancel.
		conn.Close()
	})
	return a
}

// await reads a's updates until ok accepts one, failing after wait.
func (a *agent) await(t *testing.T, what string, ok func(xdsclient.Update) bool) xdsclient.Update {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case u := <-a.Updates():
			if u.NACK != nil {
				t.Fatalf("%s NACKed %s %s: %v", a.node, xds.ShortType(u.TypeURL), u.Version, u.NACK)
			}
			if ok(u) {
				return u
			}
		case err := <-a.done:
			t.Fatalf("%s's stream ended (%v) while waiting for %s", a.node, err, what)
		case <-timeout:
			t.Fatalf("%s: timed out waiting for %s", a.node, what)
		}
	}
}

// synced waits until a has accepted a first response of each of types.
func (a *agent) synced(t *testing.T, types ...string) {
	t.Helper()
	seen := map[string]bool{}
	a.await(t, "a first response of every type", func(u xdsclient.Update) bool {
		seen[u.TypeURL] = true
		for _, typ := range types {
			if !seen[typ] {
				return false
			}
		}
		return true
	})
}

// drain discards the updates a has received so far.
func (a *agent) drain() {
	for {
		select {
		case <-a.Updates():
		default:
			return
		}
	}
}

const reviewsRoute = "reviews.production.svc.cluster.local:9080"

// weights are the weighted clusters' weights of the reviews route
// configuration a holds.
func (a *agent) weights() []uint32 {
	rc, ok := a.Resources(resource.RouteType)[reviewsRoute].(*routev3.RouteConfiguration)
	if !ok {
		return nil
	}
	var out []uint32
	for _, vh := range rc.VirtualHosts {
		for _, r := range vh.Routes {
			for _, wc := range r.GetRoute().GetWeightedClusters().GetClusters() {
				out = append(out, wc.GetWeight().GetValue())
			}
		}
	}
	return out
}

// awaitWeights waits for an RDS response that leaves a with the reviews
// split want.
func (a *agent) awaitWeights(t *testing.T, want ...uint32) {
	t.Helper()
	a.await(t, fmt.Sprintf("RDS with reviews weights %v", want), func(u xdsclient.Update) bool {
		return u.TypeURL == resource.RouteType && slices.Equal(a.weights(), want)
	})
}

// trustBundle is the PEM of the ROOTCA secret a received over SDS.
func (a *agent) trustBundle(t *testing.T) []byte {
	t.Helper()
	sec, ok := a.Resources(resource.SecretType)[envoy.RootCASecret].(*tlsv3.Secret)
	if !ok {
		t.Fatalf("%s has no SDS secret %s", a.node, envoy.RootCASecret)
	}
	b := sec.GetValidationContext().GetTrustedCa().GetInlineBytes()
	if len(b) == 0 {
		t.Fatalf("SDS secret %s has no inline trusted_ca: %v", envoy.RootCASecret, sec)
	}
	return b
}

func parsePEMCerts(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatal("no certificates in the trust bundle")
	}
	return out
}

// editFile rewrites path with each old → new replacement applied, the way
// editors save: a temporary file beside the config directory, renamed
// over the original.
func editFile(t *testing.T, path string, replace ...string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i < len(replace); i += 2 {
		if !strings.Contains(s, replace[i]) {
			t.Fatalf("%s has no %q to replace", path, replace[i])
		}
		s = strings.ReplaceAll(s, replace[i], replace[i+1])
	}
	tmp := filepath.Join(filepath.Dir(filepath.Dir(path)), "edit.tmp")
	if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		t.Fatal(err)
	}
}

// metrics returns the samples of a Prometheus text exposition: the
// series (name with labels) → value.
func metrics(t *testing.T, body []byte) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestController runs the binary on a copy of controller/testdata/cluster/ with bootstrap
// tokens and a generated CA, and checks what users see: agents of two
// nodes (delta and state-of-the-world) get every type; an edit of a file
// reaches them; a broken edit is rejected and visible in /debug/analyze
// while the last good config stays; fibctl config status; the CA issues
// an SVID to the right node only; the metrics; SIGTERM; and a restart on
// the same --ca-dir keeps the root.
func TestController(t *testing.T) {
	bin, fibctl := binaries(t)
	root := t.TempDir()
	cfg := filepath.Join(root, "config")
	copyDir(t, "../../controller/testdata/cluster", cfg)
	tokens := filepath.Join(root, "tokens")
	if err := os.WriteFile(tokens, []byte("node1 tok-node1\nnode2 tok-node2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	caDir := filepath.Join(root, "ca")
	args := []string{"--config-dir", cfg, "--ca-dir", caDir, "--bootstrap-tokens", tokens}
	p := startController(t, bin, args...)
	p.waitReady(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	node1 := startAgent(t, ctx, p.xds, "node1", true)
	node2 := startAgent(t, ctx, p.xds, "node2", false)
	node1.synced(t, xds.Types...)
	node2.synced(t, xds.Types...)

	// node1's flow table lists its pods (controller/testdata/cluster/03-pods.yaml).
	local, ok := node1.Resources(fds.TypeURL)["node1"].(*fibv1.FlowTable)
	if !ok {
		t.Fatalf("node1 has no flow table named node1: %v", node1.Resources(fds.TypeURL))
	}
	var pods []string
	for _, pod := range local.LocalPods {
		pods = append(pods, pod.Namespace+"/"+pod.Name)
	}
	if want := []string{"production/frontend", "production/reviews-v1"}; !slices.Equal(pods, want) {
		t.Errorf("node1's flow table lists local pods %v, want %v", pods, want)
	}
	if _, ok := node2.Resources(fds.TypeURL)["node1"]; ok {
		t.Error("node2 got node1's flow table")
	}
	if w := node1.weights(); !slices.Equal(w, []uint32{90, 10}) {
		t.Fatalf("node1's reviews weights %v, want the examples' [90 10]", w)
	}

	t.Run("edit", func(t *testing.T) {
		vs := filepath.Join(cfg, "10-reviews-virtualservice.yaml")
		editFile(t, vs, "weight: 90", "weight: 70", "weight: 10", "weight: 30")
		node1.awaitWeights(t, 70, 30)
		node2.awaitWeights(t, 70, 30)
		before := p.waitSynced(t, "node1", "node2")
		node1.drain()
		node2.drain()

		// A broken edit is rejected: IST0106 in /debug/analyze, nothing
		// pushed, both agents keep the last good routes.
		editFile(t, vs, "weight: 70", "wieght: 70")
		poll(t, "/debug/status reports the rejection, naming the unknown field wieght", func() (bool, string) {
			b := p.mustGet(t, "/debug/status")
			var st struct{ Rejected string }
			if err := json.Unmarshal(b, &st); err != nil {
				t.Fatalf("/debug/status: %v: %s", err, b)
			}
			return strings.Contains(st.Rejected, "wieght"), string(b)
		})
		poll(t, "/debug/analyze reports IST0106 for the unknown field", func() (bool, string) {
			b := p.mustGet(t, "/debug/analyze")
			var fs []struct{ Code, Message string }
			if err := json.Unmarshal(b, &fs); err != nil {
				t.Fatalf("/debug/analyze: %v: %s", err, b)
			}
			return slices.ContainsFunc(fs, func(f struct{ Code, Message string }) bool {
				return f.Code == "IST0106" && strings.Contains(f.Message, "wieght")
			}), string(b)
		})
		after := p.waitSynced(t, "node1", "node2")
		for _, n := range []string{"node1", "node2"} {
			for i, ts := range after[n].Types {
				if was := before[n].Types[i]; ts.Sent != was.Sent {
					t.Errorf("%s %s: version %s sent after the rejected edit (was %s)", n, xds.ShortType(ts.TypeURL), ts.Sent, was.Sent)
				}
			}
		}
		for _, a := range []*agent{node1, node2} {
			select {
			case u := <-a.Updates():
				t.Errorf("%s got %s %s %v after the rejected edit, want nothing", a.node, xds.ShortType(u.TypeURL), u.Version, u.Changed)
			default:
			}
			if w := a.weights(); !slices.Equal(w, []uint32{70, 30}) {
				t.Errorf("%s's reviews weights %v after the rejected edit, want the last good [70 30]", a.node, w)
			}
		}

		// Fixed: the next push is the fix's (the first RDS response
		// since the broken edit carries it).
		editFile(t, vs, "wieght: 70", "weight: 60", "weight: 30", "weight: 40")
		for _, a := range []*agent{node1, node2} {
			u := a.await(t, "the fixed edit's RDS", func(u xdsclient.Update) bool { return u.TypeURL == resource.RouteType })
			if w := a.weights(); !slices.Equal(w, []uint32{60, 40}) {
				t.Errorf("%s's first RDS response after the broken edit (%s) leaves weights %v, want the fix's [60 40]", a.node, u.Version, w)
			}
		}
		p.waitSynced(t, "node1", "node2")
		poll(t, "/debug/analyze clear of IST0106", func() (bool, string) {
			b := p.mustGet(t, "/debug/analyze")
			return !bytes.Contains(b, []byte("IST0106")), string(b)
		})
	})

	t.Run("fibctl config status", func(t *testing.T) {
		p.waitSynced(t, "node1", "node2")
		cmd := exec.Command(fibctl, "config", "status", "--controller", "http://"+p.mon)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("fibctl config status: %v; stderr %q; stdout:\n%s", err, stderr.String(), stdout.String())
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		header := strings.Fields(lines[0])
		if want := []string{"NODE", "STREAMS", "CDS", "EDS", "LDS", "RDS", "SDS", "FDS", "CONVERGED"}; !slices.Equal(header, want) {
			t.Fatalf("header %v, want %v", header, want)
		}
		rows := map[string][]string{}
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			rows[f[0]] = f
		}
		for _, n := range []string{"node1", "node2"} {
			r := rows[n]
			if len(r) != len(header) {
				t.Errorf("no row for %s in:\n%s", n, stdout.String())
				continue
			}
			if r[1] != "1" {
				t.Errorf("%s has %s streams, want 1", n, r[1])
			}
			for i, state := range r[2:8] {
				if state != "SYNCED" {
					t.Errorf("%s %s is %s, want SYNCED", n, header[2+i], state)
				}
			}
		}
	})

	t.Run("CSR", func(t *testing.T) {
		conn, err := grpc.NewClient(p.xds, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		client := cav1.NewCertificateServiceClient(conn)
		fetch := func(token, ns, pod string) (*svid.SVID, error) {
			r, err := svid.NewRotator(svid.RotatorConfig{Client: client, Token: svid.StaticToken(token), Namespace: ns, Pod: pod})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(ctx, wait)
			defer cancel()
			return r.Fetch(ctx)
		}

		svid, err := fetch("tok-node1", "production", "reviews-v1")
		if err != nil {
			t.Fatalf("node1 asking for production/reviews-v1, on node1: %v", err)
		}
		// reviews-v1 runs as ServiceAccount reviews (examples/03-pods.yaml).
		if want := "spiffe://cluster.local/ns/production/sa/reviews"; svid.ID.String() != want || len(svid.Chain[0].URIs) != 1 || svid.Chain[0].URIs[0].String() != want {
			t.Errorf("SVID for production/reviews-v1 is %s (URI SANs %v), want only %s", svid.ID, svid.Chain[0].URIs, want)
		}
		// It verifies against the bundle the agents got over SDS.
		td := spiffeid.RequireTrustDomainFromString("cluster.local")
		bundle := x509bundle.FromX509Authorities(td, parsePEMCerts(t, node1.trustBundle(t)))
		if _, _, err := x509svid.Verify(svid.Chain, bundle); err != nil {
			t.Errorf("the SVID does not verify against the SDS trust bundle %s: %v", envoy.RootCASecret, err)
		}

		if _, err := fetch("tok-node1", "production", "ratings"); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "node2") {
			t.Errorf("node1 asking for production/ratings, on node2: %v, want PermissionDenied naming node2", err)
		}
		if _, err := fetch("tok-nobody", "production", "reviews-v1"); status.Code(err) != codes.Unauthenticated {
			t.Errorf("a bad token: %v, want Unauthenticated", err)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		m := metrics(t, p.mustGet(t, "/metrics"))
		for series, want := range map[string]float64{
			"fibmesh_xds_connected_agents":                            2,
			"fibmesh_ca_csr_issued_total":                             1,
			`fibmesh_ca_csr_refused_total{reason="foreign_workload"}`: 1,
			`fibmesh_ca_csr_refused_total{reason="unauthenticated"}`:  1,
			`fibmesh_ca_csr_refused_total{reason="internal"}`:         0,
		} {
			if got, ok := m[series]; !ok || got != want {
				t.Errorf("%s = %v (exported: %v), want %v", series, got, ok, want)
			}
		}
		// At least: the first model, the 70/30 edit and the fix.
		if got := m["fibmesh_xds_pushes_total"]; got < 3 {
			t.Errorf("fibmesh_xds_pushes_total = %v, want at least 3", got)
		}
		if got := m["fibmesh_xds_convergence_seconds_count"]; got < 1 {
			t.Errorf("fibmesh_xds_convergence_seconds_count = %v, want at least 1", got)
		}
	})

	bundle := node1.trustBundle(t)
	rootFile, err := os.ReadFile(filepath.Join(caDir, ca.CertFile))
	if err != nil {
		t.Fatal(err)
	}

	// SIGTERM: the controller exits 0, the agents' streams end.
	p.stop(t)
	for _, a := range []*agent{node1, node2} {
		select {
		case <-a.done:
		case <-time.After(wait):
			t.Errorf("%s's Run did not return after the controller exited", a.node)
		}
	}

	// A restart on the same --ca-dir keeps the root: same file, same
	// bundle over SDS.
	p2 := startController(t, bin, args...)
	p2.waitReady(t)
	sds := startAgent(t, ctx, p2.xds, "node1", true, xdsclient.Subscription{TypeURL: resource.SecretType, Names: []string{envoy.RootCASecret}})
	sds.synced(t, resource.SecretType)
	if got := sds.trustBundle(t); !bytes.Equal(got, bundle) {
		t.Errorf("after a restart on the same --ca-dir the SDS trust bundle changed:\n%s\nwas:\n%s", got, bundle)
	}
	if got, err := os.ReadFile(filepath.Join(caDir, ca.CertFile)); err != nil || !bytes.Equal(got, rootFile) {
		t.Errorf("after a restart %s changed (%v)", ca.CertFile, err)
	}
	cancel()
	if err := <-sds.done; err != nil {
		t.Errorf("SDS client: %v", err)
	}
	p2.stop(t)
}

// TestFlagErrors: a command line the controller cannot run with exits 2,
// before listening or reading anything, with a message naming the flag.
func TestFlagErrors(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	pem := filepath.Join(dir, "ca.pem")
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"ca-cert without ca-key", []string{"--ca-cert", pem}, "--ca-cert and --ca-key go together"},
		{"ca-key without ca-cert", []string{"--ca-key", pem}, "--ca-cert and --ca-key go together"},
		{"ca-secret without a slash", []string{"--ca-secret", "foo"}, `--ca-secret "foo": want NAMESPACE/NAME`},
		{"svid-ttl too short", []string{"--svid-ttl", "1s"}, "--svid-ttl 1s: want at least 1m"},
		{"config-dir missing", []string{"--config-dir", "/nonexistent"}, "--config-dir /nonexistent: not a readable directory"},
		{"config-dir and kubeconfig", []string{"--config-dir", dir, "--kubeconfig", filepath.Join(dir, "kubeconfig")}, "--config-dir and --kubeconfig are exclusive"},
		{"log-format", []string{"--log-format", "xml"}, `--log-format "xml": want text or json`},
		{"live-agent-port out of range", []string{"--live-agent-port", "70000"}, "--live-agent-port 70000: want a port (0: do not scrape agents)"},
		{"live-scrape-timeout not under the interval", []string{"--live-interval", "1s", "--live-scrape-timeout", "2s"}, "--live-interval 1s / --live-scrape-timeout 2s: want 0 < timeout < interval"},
		{"live-interval too short", []string{"--live-interval", "50ms", "--live-scrape-timeout", "10ms"}, "interval at least 100ms"},
		{"live-scrape-concurrency zero", []string{"--live-scrape-concurrency", "0"}, "--live-scrape-concurrency 0: want at least 1"},
		{"unknown flag", []string{"--xds-listn", ":0"}, "-xds-listn"},
		{"argument", []string{"--config-dir", dir, "examples"}, `unexpected argument "examples"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			// Listening addresses that would fail: the command line must
			// be refused before the controller gets that far.
			args := append([]string{"--ca-dir", filepath.Join(dir, "ca"), "--xds-listen", "256.0.0.1:1", "--xds-tls-listen", "256.0.0.1:1", "--monitoring-listen", "256.0.0.1:1"}, tt.args...)
			cmd := exec.CommandContext(ctx, bin, args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Errorf("fibmesh-controller %s: %v, want exit status 2; stderr:\n%s", strings.Join(tt.args, " "), err, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("fibmesh-controller %s: stderr\n%s\nwant it to say %q", strings.Join(tt.args, " "), stderr.String(), tt.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "ca")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused command line created the CA directory (stat: %v)", err)
	}
}

// TestServeErrors: a server that cannot serve stops the controller with
// exit status 1 and a log line that names it, instead of running on
// without it.
func TestServeErrors(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config")
	copyDir(t, "../../controller/testdata/cluster", cfg)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct {
		name string
		flag string
		want string
	}{
		{"monitoring", "--monitoring-listen", "monitoring listener"},
		{"xds", "--xds-listen", "xds listener"},
		{"xds TLS", "--xds-tls-listen", "xds TLS listener"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			args := []string{"--config-dir", cfg, "--ca-dir", filepath.Join(dir, "ca"),
				"--xds-listen", freeAddr(t), "--xds-tls-listen", freeAddr(t), "--monitoring-listen", freeAddr(t),
				tc.flag, busy.Addr().String()} // the last one wins
			cmd := exec.CommandContext(ctx, bin, args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Errorf("with %s on a busy port: %v, want exit status 1; stderr:\n%s", tc.flag, err, stderr.String())
			}
			if !strings.Contains(stderr.String(), "controller failed") || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("with %s on a busy port, stderr\n%s\nwant a \"controller failed\" line naming the %s", tc.flag, stderr.String(), tc.want)
			}
		})
	}
}
