package fds

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	"github.com/fibmesh/fibmesh/controller/model"
)

const (
	idA = "spiffe://cluster.local/ns/prod/sa/a"
	idB = "spiffe://cluster.local/ns/prod/sa/b"
)

func testModel() *model.Model {
	return &model.Model{
		Nodes: []*model.Node{
			{Name: "node1", InternalIP: "10.100.0.1", PodCIDRs: []string{"10.200.1.0/24"}},
			{Name: "node2", InternalIP: "10.100.0.2", PodCIDRs: []string{"10.200.2.1/24"}}, // unmasked on purpose
			{Name: "node3"}, // no InternalIP: no route
		},
		Workloads: []*model.Workload{
			{Namespace: "prod", Name: "a", IP: "10.200.1.11", Node: "node1", Identity: idA, DefaultMode: model.ModeStrict,
				PortModes: map[uint32]model.Mode{9090: model.ModePermissive}},
			{Namespace: "prod", Name: "b", IP: "10.201.0.5", Node: "node2", Identity: idB, DefaultMode: model.ModePermissive}, // outside node2's CIDR
			{Namespace: "prod", Name: "pending", Node: "node1", Identity: idA},                                                // no IP yet
		},
		Services: []*model.Service{
			{Hostname: "a.prod.svc.cluster.local", VIPs: []string{"10.96.0.1", "fd00::1"},
				Ports: []model.Port{{Name: "http", Port: 80, Protocol: model.ProtocolHTTP}, {Name: "dns", Port: 53, Protocol: model.ProtocolUDP}},
				Endpoints: []*model.Endpoint{
					{Address: "10.200.1.11", Ready: true, Node: "node1", Workload: "prod/a", Identity: idA,
						Ports: []model.EndpointPort{{Name: "dns", Port: 5353}, {Name: "http", Port: 8080}}},
					{Address: "10.201.0.5", Ready: false, Node: "node2", Workload: "prod/b", Identity: idB},
				}},
			{Hostname: "headless.prod.svc.cluster.local", Ports: []model.Port{{Port: 80, Protocol: model.ProtocolTCP}},
				Endpoints: []*model.Endpoint{{Address: "10.201.0.5", Ready: true, Node: "node2", Workload: "prod/b", Identity: idB}}},
		},
	}
}

func TestBuild(t *testing.T) {
	tb := Build(testModel())
	a, b := IdentityID(idA), IdentityID(idB)
	wantMesh := &fibv1.FlowTable{
		Routes: []*fibv1.Route{
			{Prefix: "10.200.1.0/24", NextHop: "10.100.0.1", Node: "node1"},
			{Prefix: "10.200.1.11/32", NextHop: "10.100.0.1", Node: "node1"},
			{Prefix: "10.200.2.0/24", NextHop: "10.100.0.2", Node: "node2"},
			{Prefix: "10.201.0.5/32", NextHop: "10.100.0.2", Node: "node2"},
		},
		Services: []*fibv1.ServiceVIP{
			{Hostname: "a.prod.svc.cluster.local", Vip: "10.96.0.1", Port: 53, Protocol: fibv1.Protocol_UDP,
				Backends: []*fibv1.Backend{{Ip: "10.200.1.11", Port: 5353, Weight: 1, Node: "node1", IdentityId: a}}},
			{Hostname: "a.prod.svc.cluster.local", Vip: "10.96.0.1", Port: 80, Protocol: fibv1.Protocol_TCP,
				Backends: []*fibv1.Backend{{Ip: "10.200.1.11", Port: 8080, Weight: 1, Node: "node1", IdentityId: a}}},
		},
	}
	ids := []*fibv1.Identity{{Id: a, SpiffeId: idA}, {Id: b, SpiffeId: idB}}
	if a > b {
		ids[0], ids[1] = ids[1], ids[0]
	}
	wantMesh.Identities = ids
	if d := cmp.Diff(wantMesh, tb.Mesh, protocmp.Transform()); d != "" {
		t.Errorf("mesh table (-want +got):\n%s", d)
	}
	wantNodes := map[string]*fibv1.FlowTable{
		"node1": {Node: "node1",
			LocalPods: []*fibv1.LocalPod{{Namespace: "prod", Name: "a", Ip: "10.200.1.11", IdentityId: a}},
			PortPolicies: []*fibv1.PortPolicy{
				{Ip: "10.200.1.11", Port: 5353, Protocol: fibv1.Protocol_UDP, Mode: fibv1.MTLSMode_STRICT},
				{Ip: "10.200.1.11", Port: 8080, Protocol: fibv1.Protocol_TCP, Mode: fibv1.MTLSMode_STRICT},
				{Ip: "10.200.1.11", Port: 9090, Protocol: fibv1.Protocol_TCP, Mode: fibv1.MTLSMode_PERMISSIVE},
			}},
		"node2": {Node: "node2",
			LocalPods: []*fibv1.LocalPod{{Namespace: "prod", Name: "b", Ip: "10.201.0.5", IdentityId: b}},
			PortPolicies: []*fibv1.PortPolicy{
				// an endpoint that is not ready still gets its policy
				{Ip: "10.201.0.5", Port: 53, Protocol: fibv1.Protocol_UDP, Mode: fibv1.MTLSMode_PERMISSIVE},
				{Ip: "10.201.0.5", Port: 80, Protocol: fibv1.Protocol_TCP, Mode: fibv1.MTLSMode_PERMISSIVE},
			}},
		"node3": {Node: "node3"},
	}
	if d := cmp.Diff(wantNodes, tb.Nodes, protocmp.Transform()); d != "" {
		t.Errorf("node tables (-want +got):\n%s", d)
	}
}

func TestBuildDeterministic(t *testing.T) {
	first := Build(testModel())
	for range 20 {
		if d := cmp.Diff(first, Build(testModel()), protocmp.Transform(), cmp.AllowUnexported(Tables{})); d != "" {
			t.Fatalf("two builds of one model differ:\n%s", d)
		}
	}
}

func TestIdentityIDsStable(t *testing.T) {
	m := testModel()
	before := identityIDs(m)
	m.Workloads = append(m.Workloads, &model.Workload{Namespace: "prod", Name: "c", Identity: "spiffe://cluster.local/ns/prod/sa/c"})
	after := identityIDs(m)
	for s, id := range before {
		if after[s] != id {
			t.Errorf("adding an identity renumbered %s: %d → %d", s, id, after[s])
		}
	}
	seen := map[uint32]string{}
	for s, id := range after {
		if id == 0 {
			t.Errorf("%s got id 0 (reserved for no identity)", s)
		}
		if o, dup := seen[id]; dup {
			t.Errorf("%s and %s share id %d", s, o, id)
		}
		seen[id] = s
	}
}
