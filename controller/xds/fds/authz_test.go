package fds

import (
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	"github.com/fibmesh/fibmesh/controller/model"
)

// A pod's UDP ports carry every AuthorizationPolicy that applies to it,
// rules as written, by namespace and name; its TCP ports none; a pod
// outside the mesh none.
func TestBuildUDPAuthz(t *testing.T) {
	m := testModel()
	m.Workloads = append(m.Workloads, &model.Workload{Namespace: "prod", Name: "out", IP: "10.200.1.12", Node: "node1", OutsideMesh: true})
	m.Services = append(m.Services, &model.Service{Hostname: "out.prod.svc.cluster.local",
		Ports:     []model.Port{{Name: "dns", Port: 53, Protocol: model.ProtocolUDP}},
		Endpoints: []*model.Endpoint{{Address: "10.200.1.12", Ready: true, Node: "node1", Workload: "prod/out"}}})
	m.AuthzPolicies = []*model.AuthzPolicy{
		{Namespace: "prod", Name: "z-allow", Action: "ALLOW", Workloads: []string{"prod/a", "prod/out"}, Rules: []model.AuthzRule{{
			From: []model.AuthzSource{{Namespaces: []string{"front"}, NotIPBlocks: []string{"10.9.0.0/16"}}},
			To:   []model.AuthzOperation{{Ports: []string{"5353"}, Methods: []string{"GET"}}},
			When: []model.Condition{{Key: "source.ip", Values: []string{"10.200.2.0/24"}}},
		}}},
		{Namespace: "prod", Name: "a-deny", Action: "DENY", Workloads: []string{"prod/a"}, Rules: []model.AuthzRule{{}}},
		{Namespace: "prod", Name: "ext", Action: "CUSTOM", Workloads: []string{"prod/a"}},
		{Namespace: "prod", Name: "other", Action: "DENY", Workloads: []string{"prod/b"}},
	}
	tb := Build(m)
	wantAuthz := []*fibv1.AuthzPolicy{
		{Namespace: "prod", Name: "a-deny", Action: fibv1.AuthzAction_DENY, Rules: []*fibv1.AuthzRule{{}}},
		{Namespace: "prod", Name: "ext", Action: fibv1.AuthzAction_CUSTOM},
		{Namespace: "prod", Name: "z-allow", Action: fibv1.AuthzAction_ALLOW, Rules: []*fibv1.AuthzRule{{
			From: []*fibv1.AuthzSource{{Namespaces: []string{"front"}, NotIpBlocks: []string{"10.9.0.0/16"}}},
			To:   []*fibv1.AuthzOperation{{Ports: []string{"5353"}, Methods: []string{"GET"}}},
			When: []*fibv1.AuthzCondition{{Key: "source.ip", Values: []string{"10.200.2.0/24"}}},
		}}},
	}
	want := []*fibv1.PortPolicy{
		{Ip: "10.200.1.11", Port: 5353, Protocol: fibv1.Protocol_UDP, Mode: fibv1.MTLSMode_STRICT, Authz: wantAuthz},
		{Ip: "10.200.1.11", Port: 8080, Protocol: fibv1.Protocol_TCP, Mode: fibv1.MTLSMode_STRICT},
		{Ip: "10.200.1.11", Port: 9090, Protocol: fibv1.Protocol_TCP, Mode: fibv1.MTLSMode_PERMISSIVE},
		{Ip: "10.200.1.12", Port: 53, Protocol: fibv1.Protocol_UDP, Mode: fibv1.MTLSMode_PERMISSIVE}, // outside the mesh: no policy
	}
	if d := gocmp.Diff(want, tb.Nodes["node1"].PortPolicies, protocmp.Transform()); d != "" {
		t.Errorf("node1's port policies (-want +got):\n%s", d)
	}
	// node2's pod b has a DENY policy and a UDP port too.
	for _, pp := range tb.Nodes["node2"].PortPolicies {
		got := len(pp.GetAuthz())
		if wantN := map[fibv1.Protocol]int{fibv1.Protocol_UDP: 1, fibv1.Protocol_TCP: 0}[pp.GetProtocol()]; got != wantN {
			t.Errorf("node2 %s:%d/%s: %d policies; want %d", pp.GetIp(), pp.GetPort(), pp.GetProtocol(), got, wantN)
		}
	}
}
