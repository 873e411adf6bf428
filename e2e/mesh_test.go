package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/kubelet"
)

// shop is a small application as a team would write it: no node names on
// the Deployment, no IPs, no ClusterIP, no EndpointSlices; one pod
// pinned to each node to send traffic between, and STRICT mTLS for the
// web pods only (their port is then enforced in XDP).
var shop = map[string]string{
	"namespace.yaml": `apiVersion: v1
kind: Namespace
metadata:
  name: shop
`,
	"web.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web, version: v1}
    spec:
      containers:
      - name: web
        command: [fibmesh-lab, app, echo, --port, "8080"]
        env:
        - {name: SERVICE_NAME, value: web}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: web-strict
  namespace: shop
spec:
  selector:
    matchLabels: {app: web}
  mtls: {mode: STRICT}
`,
	// left and right are outside the mesh (not captured): their
	// plaintext is forwarded by the XDP FIB alone, which is what this
	// test is about (TestSlowPath covers captured pods).
	"peers.yaml": `apiVersion: v1
kind: Pod
metadata:
  name: left
  namespace: shop
  labels: {app: peer, fibmesh.io/capture: disabled}
spec:
  nodeName: node1
  containers:
  - name: echo
    command: [fibmesh-lab, app, echo, --port, "9000"]
---
apiVersion: v1
kind: Pod
metadata:
  name: right
  namespace: shop
  labels: {app: peer, fibmesh.io/capture: disabled}
spec:
  nodeName: node2
  containers:
  - name: echo
    command: [fibmesh-lab, app, echo, --port, "9000"]
`,
}

func extraPod(name, node string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: shop
  labels: {app: extra}
spec:
  nodeName: %s
  containers:
  - name: echo
    command: [fibmesh-lab, app, echo, --port, "9000"]
`, name, node)
}

// wantFIB is what a node's FIB must hold for the controller's tables:
// route prefix → the interface it leaves by, and the policy entries.
type wantFIB struct {
	routes map[netip.Prefix]string // prefix → interface name in the node
	policy map[string]string       // "proto ip:port" → mode
}

func expected(t *testing.T, l *meshLab, node string, tables map[string]*fibv1.FlowTable) wantFIB {
	t.Helper()
	w := wantFIB{routes: map[netip.Prefix]string{}, policy: map[string]string{}}
	for _, r := range tables["mesh"].GetRoutes() {
		if r.Node == node {
			continue
		}
		w.routes[netip.MustParsePrefix(r.Prefix)] = "eth0"
	}
	for _, p := range tables[node].GetLocalPods() {
		w.routes[netip.PrefixFrom(netip.MustParseAddr(p.Ip), 32)] = l.pod(t, p.Namespace, p.Name).HostVeth
	}
	for _, pp := range tables[node].GetPortPolicies() {
		w.policy[fmt.Sprintf("%s %s:%d", strings.ToLower(pp.Protocol.String()), pp.Ip, pp.Port)] = pp.Mode.String()
	}
	return w
}

func actual(t *testing.T, l *meshLab, f *fib.FIB, node string) wantFIB {
	t.Helper()
	names := map[int]string{}
	err := lab.InNetns(l.nodeNetns(node), func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			names[i.Index] = i.Name
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	g := wantFIB{routes: map[netip.Prefix]string{}, policy: map[string]string{}}
	rs, err := f.Routes.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		g.routes[r.Prefix] = names[r.NextHop.Ifindex]
	}
	ps, err := f.Policy.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		g.policy[p.Key.String()] = p.Mode.String()
	}
	return g
}

func diffFIB(want, got wantFIB) string {
	return cmp.Diff(want, got, cmp.AllowUnexported(wantFIB{}))
}

// flow is a TCP connection from one pod to another pod's echo server,
// used to prove that traffic keeps flowing.
type flow struct {
	c   net.Conn
	buf []byte
}

