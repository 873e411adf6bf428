package reconcile

import (
	"maps"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	xdsapi "github.com/fibmesh/fibmesh/api/xds"
)

func TestCompileRefuses(t *testing.T) {
	for _, tt := range []struct {
		name string
		edit func(map[string]*fibv1.FlowTable)
		want string
	}{
		{"bad prefix", func(m map[string]*fibv1.FlowTable) { m["mesh"].Routes[1].Prefix = "10.200.2/24" },
			`flow table "mesh": routes[1].prefix "10.200.2/24": want a CIDR`},
		{"host bits", func(m map[string]*fibv1.FlowTable) { m["mesh"].Routes[1].Prefix = "10.200.2.1/24" },
			`flow table "mesh": routes[1].prefix "10.200.2.1/24": host bits set: want 10.200.2.0/24`},
		{"bad next hop", func(m map[string]*fibv1.FlowTable) { m["mesh"].Routes[1].NextHop = "node2" },
			`flow table "mesh": routes[1].next_hop "node2": want the node's InternalIP`},
		{"v6 next hop for v4", func(m map[string]*fibv1.FlowTable) { m["mesh"].Routes[1].NextHop = "fd00::2" },
			`routes[1].next_hop "fd00::2": an IPv4 prefix needs an IPv4 next hop`},
		{"pod ip", func(m map[string]*fibv1.FlowTable) { m["node1"].LocalPods[0].Ip = "pod-a" },
			`flow table "node1": local_pods[0] (default/a).ip "pod-a": want the pod's IPv4 address`},
		{"pod without name", func(m map[string]*fibv1.FlowTable) { m["node1"].LocalPods[0].Name = "" },
			`flow table "node1": local_pods[0] (default/): namespace and name are required`},
		{"unknown mode", func(m map[string]*fibv1.FlowTable) { m["node1"].PortPolicies[0].Mode = 9 },
			`flow table "node1": port_policies[0].mode 9: want PERMISSIVE, STRICT or DISABLE`},
		{"unspecified mode", func(m map[string]*fibv1.FlowTable) { m["node1"].PortPolicies[0].Mode = 0 },
			`port_policies[0].mode MTLS_MODE_UNSPECIFIED: want PERMISSIVE, STRICT or DISABLE`},
		{"port 0", func(m map[string]*fibv1.FlowTable) { m["node1"].PortPolicies[0].Port = 0 },
			`port_policies[0].port 0: want 1-65535`},
		{"protocol", func(m map[string]*fibv1.FlowTable) { m["node1"].PortPolicies[0].Protocol = 0 },
			`port_policies[0].protocol PROTOCOL_UNSPECIFIED: want TCP or UDP`},
		{"policy ip", func(m map[string]*fibv1.FlowTable) { m["node1"].PortPolicies[0].Ip = "x" },
			`port_policies[0].ip "x"`},
		{"other node's table", func(m map[string]*fibv1.FlowTable) { m["node2"] = &fibv1.FlowTable{Node: "node2"} },
			`flow table "node2": not a table of node node1`},
		{"vip", func(m map[string]*fibv1.FlowTable) {
			m["mesh"].Services = []*fibv1.ServiceVIP{{Hostname: "a.default.svc.cluster.local", Vip: "10.96.0.300", Port: 80}}
		}, `flow table "mesh": services[0] (a.default.svc.cluster.local).vip "10.96.0.300"`},
		{"identity 0", func(m map[string]*fibv1.FlowTable) { m["mesh"].Identities[0].Id = 0 },
			`flow table "mesh": identities[0].id: 0 is reserved`},
		{"identity on a CIDR", func(m map[string]*fibv1.FlowTable) { m["mesh"].Routes[1].IdentityId = 7 },
			`flow table "mesh": routes[1].identity_id 7: only a pod's host route (/32, /128) has an identity, not 10.200.2.0/24`},
		{"unknown identity", func(m map[string]*fibv1.FlowTable) { m["mesh"].Routes[2].IdentityId = 8 },
			`flow table "mesh": routes[2].identity_id 8: not in the tables' identities`},
		{"workload name", func(m map[string]*fibv1.FlowTable) { m["node1"].LocalPods[0].Workload = "Reviews V1" },
			`flow table "node1": local_pods[0] (default/a).workload "Reviews V1": want a workload name`},
		{"label value", func(m map[string]*fibv1.FlowTable) {
			m["node1"].LocalPods[0].Labels = map[string]string{"version": "v1 beta"}
		},
			`flow table "node1": local_pods[0] (default/a).labels["version"] "v1 beta": want a Kubernetes label value`},
		{"label value too long", func(m map[string]*fibv1.FlowTable) {
			m["node1"].LocalPods[0].Labels = map[string]string{"app": strings.Repeat("a", 64)}
		}, `local_pods[0] (default/a).labels["app"]`},
		{"duplicate pod ip", func(m map[string]*fibv1.FlowTable) {
			m["node1"].LocalPods = append(m["node1"].LocalPods, &fibv1.LocalPod{Namespace: "default", Name: "b", Ip: "10.200.1.11"})
		}, `local_pods[1] (default/b).ip 10.200.1.11: also the ip of local pod default/a`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb := tables()
			tt.edit(tb)
			_, err := Compile("node1", tb)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Compile: %v\nwant an error containing %s", err, tt.want)
			}
		})
	}
}

