package fibv1

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"
)

func TestFlowTableRoundTrip(t *testing.T) {
	in := &FlowTable{
		Node: "node1", Version: "7",
		LocalPods: []*LocalPod{{Namespace: "production", Name: "reviews-v1", Ip: "10.200.1.11", IdentityId: 1}},
		Routes:    []*Route{{Prefix: "10.200.2.0/24", NextHop: "10.100.0.2", Node: "node2"}},
		Services: []*ServiceVIP{{Hostname: "reviews.production.svc.cluster.local", Vip: "10.96.0.11", Port: 9080, Protocol: Protocol_TCP,
			Backends: []*Backend{{Ip: "10.200.1.11", Port: 9080, Weight: 1, Node: "node1", IdentityId: 1}}}},
		PortPolicies: []*PortPolicy{{Ip: "10.200.1.11", Port: 9080, Protocol: Protocol_TCP, Mode: MTLSMode_STRICT}},
		Identities:   []*Identity{{Id: 1, SpiffeId: "spiffe://cluster.local/ns/production/sa/reviews"}},
	}
	b, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out FlowTable
	if err := proto.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(in, &out, protocmp.Transform()); d != "" {
		t.Errorf("round trip (-in +out):\n%s", d)
	}
	if got := string(in.ProtoReflect().Descriptor().FullName()); got != "fibmesh.fib.v1.FlowTable" {
		t.Errorf("resource type %s; want fibmesh.fib.v1.FlowTable", got)
	}
}
