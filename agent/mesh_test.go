package agent_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/agent/svid"
	cav1 "github.com/fibmesh/fibmesh/api/ca/v1"
	"github.com/fibmesh/fibmesh/api/enrol"
	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/controller/ca"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/lab"
)

// fibRoutes reads n's route map as "prefix ifname dstMAC" lines.
func fibRoutes(t *testing.T, n *lab.Node) []string {
	t.Helper()
	f, err := fib.OpenPinned(pinDir(n))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rs, err := f.Routes.List()
	if err != nil {
		t.Fatal(err)
	}
	names := map[int]string{}
	lab.InNetns(n.Netns, func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			names[i.Index] = i.Name
		}
		return err
	})
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s %s %s", r.Prefix, names[r.NextHop.Ifindex], r.NextHop.DstMAC))
	}
	return out
}

// wantRoutes is what n's FIB must hold for the lab's model: other nodes'
// pod CIDRs and pods via the NIC to that node's MAC, its own pods via
// their veths to their MACs.
func wantRoutes(l *lab.Lab, n *lab.Node, extra ...string) []string {
	var out []string
	for _, o := range l.Nodes {
		for _, p := range o.Pods {
			if o == n {
				out = append(out, fmt.Sprintf("%s/32 %s %s", p.IP, p.HostVeth, p.MAC))
			} else {
				out = append(out, fmt.Sprintf("%s/32 %s %s", p.IP, n.NIC, o.MAC))
			}
		}
		if o != n {
			out = append(out, fmt.Sprintf("%s %s %s", o.PodCIDR, n.NIC, o.MAC))
		}
	}
	out = append(out, extra...)
	sortRoutes(out)
	return out
}

func sortRoutes(rs []string) {
	key := func(s string) netip.Prefix { return netip.MustParsePrefix(strings.Fields(s)[0]) }
	for i := range rs {
		for j := i + 1; j < len(rs); j++ {
			a, b := key(rs[i]), key(rs[j])
			if c := b.Addr().Compare(a.Addr()); c < 0 || c == 0 && b.Bits() < a.Bits() {
				rs[i], rs[j] = rs[j], rs[i]
			}
		}
	}
}

func writes(t *testing.T, n *lab.Node) admin.Writes {
	t.Helper()
	var f admin.FIB
	adminJSON(t, n, "/fib", &f)
	return f.Writes
}

// The maps hold exactly what the controller's tables say; a pod added
// and removed in the model reaches the other node's FIB with one write
// each.
func TestFIBEqualsTables(t *testing.T) {
	e := setup(t)
	for _, n := range e.nodes {
		if d := cmp.Diff(wantRoutes(e.lab, n), fibRoutes(t, n)); d != "" {
			t.Errorf("%s routes (-want +got):\n%s", n.Name, d)
		}
	}
	before := writes(t, e.nodes[0])
	// A new pod on node2 (its IP outside node2's CIDR: a /32 of its own).
	start := time.Now()
	e.ctl.update(t, func(m *model.Model) {
		m.Workloads = append(m.Workloads, &model.Workload{Namespace: "default", Name: "extra", IP: "10.201.0.5", Node: "node2",
			ServiceAccount: "extra", Identity: "spiffe://cluster.local/ns/default/sa/extra"})
	})
	want := wantRoutes(e.lab, e.nodes[0], fmt.Sprintf("10.201.0.5/32 %s %s", e.nodes[0].NIC, e.nodes[1].MAC))
	testenv.Until(t, 5*time.Second, "condition", func() bool { return cmp.Equal(want, fibRoutes(t, e.nodes[0])) })
	t.Logf("pod added: in node1's FIB %s after the model update", time.Since(start).Round(time.Millisecond))
	e.ctl.update(t, nil)
	testenv.Until(t, 5*time.Second, "condition", func() bool { return cmp.Equal(wantRoutes(e.lab, e.nodes[0]), fibRoutes(t, e.nodes[0])) })
	after := writes(t, e.nodes[0])
	if d := (admin.Writes{RoutePuts: after.RoutePuts - before.RoutePuts, RouteDeletes: after.RouteDeletes - before.RouteDeletes}); d != (admin.Writes{RoutePuts: 1, RouteDeletes: 1}) {
		t.Errorf("node1 map writes for one pod added and removed: %+v, want one put and one delete", d)
	}
	// The admin API says what the agent accepted.
	var dump admin.ConfigDump
	adminJSON(t, e.nodes[0], "/config_dump?type=FDS", &dump)
	if len(dump.Configs) != 1 || dump.Configs[0].VersionInfo == "" || len(dump.Configs[0].Resources) != len(xdsapi.MeshShardNames())+1 { // the shared table's shards and the node's
		t.Errorf("config_dump FDS: %+v", dump)
	}
	adminJSON(t, e.nodes[0], "/config_dump?type=SDS", &dump)
	if len(dump.Configs) != 1 || len(dump.Configs[0].Resources) != 1 || dump.Configs[0].Resources[0].Name != xdsapi.RootCASecret {
		t.Errorf("config_dump SDS: %+v, want the trust bundle", dump)
	}
}

