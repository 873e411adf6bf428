package e2e

import (
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/cluster"
)

// The lab scenarios built on TCP echo apps (the slow path, the offload
// and the dashboards tests) write their pods, services and accounts
// with these helpers, start the lab with upMeshReady and wait for their
// first echo through the mesh with waitEcho.

// echoPod is a pod running the lab's echo app (fibmesh-lab app echo),
// or a Deployment of one such pod.
type echoPod struct {
	namespace, name string
	// node is the node the pod runs on; serviceAccount its account (""
	// for the namespace's default).
	node, serviceAccount string
	// labels are the pod's labels besides app (its name).
	labels map[string]string
	// port is the echo app's port; ready adds a TCP readiness probe on
	// it (a Service's endpoint is ready once it answers).
	port  int
	ready bool
	// deployment makes it a Deployment of one replica (the pod's name is
	// then name-<hash>).
	deployment bool
}

// yaml is p's manifest.
func (p echoPod) yaml() string {
	labels := map[string]string{"app": p.name}
	maps.Copy(labels, p.labels)
	var lb []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		lb = append(lb, k+": "+labels[k])
	}
	labelMap := "{" + strings.Join(lb, ", ") + "}"
	var spec strings.Builder
	fmt.Fprintf(&spec, "spec:\n  nodeName: %s\n", p.node)
	if p.serviceAccount != "" {
		fmt.Fprintf(&spec, "  serviceAccountName: %s\n", p.serviceAccount)
	}
	fmt.Fprintf(&spec, "  containers:\n  - name: echo\n    command: [fibmesh-lab, app, echo, --port, \"%d\"]\n", p.port)
	if p.ready {
		fmt.Fprintf(&spec, "    readinessProbe:\n      tcpSocket: {port: %d}\n      periodSeconds: 1\n", p.port)
	}
	if !p.deployment {
		return fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\n  labels: %s\n%s",
			p.name, p.namespace, labelMap, spec.String())
	}
	template := "    " + strings.ReplaceAll(strings.TrimSuffix(spec.String(), "\n"), "\n", "\n    ") + "\n"
	return fmt.Sprintf("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: %s\n  namespace: %s\n  labels: %s\nspec:\n"+
		"  replicas: 1\n  selector:\n    matchLabels: {app: %s}\n  template:\n    metadata:\n      labels: %s\n%s",
		p.name, p.namespace, labelMap, p.name, labelMap, template)
}

// echoService is a Service of TCP ports selecting the pods of app.
type echoService struct {
	namespace, name, app string
	// clusterIP is the Service's VIP ("": the lab picks one).
	clusterIP string
	// ports are "name:port" (the target port is the same).
	ports []string
}

// yaml is s's manifest.
func (s echoService) yaml() string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n", s.name, s.namespace)
	if s.clusterIP != "" {
		fmt.Fprintf(&b, "  clusterIP: %s\n", s.clusterIP)
	}
	fmt.Fprintf(&b, "  selector: {app: %s}\n  ports:\n", s.app)
	for _, p := range s.ports {
		name, port, _ := strings.Cut(p, ":")
		fmt.Fprintf(&b, "  - {name: %s, port: %s, targetPort: %s}\n", name, port, port)
	}
	return b.String()
}

// manifests joins manifests into one multi-document YAML file.
func manifests(docs ...string) string { return strings.Join(docs, "---\n") }

// serviceAccounts are the ServiceAccounts names in ns.
func serviceAccounts(ns string, names ...string) string {
	docs := make([]string, len(names))
	for i, n := range names {
		docs[i] = fmt.Sprintf("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: %s, namespace: %s}\n", n, ns)
	}
	return manifests(docs...)
}

// upMeshReady is upMesh, then agentsReady.
func upMeshReady(t *testing.T, prefix string, m map[string]string, ready time.Duration, extra ...string) (*meshLab, []*lab.Node) {
	t.Helper()
	l := upMesh(t, prefix, m, extra...)
	return l, l.agentsReady(t, ready)
}

// agentsReady waits (up to ready) for every node's agent to be ready and
// returns the lab's nodes.
func (l *meshLab) agentsReady(t *testing.T, ready time.Duration) []*lab.Node {
	t.Helper()
	st, err := lab.Load(l.state)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		l.agentReady(t, n.Name, ready)
	}
	return st.Nodes
}

