package xdsclient

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
)

// FuzzDecode: whatever bytes a controller sends as a resource, decoding
// returns a named resource or an error, never panics, and a resource
// decoded is the type announced.
func FuzzDecode(f *testing.F) {
	types := []string{
		"type.googleapis.com/envoy.config.cluster.v3.Cluster",
		"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
		"type.googleapis.com/envoy.config.listener.v3.Listener",
		"type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
		"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
		"type.googleapis.com/fibmesh.fib.v1.FlowTable",
	}
	for _, m := range []proto.Message{
		&clusterv3.Cluster{Name: "outbound|80||a.ns.svc.cluster.local"},
		&endpointv3.ClusterLoadAssignment{ClusterName: "c"},
		&fibv1.FlowTable{Node: "node1", LocalPods: []*fibv1.LocalPod{{Name: "p", Ip: "10.0.0.1"}}},
		&fibv1.FlowTable{},
	} {
		b, _ := proto.Marshal(m)
		for i := range types {
			f.Add(uint8(i), b)
		}
	}
	f.Fuzz(func(t *testing.T, ti uint8, value []byte) {
		typ := types[int(ti)%len(types)]
		m, name, err := decode(typ, &anypb.Any{TypeUrl: typ, Value: value})
		if err != nil {
			return
		}
		if name == "" {
			t.Fatalf("decoded %s without a name", typ)
		}
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		if a.GetTypeUrl() != typ {
			t.Fatalf("decoded a %s from a %s", a.GetTypeUrl(), typ)
		}
	})
}

// TestDecodeRefusesMismatch: a resource of another type than the
// response's is an error (a NACK), not a silent mix-up.
func TestDecodeRefusesMismatch(t *testing.T) {
	a, err := anypb.New(&clusterv3.Cluster{Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := decode("type.googleapis.com/envoy.config.route.v3.RouteConfiguration", a); err == nil {
		t.Fatal("a Cluster in an RDS response was accepted")
	}
	a, _ = anypb.New(&clusterv3.Cluster{})
	if _, _, err := decode("type.googleapis.com/envoy.config.cluster.v3.Cluster", a); err == nil {
		t.Fatal("a Cluster without a name was accepted")
	}
}