// A table the agent cannot apply is NACKed with the reason, the last
// good one stays programmed, and the controller shows the NACK.
func TestBadFlowTableIsNACKed(t *testing.T) {
	e := setup(t)
	good := fibRoutes(t, e.nodes[0])
	before := writes(t, e.nodes[0])
	e.ctl.update(t, func(m *model.Model) { workload(m, "node1-pod2").IP = "10.200.1.999" })
	var nack string
	testenv.Until(t, 5*time.Second, "condition", func() bool {
		st := e.ctl.status("node1")
		for _, ts := range st.Types {
			if ts.TypeURL == xdsapi.FlowTableType && ts.NACK != nil {
				nack = ts.NACK.Reason
				return true
			}
		}
		return false
	})
	if want := `flow table "node1": local_pods[1] (default/node1-pod2).ip "10.200.1.999"`; !strings.Contains(nack, want) {
		t.Errorf("NACK reason %q does not say %q", nack, want)
	}
	if d := cmp.Diff(good, fibRoutes(t, e.nodes[0])); d != "" {
		t.Errorf("a refused table changed the FIB (-before +after):\n%s", d)
	}
	if w := writes(t, e.nodes[0]); w != before {
		t.Errorf("map writes %+v -> %+v for a refused table", before, w)
	}
	var dump admin.ConfigDump
	adminJSON(t, e.nodes[0], "/config_dump?type=FDS", &dump)
	if es := dump.Configs[0].ErrorState; es == nil || !strings.Contains(es.Details, "10.200.1.999") {
		t.Errorf("config_dump error_state: %+v", es)
	}
	// node2 accepted its version (the bad pod is not in its tables).
	for _, ts := range e.ctl.status("node2").Types {
		if ts.NACK != nil {
			t.Errorf("node2 NACKed %s: %s", ts.TypeURL, ts.NACK.Reason)
		}
	}
	// Fixed: accepted again.
	e.ctl.update(t, nil)
	testenv.Until(t, 5*time.Second, "condition", func() bool {
		for _, ts := range e.ctl.status("node1").Types {
			if ts.TypeURL == xdsapi.FlowTableType {
				return ts.NACK == nil && ts.Synced()
			}
		}
		return false
	})
}