func dialFromPod(t *testing.T, l *meshLab, from, to string, port int) *flow {
	t.Helper()
	src, dst := l.pod(t, "shop", from), l.pod(t, "shop", to)
	var c net.Conn
	err := lab.InNetns(src.Netns, func() (err error) {
		c, err = net.DialTimeout("tcp", net.JoinHostPort(dst.IP, fmt.Sprint(port)), 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("connect %s → %s:%d: %v", from, dst.IP, port, err)
	}
	t.Cleanup(func() { c.Close() })
	return &flow{c: c, buf: make([]byte, 64)}
}

// roundTrip sends a message that is not HTTP (so the echo app echoes
// it) and reads it back.
func (f *flow) roundTrip(i int) error {
	msg := []byte(fmt.Sprintf("~ping %08d ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~\n", i))
	f.c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := f.c.Write(msg); err != nil {
		return err
	}
	got := f.buf[:len(msg)]
	if _, err := io.ReadFull(f.c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// keepPinging does round trips on f every 2 ms until stop is called,
// which returns how many succeeded and the first error.
func (f *flow) keepPinging() (stop func() (int, error)) {
	done := make(chan struct{})
	var n int
	var first error
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for i := 1; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			if err := f.roundTrip(i); err != nil {
				first = fmt.Errorf("round trip %d: %w", i, err)
				return
			}
			n++
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return func() (int, error) {
		close(done)
		<-finished
		return n, first
	}
}

// mapWrites is node's agent's count of FIB map writes.
func mapWrites(t *testing.T, l *meshLab, node string) float64 {
	return l.agentMetric(t, node, "fibmesh_agent_fib_map_writes_total")
}

func TestMesh(t *testing.T) {
	l := upMesh(t, "fm-e2e-", shop, "--backoff-base", "1s")
	nodes := []string{"node1", "node2"}
	fibs := map[string]*fib.FIB{}
	for _, n := range nodes {
		fibs[n] = l.fib(t, n)
	}
	// converged waits until each node's FIB equals the controller's tables.
	converged := func(t *testing.T) {
		t.Helper()
		testenv.Eventually(t, 10*time.Second, "FIBs equal the controller's flow tables", func() error {
			tables := l.tables(t, nodes...)
			for _, n := range nodes {
				if d := diffFIB(expected(t, l, n, tables), actual(t, l, fibs[n], n)); d != "" {
					return fmt.Errorf("%s (-controller +FIB):\n%s", n, d)
				}
			}
			return nil
		})
	}

	t.Run("FIBsEqualFDS", func(t *testing.T) {
		converged(t)
		tables := l.tables(t, nodes...)
		// Not vacuous: every pod has a host route, STRICT reached the policy map.
		for _, n := range nodes {
			w := expected(t, l, n, tables)
			if len(w.routes) < 5 { // 4 pods, the other node's CIDR
				t.Errorf("%s: only %d routes expected: %v", n, len(w.routes), w.routes)
			}
		}
		strict := 0
		for _, n := range nodes {
			for _, m := range expected(t, l, n, tables).policy {
				if m == "STRICT" {
					strict++
				}
			}
		}
		if strict != 2 {
			t.Errorf("%d STRICT policy entries across nodes, want 2 (the web pods' port 8080)", strict)
		}
	})

	t.Run("Propagation", func(t *testing.T) {
		before := mapWrites(t, l, "node1")
		l.write(t, "extra.yaml", extraPod("extra", "node2"))
		start := time.Now()
		var ip netip.Addr
		took := testenv.Eventually(t, 10*time.Second, "the new pod's route in node1's FIB", func() error {
			for _, p := range l.status(t).Pods {
				if p.Name == "extra" && p.IP != "" {
					ip = netip.MustParseAddr(p.IP)
				}
			}
			if !ip.IsValid() {
				return errors.New("the lab has not allocated its IP yet")
			}
			r, ok, err := fibs["node1"].Routes.Lookup(ip)
			if err != nil || !ok || r.Prefix.Bits() != 32 {
				return fmt.Errorf("lookup %s: %v %v %v", ip, r, ok, err)
			}
			return nil
		})
		_ = start
		t.Logf("pod added to the directory → /32 route in the remote node's FIB: %s (make bench-fds measures this)", took.Round(time.Millisecond))
		converged(t)
		if after := mapWrites(t, l, "node1"); after <= before {
			t.Errorf("node1's map writes %v → %v: the route was not written", before, after)
		}

		l.remove(t, "extra.yaml")
		testenv.Eventually(t, 10*time.Second, "the removed pod's route gone from node1's FIB", func() error {
			rs, err := fibs["node1"].Routes.List()
			if err != nil {
				return err
			}
			if slices.ContainsFunc(rs, func(r fib.Route) bool { return r.Prefix == netip.PrefixFrom(ip, 32) }) {
				return fmt.Errorf("%s/32 still there", ip)
			}
			return nil
		})
		converged(t)
	})

	t.Run("ControllerKilled", func(t *testing.T) {
		converged(t)
		f := dialFromPod(t, l, "left", "right", 9000)
		if err := f.roundTrip(0); err != nil {
			t.Fatalf("cross-node TCP before: %v", err)
		}
		writes := map[string]float64{}
		routes := map[string][]fib.Route{}
		for _, n := range nodes {
			writes[n] = mapWrites(t, l, n)
			rs, _ := fibs[n].Routes.List()
			routes[n] = rs
		}
		versionBefore := fdsVersion(t, l)
		ctrl := l.process(t, "controller")
		if err := syscall.Kill(ctrl.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// Traffic flows while the controller is gone, restarting (the
		// lab restarts it) and while the agents reconnect.
		stop := f.keepPinging()
		testenv.Eventually(t, 20*time.Second, "the lab restarted the controller", func() error {
			if p := l.process(t, "controller"); p.PID == ctrl.PID || p.State != "Running" {
				return fmt.Errorf("controller: %s pid %d", p.State, p.PID)
			}
			return nil
		})
		// Agents reconnect and converge; the version moves forward.
		testenv.Eventually(t, 30*time.Second, "agents reconnected to the new controller, FDS acked", func() error {
			st, err := l.tryControllerStatus()
			if err != nil {
				return err
			}
			synced := 0
			for _, ns := range st {
				if !slices.Contains(nodes, ns.Node) || ns.Streams != 1 {
					continue
				}
				for _, ty := range ns.Types {
					if strings.HasSuffix(ty.TypeURL, "FlowTable") && ty.Acked != "" && ty.Acked == ty.Sent {
						synced++
					}
				}
			}
			if synced != len(nodes) {
				return fmt.Errorf("%d of %d agents have acked FDS: %+v", synced, len(nodes), st)
			}
			return nil
		})
		// The controller stamps a stream when it first answers it, which it
		// does for every waiting agent at its first push: the spread of
		// the agents' attempts is the agent's backoff (TestBackoffFullJitter).
		var since []time.Time
		for _, ns := range l.controllerStatus(t) {
			if slices.Contains(nodes, ns.Node) {
				since = append(since, ns.ConnectedSince)
			}
		}
		sort.Slice(since, func(i, j int) bool { return since[i].Before(since[j]) })
		t.Logf("agents' streams answered %s apart", since[len(since)-1].Sub(since[0]).Round(time.Millisecond))
		if v := fdsVersion(t, l); !before(versionBefore, v) {
			t.Errorf("FDS version %v after the restart, %v before: want it to move forward", v, versionBefore)
		}
		converged(t)
		if n, err := stop(); err != nil || n < 20 {
			t.Errorf("cross-node TCP while the controller was killed, restarted and the agents reconnected: %d round trips, then %v", n, err)
		} else {
			t.Logf("%d cross-node round trips while the controller was killed, restarted and the agents reconnected", n)
		}
		for _, n := range nodes {
			if w := mapWrites(t, l, n); w != writes[n] {
				t.Errorf("%s: %v map writes across the controller restart (%v → %v): routes flapped", n, w-writes[n], writes[n], w)
			}
			rs, _ := fibs[n].Routes.List()
			if d := cmp.Diff(routes[n], rs, cmpopts.EquateComparable(netip.Prefix{})); d != "" {
				t.Errorf("%s's routes changed across the controller restart:\n%s", n, d)
			}
		}
	})

	t.Run("AgentKilled", func(t *testing.T) {
		converged(t)
		f := dialFromPod(t, l, "left", "right", 9000)
		counters := map[string]lab.ForwardCounters{}
		for _, n := range nodes {
			c, err := lab.Counters(l.nodeNetns(n))
			if err != nil {
				t.Fatal(err)
			}
			counters[n] = c
		}
		agent := l.process(t, "agent-node1")
		if err := syscall.Kill(agent.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		stop := f.keepPinging()
		testenv.Eventually(t, 20*time.Second, "the lab restarted node1's agent", func() error {
			if p := l.process(t, "agent-node1"); p.PID == agent.PID || p.State != "Running" {
				return fmt.Errorf("agent-node1: %s pid %d", p.State, p.PID)
			}
			return nil
		})
		l.agentReady(t, "node1", 20*time.Second)
		if n, err := stop(); err != nil || n < 20 {
			t.Fatalf("cross-node TCP while node1's agent was killed and restarted: %d round trips, then %v", n, err)
		} else {
			t.Logf("%d cross-node round trips while node1's agent was killed and restarted", n)
		}
		for i := range 20 {
			if err := f.roundTrip(10000 + i); err != nil {
				t.Fatalf("cross-node TCP after the agent restarted: %v", err)
			}
		}
		for _, n := range nodes {
			c, err := lab.Counters(l.nodeNetns(n))
			if err != nil {
				t.Fatal(err)
			}
			if d := c.ForwDatagrams - counters[n].ForwDatagrams; d != 0 {
				t.Errorf("%s's kernel forwarded %d packets: the XDP FIB stopped forwarding while the agent restarted", n, d)
			}
		}
		// The new agent read its pinned FIB back: nothing to write.
		if w := mapWrites(t, l, "node1"); w != 0 {
			t.Errorf("the restarted agent wrote %v map entries: it did not start from its pinned FIB", w)
		}
		converged(t)
	})
}

// fdsVersion is the FDS version node1 last acked, as the controller
// reports it ("FDS-<epoch>.<n>"), as a pair that orders like the versions.
func fdsVersion(t *testing.T, l *meshLab) [2]uint64 {
	t.Helper()
	for _, ns := range l.controllerStatus(t) {
		if ns.Node != "node1" {
			continue
		}
		for _, ty := range ns.Types {
			if strings.HasSuffix(ty.TypeURL, "FlowTable") {
				var v [2]uint64
				if _, err := fmt.Sscanf(ty.Acked, "FDS-%d.%d", &v[0], &v[1]); err != nil {
					t.Fatalf("FDS version %q: want FDS-<epoch>.<n>: %v", ty.Acked, err)
				}
				return v
			}
		}
	}
	t.Fatal("node1 has no FDS status at the controller")
	return [2]uint64{}
}

func before(a, b [2]uint64) bool { return a[0] < b[0] || a[0] == b[0] && a[1] < b[1] }

// TestWrongToken starts an agent whose token the controller refuses: it
// says so in its log and keeps retrying (no crash, no restarts, not
// ready), the FIB keeps forwarding, and once the token file is fixed it
// connects without a restart (the file is re-read for every attempt).
func TestWrongToken(t *testing.T) {
	l := upMesh(t, "fm-e2t-", shop, "--backoff-base", "1s")
	tokenFile := filepath.Join(l.state, "token-node1")
	good, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte("not-the-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := dialFromPod(t, l, "left", "right", 9000)
	agent := l.process(t, "agent-node1")
	if err := syscall.Kill(agent.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var restarted kubelet.ProcStatus
	testenv.Eventually(t, 20*time.Second, "the lab restarted node1's agent", func() error {
		restarted = l.process(t, "agent-node1")
		if restarted.PID == agent.PID || restarted.State != "Running" {
			return fmt.Errorf("agent-node1: %s pid %d", restarted.State, restarted.PID)
		}
		return nil
	})
	logFile := filepath.Join(l.state, "agent-node1.log")
	testenv.Eventually(t, 10*time.Second, "the agent's log says the controller refused its token", func() error {
		b, err := os.ReadFile(logFile)
		if err != nil {
			return err
		}
		if !bytes.Contains(b, []byte("reason=refused")) || !bytes.Contains(b, []byte("--token-file")) {
			return errors.New("no line with reason=refused and the --token-file hint yet")
		}
		return nil
	})
	c := kubelet.NetnsHTTPClient(l.nodeNetns("node1"), time.Second)
	resp, err := c.Get("http://" + kubelet.AgentAdmin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz with a refused token: %s %s, want 503", resp.Status, body)
	}
	for i := range 20 {
		if err := f.roundTrip(i); err != nil {
			t.Fatalf("cross-node TCP while node1's agent cannot reach the controller: %v", err)
		}
	}
	if err := os.WriteFile(tokenFile, good, 0o600); err != nil {
		t.Fatal(err)
	}
	l.agentReady(t, "node1", 60*time.Second)
	if p := l.process(t, "agent-node1"); p.PID != restarted.PID {
		t.Errorf("the agent restarted (pid %d → %d): a refused token must be retried, not crash the agent", restarted.PID, p.PID)
	}
}