func TestCompileSkips(t *testing.T) {
	tb := tables()
	tb["mesh"].Routes = append(tb["mesh"].Routes,
		&fibv1.Route{Prefix: "fd00:200:2::/64", NextHop: "fd00::2", Node: "node2"},  // IPv6: the kernel's
		&fibv1.Route{Prefix: "10.200.2.0/24", NextHop: "10.100.0.9", Node: "node9"}, // duplicate: the first wins
	)
	d, err := Compile("node1", tb)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Routes) != 3 {
		t.Errorf("routes %v, want node2's /24 and /32 and the local pod", d.Routes)
	}
	if in := d.Routes[pfx("10.200.2.0/24")]; in.Node != "node2" {
		t.Errorf("duplicate prefix: %+v won, want node2's", in)
	}
	if in := d.Routes[pfx("10.200.1.11/32")]; !in.Local() {
		t.Errorf("own pod's /32: %+v, want the local route (the mesh's own-node routes are skipped)", in)
	}
	if _, ok := d.Routes[pfx("10.200.1.0/24")]; ok {
		t.Error("own pod CIDR routed")
	}
	// Only the mesh table yet: still valid (the node has no pods).
	if _, err := Compile("node1", map[string]*fibv1.FlowTable{"mesh": tb["mesh"]}); err != nil {
		t.Error(err)
	}
}

// A mesh pod's host route names its identity: on any node, this one too.
func TestCompileMeshPods(t *testing.T) {
	tb := tables()
	tb["mesh"].Routes[2].IdentityId = 7 // node2's pod
	tb["mesh"].Routes[3].IdentityId = 7 // this node's pod
	d, err := Compile("node1", tb)
	if err != nil {
		t.Fatal(err)
	}
	want := map[netip.Addr]string{
		netip.MustParseAddr("10.200.2.11"): "spiffe://cluster.local/ns/default/sa/a",
		netip.MustParseAddr("10.200.1.11"): "spiffe://cluster.local/ns/default/sa/a",
	}
	if !maps.Equal(d.MeshPods, want) {
		t.Errorf("MeshPods %v, want %v", d.MeshPods, want)
	}
}

// The shared table split in shards (api/xds MeshShard, MeshServiceShard) compiles to the
// same FIB as the table whole.
func TestCompileShards(t *testing.T) {
	tb := tables()
	whole, err := Compile("node1", tb)
	if err != nil {
		t.Fatal(err)
	}
	sharded := map[string]*fibv1.FlowTable{"node1": tb["node1"]}
	shardNamed := func(name string) *fibv1.FlowTable {
		if sharded[name] == nil {
			sharded[name] = &fibv1.FlowTable{Node: name}
		}
		return sharded[name]
	}
	shard := func(key string) *fibv1.FlowTable { return shardNamed(xdsapi.MeshShard(xdsapi.MeshShardOf(key))) }
	for _, r := range tb["mesh"].Routes {
		sh := shard(r.Prefix)
		sh.Routes = append(sh.Routes, r)
	}
	for _, id := range tb["mesh"].Identities {
		sh := shard(id.SpiffeId)
		sh.Identities = append(sh.Identities, id)
	}
	for _, v := range tb["mesh"].Services {
		sh := shardNamed(xdsapi.MeshServiceShard(xdsapi.MeshServiceShardOf(v.Hostname)))
		sh.Services = append(sh.Services, v)
	}
	if len(sharded) < 3 {
		t.Fatalf("the test tables fell in %d shards; want routes spread over several", len(sharded)-1)
	}
	got, err := Compile("node1", sharded)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(whole.Routes, got.Routes, cmpopts.EquateComparable(netip.Prefix{}, netip.Addr{})); d != "" {
		t.Errorf("routes from shards differ from the whole table's (-whole +shards):\n%s", d)
	}
	if d := cmp.Diff(whole.Identities, got.Identities); d != "" {
		t.Errorf("identities differ (-whole +shards):\n%s", d)
	}
	if _, err := Compile("node1", map[string]*fibv1.FlowTable{"mesh/x": {}, "node2": {}}); err == nil || !strings.Contains(err.Error(), `"node2"`) {
		t.Errorf("another node's table: %v, want refused", err)
	}
}

// A local pod's workload and the labels the agent reads reach its Pod;
// labels it does not read are left out.
func TestCompilePodWorkload(t *testing.T) {
	for _, tt := range []struct {
		name     string
		workload string
		labels   map[string]string
		want     Pod
	}{
		{"none", "", nil, Pod{}},
		{"app and version", "reviews-v1", map[string]string{"app": "reviews", "version": "v1"},
			Pod{Workload: "reviews-v1", Labels: map[string]string{"app": "reviews", "version": "v1"}}},
		{"every label read, empty value kept", "", map[string]string{"app.kubernetes.io/name": "ratings", "app.kubernetes.io/version": "1.2.0",
			"service.istio.io/canonical-name": "ratings-svc", "service.istio.io/canonical-revision": "", "team": "books"},
			Pod{Labels: map[string]string{"app.kubernetes.io/name": "ratings", "app.kubernetes.io/version": "1.2.0",
				"service.istio.io/canonical-name": "ratings-svc", "service.istio.io/canonical-revision": ""}}},
		{"only labels it does not read", "db", map[string]string{"team": "books"}, Pod{Workload: "db"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb := tables()
			tb["node1"].LocalPods[0].Workload, tb["node1"].LocalPods[0].Labels = tt.workload, tt.labels
			d, err := Compile("node1", tb)
			if err != nil {
				t.Fatal(err)
			}
			p := d.Pods["default/a"]
			if d := cmp.Diff(tt.want, Pod{Workload: p.Workload, Labels: p.Labels}, cmpopts.EquateComparable(netip.Addr{})); d != "" {
				t.Errorf("pod (-want +got):\n%s", d)
			}
		})
	}
}