// Controller gone: the FIB keeps forwarding, untouched; controller back:
// the agents reconnect, converge and write nothing (no flaps).
func TestControllerRestart(t *testing.T) {
	e := setup(t)
	before := [2]admin.Writes{writes(t, e.nodes[0]), writes(t, e.nodes[1])}
	routes := fibRoutes(t, e.nodes[0])
	e.ctl.stop()
	for _, a := range e.agents {
		testenv.Until(t, 5*time.Second, "condition", func() bool { return strings.Contains(a.log.String(), "controller connection failed") })
	}
	s0 := snap(t, e.nodes)
	udpExchange(t, e.podA, e.podB, 5400, 100)
	tcpEcho(t, e.podA, e.podB, 5401, 20)
	s1 := snap(t, e.nodes)
	for i := range 2 {
		if d := s1.fwd[i] - s0.fwd[i]; d != 0 {
			t.Errorf("%s: kernel forwarded %d packets with the controller down", e.nodes[i].Name, d)
		}
	}
	if code, _, _ := adminGet(e.nodes[0], "/readyz"); code != 200 {
		t.Errorf("/readyz %d with the controller down: the FIB is still programmed", code)
	}
	var logged [2]int
	for i, a := range e.agents {
		logged[i] = len(a.log.String())
	}
	e.ctl.start(t)
	for i, a := range e.agents {
		testenv.Until(t, 5*time.Second, "condition", func() bool { return strings.Contains(a.log.String()[logged[i]:], "msg=converged") })
	}
	if d := cmp.Diff(routes, fibRoutes(t, e.nodes[0])); d != "" {
		t.Errorf("routes changed across the controller restart:\n%s", d)
	}
	for i, n := range e.nodes {
		if w := writes(t, n); w != before[i] {
			t.Errorf("%s: map writes %+v -> %+v across the controller restart; want none (no flaps)", n.Name, before[i], w)
		}
		// Logged once per state change, not once per retry.
		if c := strings.Count(e.agents[i].log.String(), "controller connection failed"); c != 1 {
			t.Errorf("%s logged the lost controller %d times, want once", n.Name, c)
		}
	}
	code, body, err := metricsGet(e.nodes[0])
	if err != nil || code != 200 {
		t.Fatalf("metrics: %d %v", code, err)
	}
	for _, want := range []string{"fibmesh_agent_xds_connected 1", "fibmesh_agent_xds_reconnects_total 1", `fibmesh_agent_xds_updates_total{result="ack",type="FDS"}`,
		`fibmesh_agent_fib_packets_total{reason="redirect"}`, "fibmesh_agent_fib_routes 5", `fibmesh_agent_fib_map_writes_total{map="routes",op="put"} 5`, "fibmesh_agent_ready 1"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// metricsGet GETs /metrics from n's agent (:15090 in n's netns).
func metricsGet(n *lab.Node) (int, string, error) {
	return nsGet(n, "http://127.0.0.1:15090/metrics")
}

// Enrolment: a local pod is enrolled with an SVID that rotates without a
// gap; another node's pod is refused, at the socket and at the CA.
func TestEnrolmentAndSVIDs(t *testing.T) {
	e := setup(t, "--svid-ttl", "4s", "--enrol-timeout", "2s")
	sock := enrol.SocketPath(e.runDir, "node1")
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %s: %v, %v", sock, fi.Mode(), err)
	}
	pod1, _ := e.lab.Pod("node1-pod1")
	pod3, _ := e.lab.Pod("node2-pod1")
	ctx := context.Background()
	resp, err := enrol.Call(ctx, sock, enrol.Request{Op: enrol.OpAdd, Namespace: "default", Name: pod1.Name, Netns: lab.NetnsPath(pod1.Netns)})
	if err != nil || resp.Identity != "spiffe://cluster.local/ns/default/sa/node1-pod1" || time.Until(resp.SVIDExpiry) > 5*time.Second {
		t.Fatalf("enrol %s: %+v, %v", pod1.Name, resp, err)
	}
	_, err = enrol.Call(ctx, sock, enrol.Request{Op: enrol.OpAdd, Namespace: "default", Name: pod3.Name, Netns: lab.NetnsPath(pod3.Netns)})
	if err == nil || !strings.Contains(err.Error(), "not in node node1's flow table") {
		t.Errorf("enrolling node2's pod on node1: %v", err)
	}

	// The CA refuses node1's token for node2's pod (over the agents' TLS).
	conn := dialController(t, e, e.nodes[0], "tok-node1")
	r, err := svid.NewRotator(svid.RotatorConfig{Client: cav1.NewCertificateServiceClient(conn), Namespace: "default", Pod: pod3.Name})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Fetch(ctx); status.Code(unwrap(err)) != codes.PermissionDenied {
		t.Errorf("node1's token, node2's pod: %v, want PermissionDenied", err)
	}

	// Rotation: sample /pods; the SVID in place is valid at every sample
	// and changes before the first one expires.
	var first *admin.SVIDInfo
	deadline := time.Now().Add(15 * time.Second)
	for {
		var pods []admin.PodInfo
		adminJSON(t, e.nodes[0], "/pods", &pods)
		now := time.Now()
		if len(pods) != 1 || pods[0].SVID == nil {
			t.Fatalf("/pods: %+v", pods)
		}
		s := pods[0].SVID
		if !now.Before(s.NotAfter) {
			t.Fatalf("at %s the pod's SVID (serial %s) had expired at %s: a gap", now, s.Serial, s.NotAfter)
		}
		if first == nil {
			first = s
			if pods[0].Netns != lab.NetnsPath(pod1.Netns) || pods[0].IP != pod1.IP.String() {
				t.Errorf("/pods: %+v", pods[0])
			}
		} else if s.Serial != first.Serial {
			if !s.IssuedAt.Before(first.NotAfter) {
				t.Errorf("re-issued at %s, after the first expired at %s", s.IssuedAt, first.NotAfter)
			}
			break
		}
		if now.After(deadline) {
			t.Fatal("the SVID was not re-issued")
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, body, _ := metricsGet(e.nodes[0])
	if !strings.Contains(body, "fibmesh_agent_svids 1") || !regexp.MustCompile(`fibmesh_agent_svid_expiry_seconds\{namespace="default",pod="node1-pod1"\} [0-9.e+]+`).MatchString(body) {
		t.Errorf("SVID metrics missing:\n%s", grep(body, "svid"))
	}

	// A restarted agent knows its enrolled pods again.
	e.agents[0].stop()
	e.agents[0] = startAgent(t, e, e.nodes[0], "--svid-ttl", "4s")
	testenv.Until(t, 5*time.Second, "condition", func() bool {
		var pods []admin.PodInfo
		adminJSON(t, e.nodes[0], "/pods", &pods)
		return len(pods) == 1 && pods[0].SVID != nil
	})
	if _, err := enrol.Call(ctx, sock, enrol.Request{Op: enrol.OpRemove, Namespace: "default", Name: pod1.Name}); err != nil {
		t.Fatal(err)
	}
	var pods []admin.PodInfo
	adminJSON(t, e.nodes[0], "/pods", &pods)
	if len(pods) != 0 {
		t.Errorf("/pods after remove: %+v", pods)
	}
}

// An unreachable controller or a certificate that does not verify at
// start-up: a clear log line, retries, no crash.
func TestStartupWithoutController(t *testing.T) {
	e := setup(t)
	e.agents[0].stop()
	badCA := filepath.Join(t.TempDir(), "other-ca.pem")
	other, err := ca.New("other.local")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, badCA, string(ca.EncodeCerts(other.Bundle())))
	for _, tt := range []struct {
		name string
		args []string
		log  string
	}{
		{"unreachable", []string{"--controller", lab.FabricControllerIP + ":15999"}, "reason=unreachable"},
		{"wrong CA", []string{"--controller-ca", badCA}, "reason=tls"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := launchAgent(t, e, e.nodes[0], tt.args...)
			testenv.Until(t, 5*time.Second, "condition", func() bool { return strings.Contains(p.log.String(), tt.log) })
			// Retrying: still running, not ready, the reason given.
			code, body, err := adminGet(e.nodes[0], "/readyz")
			if err != nil || code != 503 || !strings.Contains(body, "controller "+lab.FabricControllerIP) {
				t.Errorf("/readyz: %d %q %v", code, body, err)
			}
			select {
			case <-p.done:
				t.Fatalf("agent exited:\n%s", p.log)
			default:
			}
			p.stop()
			if c := strings.Count(p.log.String(), "controller connection failed"); c != 1 {
				t.Errorf("logged the failure %d times, want once:\n%s", c, p.log)
			}
		})
	}
	// A wrong token: the controller's xDS serves any agent (it holds no
	// secrets), its CA does not: enrolment is refused, saying why.
	t.Run("wrong token", func(t *testing.T) {
		tok := filepath.Join(t.TempDir(), "token")
		writeFile(t, tok, "not-a-token\n")
		p := startAgent(t, e, e.nodes[0], "--token-file", tok, "--enrol-timeout", "2s")
		pod, _ := e.lab.Pod("node1-pod1")
		_, err := enrol.Call(context.Background(), enrol.SocketPath(e.runDir, "node1"),
			enrol.Request{Op: enrol.OpAdd, Namespace: "default", Name: pod.Name, Netns: lab.NetnsPath(pod.Netns)})
		if err == nil || !strings.Contains(err.Error(), "Unauthenticated") {
			t.Errorf("enrol with a wrong token: %v", err)
		}
		testenv.Until(t, 5*time.Second, "condition", func() bool { return strings.Contains(p.log.String(), "the controller's CA refused the node") })
		p.stop()
	})
	// The FIB kept forwarding throughout on what it had.
	udpExchange(t, e.podA, e.podB, 5500, 10)
}

func unwrap(err error) error {
	for e := err; e != nil; {
		if _, ok := status.FromError(e); ok {
			return e
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	return err
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// dialController connects to the test controller from n's netns over
// TLS, as an agent does, with token.
func dialController(t *testing.T, e *env, n *lab.Node, token string) *grpc.ClientConn {
	t.Helper()
	pemBytes, err := os.ReadFile(e.ctl.rootFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemBytes)
	conn, err := grpc.NewClient(e.ctl.addr,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: lab.FabricControllerIP})),
		grpc.WithPerRPCCredentials(svid.Credentials(svid.StaticToken(token))),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var c net.Conn
			err := lab.InNetns(n.Netns, func() (err error) {
				var d net.Dialer
				c, err = d.DialContext(ctx, "tcp", addr)
				return err
			})
			return c, err
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