// echoFrom connects from pod ns/pod's network namespace to addr, as its
// app would (so its capture applies), sends msg and wants it echoed
// back, all within timeout.
func (l *meshLab) echoFrom(t *testing.T, ns, pod string, addr netip.AddrPort, msg string, timeout time.Duration) error {
	t.Helper()
	p := l.pod(t, ns, pod)
	return lab.InNetns(p.Netns, func() error {
		c, err := net.DialTimeout("tcp", addr.String(), timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		return echoOn(c, msg, timeout)
	})
}

// echoOn sends msg on c, a connection to the echo app, and wants it
// back within timeout.
func echoOn(c net.Conn, msg string, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// waitEcho waits (up to timeout) until pod ns/pod reaches addr through
// the mesh: a line echoed back on a new connection (the lab reports pods
// Running once their processes are, before enrolment and listeners
// settle).
func (l *meshLab) waitEcho(t *testing.T, ns, pod string, addr netip.AddrPort, timeout time.Duration) {
	t.Helper()
	testenv.Eventually(t, timeout, fmt.Sprintf("%s/%s → %s echo through the mesh", ns, pod, addr), func() error {
		return l.echoFrom(t, ns, pod, addr, "~ping "+ns+"/"+pod+"\n", 2*time.Second)
	})
}

// TestEchoManifests loads the helpers' manifests as fibmesh-lab does
// (lab/cluster: strict decoding, Deployments expanded into pods) and
// checks what the lab will run (it needs no lab).
func TestEchoManifests(t *testing.T) {
	dir := t.TempDir()
	docs := manifests(
		serviceAccounts("bank", "vault", "teller"),
		echoPod{namespace: "bank", name: "vault", node: "node2", serviceAccount: "vault", port: 9000, ready: true}.yaml(),
		echoPod{namespace: "bank", name: "outsider", node: "node1", labels: map[string]string{"fibmesh.io/capture": "disabled"}, port: 8080}.yaml(),
		echoPod{namespace: "bank", name: "teller", node: "node1", serviceAccount: "teller", labels: map[string]string{"version": "v1"},
			port: 9001, ready: true, deployment: true}.yaml(),
		echoService{namespace: "bank", name: "vault", app: "vault", clusterIP: "10.96.90.9", ports: []string{"tcp-vault:9000", "tcp-admin:9100"}}.yaml(),
		echoService{namespace: "bank", name: "teller", app: "teller", ports: []string{"tcp:9001"}}.yaml(),
	)
	if err := os.WriteFile(filepath.Join(dir, "m.yaml"), []byte(docs), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := cluster.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Errors) > 0 {
		t.Fatalf("the lab refuses the manifests: %v\n%s", m.Errors, docs)
	}
	// A pod as the lab will run it: "ns/name node account labels port ready".
	var pods []string
	for _, p := range m.Pods {
		name := p.Name
		if strings.HasPrefix(name, "teller-") {
			name = "teller-<hash>"
		}
		c := p.Spec.Containers[0]
		// Ready: a TCP probe of the echo app's port.
		ready := c.ReadinessProbe != nil && c.ReadinessProbe.TCPSocket != nil && c.ReadinessProbe.TCPSocket.Port.String() == c.Command[len(c.Command)-1]
		labels := make([]string, 0, len(p.Labels))
		for _, k := range slices.Sorted(maps.Keys(p.Labels)) {
			if k != "pod-template-hash" {
				labels = append(labels, k+"="+p.Labels[k])
			}
		}
		pods = append(pods, fmt.Sprintf("%s/%s %s %q %s %s ready=%v", p.Namespace, name, p.Spec.NodeName, p.Spec.ServiceAccountName,
			strings.Join(labels, ","), strings.Join(c.Command, " "), ready))
	}
	want := []string{
		`bank/outsider node1 "" app=outsider,fibmesh.io/capture=disabled fibmesh-lab app echo --port 8080 ready=false`,
		`bank/teller-<hash> node1 "teller" app=teller,version=v1 fibmesh-lab app echo --port 9001 ready=true`,
		`bank/vault node2 "vault" app=vault fibmesh-lab app echo --port 9000 ready=true`,
	}
	if diff := cmp.Diff(want, pods); diff != "" {
		t.Errorf("pods (-want +got):\n%s", diff)
	}
	var svcs []string
	for _, s := range m.Services {
		var ports []string
		for _, p := range s.Spec.Ports {
			ports = append(ports, fmt.Sprintf("%s:%d>%s", p.Name, p.Port, p.TargetPort.String()))
		}
		svcs = append(svcs, fmt.Sprintf("%s/%s %q app=%s %s", s.Namespace, s.Name, s.Spec.ClusterIP, s.Spec.Selector["app"], strings.Join(ports, " ")))
	}
	wantSvcs := []string{`bank/teller "" app=teller tcp:9001>9001`, `bank/vault "10.96.90.9" app=vault tcp-vault:9000>9000 tcp-admin:9100>9100`}
	if diff := cmp.Diff(wantSvcs, svcs); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
	var accounts []string
	for _, d := range m.Others {
		if d.Kind == "ServiceAccount" {
			accounts = append(accounts, d.Namespace+"/"+d.Name)
		}
	}
	if diff := cmp.Diff([]string{"bank/teller", "bank/vault"}, accounts, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("service accounts (-want +got):\n%s", diff)
	}
}
