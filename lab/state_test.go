package lab

import (
	"errors"
	"github.com/fibmesh/fibmesh/internal/yamldoc"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// cmpLab compares Labs: netip types are comparable but have unexported
// fields.
var cmpLab = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

func TestPlan(t *testing.T) {
	l := plan(Config{Nodes: 2, PodsPerNode: 2, Prefix: "fm-", StateDir: "/s"})
	n2, err := l.Node("node2")
	if err != nil {
		t.Fatal(err)
	}
	want := &Node{
		Name: "node2", Index: 2, Netns: "fm-node2", NIC: "eth0",
		IP:      netip.MustParseAddr("10.100.0.2"),
		MAC:     mustMAC("02:66:6d:00:02:00"),
		PodCIDR: netip.MustParsePrefix("10.200.2.0/24"),
		Pods: []*Pod{{
			Name: "node2-pod1", Namespace: "default", Labels: map[string]string{"app": "node2-pod1"}, Node: "node2", Netns: "fm-node2-pod1",
			HostVeth: "p1", IfName: "eth0", IP: netip.MustParseAddr("10.200.2.11"),
			MAC: mustMAC("02:66:6d:02:01:02"), HostMAC: mustMAC("02:66:6d:02:01:01"),
		}, {
			Name: "node2-pod2", Namespace: "default", Labels: map[string]string{"app": "node2-pod2"}, Node: "node2", Netns: "fm-node2-pod2",
			HostVeth: "p2", IfName: "eth0", IP: netip.MustParseAddr("10.200.2.12"),
			MAC: mustMAC("02:66:6d:02:02:02"), HostMAC: mustMAC("02:66:6d:02:02:01"),
		}},
	}
	if diff := cmp.Diff(want, n2, cmpLab); diff != "" {
		t.Errorf("node2 mismatch (-want +got):\n%s", diff)
	}
	if got := len(l.Pods()); got != 4 {
		t.Errorf("len(Pods()) = %d, want 4", got)
	}
	if _, err := l.Pod("node3-pod1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Pod(node3-pod1) error = %v, want ErrNotFound", err)
	}
	for name, want := range map[string]string{"fabric": "fm-fabric", "node1": "fm-node1", "node2-pod1": "fm-node2-pod1"} {
		if got, err := l.Netns(name); err != nil || got != want {
			t.Errorf("Netns(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func TestStateRoundTrip(t *testing.T) {
	for _, cfg := range []Config{
		{Nodes: 1, PodsPerNode: 1, Prefix: "fm-"},
		{Nodes: 2, PodsPerNode: 2, Prefix: "fm-tl-"},
		{Nodes: 9, PodsPerNode: 9, Prefix: "fm-abcdefghijklmnop"},
	} {
		t.Run(cfg.Prefix, func(t *testing.T) {
			cfg.StateDir = filepath.Join(t.TempDir(), "state")
			want := plan(cfg)
			if err := writeState(want); err != nil {
				t.Fatal(err)
			}
			got, err := Load(cfg.StateDir)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got, cmpLab); diff != "" {
				t.Errorf("Load mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStateKubernetesShape checks the field paths that Kubernetes tools
// and the controller's file store read.
func TestStateKubernetesShape(t *testing.T) {
	data, err := marshalState(plan(Config{Nodes: 2, PodsPerNode: 1, Prefix: "fm-", StateDir: "/s"}))
	if err != nil {
		t.Fatal(err)
	}
	docs := rawDocs(t, data)
	if len(docs) != 4 {
		t.Fatalf("%d documents, want 4 (2 nodes, 2 pods):\n%s", len(docs), data)
	}
	var node, pod map[string]any
	if err := yaml.Unmarshal(docs[1], &node); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(docs[3], &pod); err != nil {
		t.Fatal(err)
	}
	wantNode := map[string]any{
		"apiVersion": "v1",
		"kind":       "Node",
		"metadata": map[string]any{
			"name":   "node2",
			"labels": map[string]any{"kubernetes.io/hostname": "node2"},
			"annotations": map[string]any{
				"fibmesh.io/netns":      "fm-node2",
				"fibmesh.io/nic":        "eth0",
				"fibmesh.io/nic-mac":    "02:66:6d:00:02:00",
				"fibmesh.io/lab-prefix": "fm-",
				"fibmesh.io/lab-fabric": "fm-fabric",
			},
		},
		"spec":   map[string]any{"podCIDR": "10.200.2.0/24", "podCIDRs": []any{"10.200.2.0/24"}},
		"status": map[string]any{"addresses": []any{map[string]any{"type": "InternalIP", "address": "10.100.0.2"}}},
	}
	if diff := cmp.Diff(wantNode, node); diff != "" {
		t.Errorf("Node document mismatch (-want +got):\n%s", diff)
	}
	wantPod := map[string]any{
		"apiVersion": "v1",
		"kind":       "Pod",
		"metadata": map[string]any{
			"name":      "node2-pod1",
			"namespace": "default",
			"labels":    map[string]any{"app": "node2-pod1"},
			"annotations": map[string]any{
				"fibmesh.io/netns":         "fm-node2-pod1",
				"fibmesh.io/host-veth":     "p1",
				"fibmesh.io/host-veth-mac": "02:66:6d:02:01:01",
				"fibmesh.io/mac":           "02:66:6d:02:01:02",
				"fibmesh.io/ifname":        "eth0",
			},
		},
		"spec": map[string]any{
			"nodeName":   "node2",
			"containers": []any{map[string]any{"name": "app", "image": "registry.k8s.io/pause:3.10"}},
		},
		"status": map[string]any{
			"phase":  "Running",
			"podIP":  "10.200.2.11",
			"podIPs": []any{map[string]any{"ip": "10.200.2.11"}},
		},
	}
	if diff := cmp.Diff(wantPod, pod); diff != "" {
		t.Errorf("Pod document mismatch (-want +got):\n%s", diff)
	}
}

func TestLoadErrors(t *testing.T) {
	good, err := marshalState(plan(Config{Nodes: 2, PodsPerNode: 1, Prefix: "fm-", StateDir: "/s"}))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		data    string // "" means no file
		wantErr string
		wantIs  error
	}{
		{"no state", "", "no lab is up", ErrNoLab},
		{"empty", "# nothing\n", "no Node objects", nil},
		{"unknown field", strings.Replace(string(good), "podCIDR:", "podCIDRR: x\n  podCIDR:", 1), "field spec.podCIDRR: unknown field", nil},
		{"foreign kind", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n", `kind "Service", want v1 Node or v1 Pod`, nil},
		{"bad mac", strings.Replace(string(good), "02:66:6d:00:01:00", "zz", 1), "fibmesh.io/nic-mac", nil},
		{"pod without node", strings.Replace(string(good), "nodeName: node1", "nodeName: node7", 1), `spec.nodeName: node "node7"`, nil},
		{"uneven pods", strings.Replace(string(good), "nodeName: node2", "nodeName: node1", 1), "want the same count on every node", nil},
		{"bad prefix", strings.Replace(string(good), "fibmesh.io/lab-prefix: fm-", "fibmesh.io/lab-prefix: xx-", 1), "must start with", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.data != "" {
				if err := os.WriteFile(filepath.Join(dir, StateFile), []byte(tt.data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Load(dir)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Load() = %v, want error containing %q", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Load() = %v, want errors.Is %v", err, tt.wantIs)
			}
		})
	}
}

// TestStateDecodesAsCoreV1 proves that every field written is a real
// Kubernetes field: the documents decode strictly into core/v1 types, as
// the agent and the controller's file store read them.
func TestStateDecodesAsCoreV1(t *testing.T) {
	data, err := marshalState(plan(Config{Nodes: 2, PodsPerNode: 2, Prefix: "fm-", StateDir: "/s"}))
	if err != nil {
		t.Fatal(err)
	}
	docs := rawDocs(t, data)
	if len(docs) != 6 {
		t.Fatalf("%d documents, want 6", len(docs))
	}
	for i, doc := range docs[:2] {
		var n corev1.Node
		if err := yamldoc.UnmarshalStrict(doc, &n); err != nil {
			t.Fatalf("document %d as corev1.Node: %v", i+1, err)
		}
		if n.Kind != "Node" || n.Spec.PodCIDR == "" || len(n.Status.Addresses) != 1 || n.Status.Addresses[0].Type != corev1.NodeInternalIP {
			t.Errorf("document %d: unexpected Node %+v", i+1, n)
		}
	}
	for i, doc := range docs[2:] {
		var p corev1.Pod
		if err := yamldoc.UnmarshalStrict(doc, &p); err != nil {
			t.Fatalf("document %d as corev1.Pod: %v", i+3, err)
		}
		if p.Kind != "Pod" || p.Spec.NodeName == "" || p.Status.Phase != corev1.PodRunning || len(p.Spec.Containers) != 1 || p.Status.PodIP == "" {
			t.Errorf("document %d: unexpected Pod %+v", i+3, p)
		}
	}
}

func rawDocs(t *testing.T, data []byte) [][]byte {
	t.Helper()
	docs, err := yamldoc.Split(data)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, d := range docs {
		out = append(out, d.Raw)
	}
	return out
}

// TestPodRef: pods are found by NAMESPACE/NAME, or by NAME where only one
// namespace has it.
func TestPodRef(t *testing.T) {
	l := plan(Config{Nodes: 2, PodsPerNode: 1, Prefix: "fm-", StateDir: "/s"})
	n1, n2 := l.Nodes[0], l.Nodes[1]
	n1.Pods = append(n1.Pods, NewPod("fm-", n1, "ns1", "web", netip.MustParseAddr("10.200.1.20"), nil))
	n2.Pods = append(n2.Pods, NewPod("fm-", n2, "ns2", "web", netip.MustParseAddr("10.200.2.20"), nil))
	n2.Pods = append(n2.Pods, NewPod("fm-", n2, "ns2", "db", netip.MustParseAddr("10.200.2.21"), nil))
	n2.Pods = append(n2.Pods, NewPod("fm-", n2, "ns2", "api-5f8c4d6584-7d465", netip.MustParseAddr("10.200.2.22"), nil))
	n2.Pods = append(n2.Pods, NewPod("fm-", n2, "ns2", "api-v2-84b79f8d4-b47d9", netip.MustParseAddr("10.200.2.23"), nil))
	tests := []struct {
		ref     string
		want    string // namespace/name
		wantErr error
	}{
		{"node1-pod1", "default/node1-pod1", nil},
		{"default/node2-pod1", "default/node2-pod1", nil},
		{"db", "ns2/db", nil},
		{"ns1/web", "ns1/web", nil},
		{"ns2/web", "ns2/web", nil},
		{"web", "", ErrAmbiguous},
		{"ns3/web", "", ErrNotFound},
		{"nope", "", ErrNotFound},
		{"ns2/deploy/api", "ns2/api-5f8c4d6584-7d465", nil},
		{"deploy/api", "ns2/api-5f8c4d6584-7d465", nil},
		{"deploy/api-v2", "ns2/api-v2-84b79f8d4-b47d9", nil},
		{"ns1/deploy/api", "", ErrNotFound},
		{"deploy/web", "", ErrNotFound},
	}
	for _, tt := range tests {
		p, err := l.Pod(tt.ref)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Pod(%q): %v, want %v", tt.ref, err, tt.wantErr)
			}
			continue
		}
		if err != nil || p.Namespace+"/"+p.Name != tt.want {
			t.Errorf("Pod(%q) = %v, %v; want %s", tt.ref, p, err, tt.want)
		}
	}
	if ns, err := l.Netns("ns1/web"); err != nil || ns != PodNetns("fm-", "ns1", "web") {
		t.Errorf("Netns(ns1/web) = %q, %v", ns, err)
	}
	if _, err := l.Netns("web"); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("Netns(web): %v, want ambiguous", err)
	}
	// Names: short, distinct across namespaces, veths within IFNAMSIZ.
	a, b := PodNetns("fm-", "ns1", "web"), PodNetns("fm-", "ns2", "web")
	if a == b || !strings.HasPrefix(a, "fm-web-") || len(PodNetns("fm-", "ns", strings.Repeat("x", 63))) > len("fm-")+16+7 {
		t.Errorf("pod netns names %q %q", a, b)
	}
	if v := HostVethName("ns1", "web"); len(v) != 15 || v == HostVethName("ns2", "web") {
		t.Errorf("host veth %q: want 15 characters, distinct", v)
	}
}
