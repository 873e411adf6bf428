package agent

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const clusterYAML = `# two nodes, three pods
apiVersion: v1
kind: Node
metadata:
  name: node1
spec:
  podCIDR: 10.200.1.0/24
  podCIDRs: [10.200.1.0/24]
status:
  addresses:
  - {type: InternalIP, address: 10.100.0.1}
---
apiVersion: v1
kind: Node
metadata:
  name: node2
spec:
  podCIDRs: [10.200.2.0/24, "fd00::/64"]
status:
  addresses:
  - {type: Hostname, address: node2}
  - {type: InternalIP, address: 10.100.0.2}
---
apiVersion: v1
kind: Pod
metadata:
  name: a
  namespace: default
  annotations: {fibmesh.io/host-veth: p1}
spec:
  nodeName: node1
  containers: [{name: app, image: app}]
status:
  podIP: 10.200.1.11
---
apiVersion: v1
kind: Pod
metadata:
  name: pending
  namespace: default
spec:
  nodeName: node1
  containers: [{name: app, image: app}]
---
apiVersion: v1
kind: Pod
metadata:
  name: b
  namespace: default
  annotations: {fibmesh.io/host-veth: p1}
spec:
  nodeName: node2
  containers: [{name: app, image: app}]
status:
  podIP: 10.200.2.11
`

func TestRoutes(t *testing.T) {
	c, err := ParseCluster("cluster.yaml", []byte(clusterYAML))
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Routes("node1", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	want := []RouteIntent{
		{Prefix: netip.MustParsePrefix("10.200.1.11/32"), Dev: "p1", Via: netip.MustParseAddr("10.200.1.11"), Pod: "default/a"},
		{Prefix: netip.MustParsePrefix("10.200.2.0/24"), Dev: "eth0", Via: netip.MustParseAddr("10.100.0.2")},
	}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
		t.Errorf("routes (-want +got):\n%s", d)
	}
}

func TestParseClusterErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, node, wantErr string
	}{
		{"unknown kind", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n", "", `kind "Service": the cluster state holds only Node and Pod`},
		{"wrong apiVersion", "apiVersion: apps/v1\nkind: Node\n", "", `apiVersion "apps/v1": want v1`},
		{"unknown field", "apiVersion: v1\nkind: Node\nmetadata: {name: n}\nspec: {podRange: 10.0.0.0/24}\n", "", `(Node): error unmarshaling JSON: while decoding JSON: json: unknown field "podRange"`},
		{"bad yaml", "apiVersion: v1\nkind: [\n", "", "document 1"},
		{"missing node", clusterYAML, "node9", `node "node9" is not in the cluster state (have node1, node2)`},
		{"bad pod IP", strings.Replace(clusterYAML, "podIP: 10.200.1.11", "podIP: 10.200.1.x", 1), "node1", `pod default/a: status.podIP "10.200.1.x"`},
		{"no host veth", strings.Replace(clusterYAML, "annotations: {fibmesh.io/host-veth: p1}\n  \nspec:\n  nodeName: node1", "", 1) + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: x}\nspec: {nodeName: node1, containers: [{name: a, image: a}]}\nstatus: {podIP: 10.200.1.12}\n", "node1", "pod x/c: annotation fibmesh.io/host-veth is missing"},
		{"no internal IP", strings.Replace(clusterYAML, "- {type: InternalIP, address: 10.100.0.2}", "", 1), "node1", "node node2: no IPv4 InternalIP"},
		{"bad pod CIDR", strings.Replace(clusterYAML, "podCIDRs: [10.200.2.0/24", "podCIDRs: [10.200.2.0/33", 1), "node1", `node node2: spec.podCIDRs "10.200.2.0/33"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseCluster("cluster.yaml", []byte(tc.yaml))
			if err == nil && tc.node != "" {
				_, err = c.Routes(tc.node, "eth0")
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v; want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func FuzzParseCluster(f *testing.F) {
	f.Add([]byte(clusterYAML))
	f.Add([]byte("apiVersion: v1\nkind: Node\n---\n---\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCluster("fuzz.yaml", b)
		if err != nil {
			return
		}
		for _, n := range c.Nodes {
			rs, err := c.Routes(n.Name, "eth0")
			if err != nil {
				continue
			}
			for _, r := range rs {
				if !r.Prefix.IsValid() || !r.Via.IsValid() {
					t.Fatalf("invalid route %+v", r)
				}
			}
		}
	})
}
