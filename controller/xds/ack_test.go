package xds

import (
	"context"
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fibmesh/fibmesh/controller/xds/envoy"
)

// workCounts is what the server did: the index and resource work of its
// store, and each stream's count of requests handled and responses
// built.
type workCounts struct {
	indexOps, visited, marks int64
	streams                  map[*stream]int64
}

func (s *Server) workCounts() workCounts {
	w := workCounts{indexOps: s.store.stats.indexOps.Load(), visited: s.store.stats.visited.Load(), marks: s.store.stats.marks.Load(), streams: map[*stream]int64{}}
	sc := s.store.shared[resource.RouteType]
	sc.mu.RLock()
	for sb := range sc.wild {
		w.streams[sb.st] = sb.st.work.Load()
	}
	sc.mu.RUnlock()
	return w
}

// TestAckDoesNoWork: an ACK touches only its own stream: no subscriber
// index is read or written, no resource or changelog record is looked
// at, no other stream is marked or touched; and it allocates nothing.
// Work is counted (the store's instrumented index), not timed.
func TestAckDoesNoWork(t *testing.T) {
	e := newEnv(t)
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	ads := discovery.NewAggregatedDiscoveryServiceClient(conn)
	type client struct {
		st    discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
		nonce string
	}
	var clients []*client
	nodes := []string{"node1", "node2", "node3"}
	for _, node := range nodes {
		st, err := ads.DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: node}, TypeUrl: resource.RouteType}); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Resources) == 0 {
			t.Fatal("first response carries no route configuration")
		}
		clients = append(clients, &client{st, resp.Nonce})
	}
	// ACK all but the first.
	for _, c := range clients[1:] {
		if err := c.st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.RouteType, ResponseNonce: c.nonce}); err != nil {
			t.Fatal(err)
		}
	}
	rdsAcked := func(ns NodeStatus) bool {
		ts := typeStatus(ns, resource.RouteType)
		return ts.Acked != "" && ts.Synced()
	}
	nodeStatus(t, e.srv, "node2", rdsAcked)
	nodeStatus(t, e.srv, "node3", rdsAcked)
	before := e.srv.workCounts()
	if len(before.streams) != 3 {
		t.Fatalf("%d streams subscribed to routes, want 3", len(before.streams))
	}
	if err := clients[0].st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.RouteType, ResponseNonce: clients[0].nonce}); err != nil {
		t.Fatal(err)
	}
	nodeStatus(t, e.srv, "node1", rdsAcked)
	nodeOf := func(st *stream) string {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.node
	}
	var first *stream
	for st := range before.streams {
		if nodeOf(st) == "node1" {
			first = st
		}
	}
	if first == nil || e.srv.workCounts().streams[first] == before.streams[first] {
		t.Fatal("node1's stream did not count the ACK")
	}
	after := e.srv.workCounts()
	if after.indexOps != before.indexOps || after.visited != before.visited || after.marks != before.marks {
		t.Errorf("an ACK did index work: index ops %d → %d, resources visited %d → %d, streams marked %d → %d",
			before.indexOps, after.indexOps, before.visited, after.visited, before.marks, after.marks)
	}
	for st, n := range after.streams {
		if st != first && n != before.streams[st] {
			t.Errorf("another stream's state was touched by an ACK: work %d → %d", before.streams[st], n)
		}
	}
	if n := after.streams[first] - before.streams[first]; n != 1 {
		t.Errorf("the ACKing stream did %d units of work, want 1", n)
	}

	// And it allocates nothing: the handler, called directly on a stream
	// with a response outstanding.
	sb := first.subs[resource.RouteType]
	req := &discovery.DeltaDiscoveryRequest{TypeUrl: resource.RouteType, ResponseNonce: "ack-test"}
	allocs := testing.AllocsPerRun(100, func() {
		first.mu.Lock()
		sb.nonce, sb.version = "ack-test", "RDS-1"
		first.mu.Unlock()
		if err := e.srv.handleDelta(first, req); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("an ACK allocates %.1f times, want 0", allocs)
	}
}

// The single-type services answer like ADS: CDS over StreamClusters
// (state of the world, type URL left empty as such clients may) and LDS
// over DeltaListeners; a request for another type on them is refused.
func TestSingleTypeServices(t *testing.T) {
	e := newEnv(t)
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()

	cds, err := clusterservice.NewClusterDiscoveryServiceClient(conn).StreamClusters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := cds.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: "node1"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := cds.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.TypeUrl != resource.ClusterType || len(resp.Resources) == 0 {
		t.Errorf("StreamClusters answered %s with %d resources, want clusters", resp.TypeUrl, len(resp.Resources))
	}

	lds, err := listenerservice.NewListenerDiscoveryServiceClient(conn).DeltaListeners(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := lds.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: "node1"}, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	dresp, err := lds.Recv()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, r := range dresp.Resources {
		names[r.Name] = true
	}
	if dresp.TypeUrl != resource.ListenerType || !names[envoy.OutboundListener] {
		t.Errorf("DeltaListeners answered %s with %v, want node1's listeners with %s", dresp.TypeUrl, names, envoy.OutboundListener)
	}

	wrong, err := clusterservice.NewClusterDiscoveryServiceClient(conn).StreamClusters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := wrong.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: "node1"}, TypeUrl: resource.RouteType}); err != nil {
		t.Fatal(err)
	}
	if _, err := wrong.Recv(); err == nil || !strings.Contains(err.Error(), "not served") {
		t.Errorf("routes over CDS: %v, want refused", err)
	}
}
