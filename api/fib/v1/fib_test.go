package fibv1

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/google/go-cmp/cmp"
)

func TestFlowTableRoundTrip(t *testing.T) {
	in := &FlowTable{
		Node: "node1", Version: "7",
		LocalPods: []*LocalPod{{Namespace: "production", Name: "reviews-v1-7d9f8c6b5-x2x4q", Ip: "10.200.1.11", IdentityId: 1,
			Workload: "reviews-v1", Labels: map[string]string{LabelApp: "reviews", LabelVersion: "v1"}}},
		Routes: []*Route{{Prefix: "10.200.2.0/24", NextHop: "10.100.0.2", Node: "node2", NicTlsOffload: true}},
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

func TestNICTLSMetadata(t *testing.T) {
	tests := []struct {
		name                  string
		md                    *structpb.Struct
		wantOffload, reported bool
		wantErr               string
	}{
		{name: "no metadata"},
		{name: "other keys only", md: &structpb.Struct{Fields: map[string]*structpb.Value{"x": structpb.NewBoolValue(true)}}},
		{name: "offloads", md: NICTLSMetadata(true), wantOffload: true, reported: true},
		{name: "does not offload", md: NICTLSMetadata(false), reported: true},
		{name: "a string", md: &structpb.Struct{Fields: map[string]*structpb.Value{NodeMetadataNICTLS: structpb.NewStringValue("true")}},
			wantErr: "node metadata fibmesh.nic_ktls_offload: true is not a bool"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			off, rep, err := NICTLSFromMetadata(tt.md)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v; want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || off != tt.wantOffload || rep != tt.reported {
				t.Errorf("got offload=%v reported=%v err=%v; want offload=%v reported=%v", off, rep, err, tt.wantOffload, tt.reported)
			}
		})
	}
}
