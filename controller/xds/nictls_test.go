package xds

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/fibmesh/fibmesh/agent/xdsclient"
	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/controller/config"
)

// nicAuth authenticates "Bearer <node>" as that node.
func nicAuth(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get("authorization")
	if len(v) != 1 || !strings.HasPrefix(v[0], "Bearer ") {
		return "", status.Error(codes.Unauthenticated, "no token")
	}
	return strings.TrimPrefix(v[0], "Bearer "), nil
}

// nicClient runs an agent-like client of node reporting md, authenticated
// as node unless anonymous; the returned function stops it.
func nicClient(t *testing.T, e *env, node string, delta, anonymous bool, md *structpb.Struct) (*xdsclient.Client, func()) {
	t.Helper()
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c := xdsclient.New(conn, xdsclient.Config{Node: node, Delta: delta, Metadata: md, Subscriptions: AgentSubscriptions(node)})
	ctx, cancel := context.WithCancel(e.ctx)
	if !anonymous {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+node)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("client %s: %v", node, err)
			}
			conn.Close()
		})
	}
	t.Cleanup(stop)
	return c, stop
}

// marks returns the node of each route marked nic_tls_offload, and of
// each not, in the flow tables held.
func marks(held map[string]proto.Message) (on, off []string) {
	for _, m := range held {
		for _, r := range m.(*fibv1.FlowTable).GetRoutes() {
			if r.GetNicTlsOffload() {
				on = append(on, r.GetNode())
			} else {
				off = append(off, r.GetNode())
			}
		}
	}
	slices.Sort(on)
	slices.Sort(off)
	return slices.Compact(on), slices.Compact(off)
}

// awaitMarks polls c's flow tables until the routes to the nodes in on
// are marked and those to off are not.
func awaitMarks(t *testing.T, c *xdsclient.Client, on, off []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		gotOn, gotOff := marks(c.Resources(xdsapi.FlowTableType))
		if slices.Equal(gotOn, on) && slices.Equal(gotOff, off) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("routes marked nic_tls_offload go to %v, unmarked to %v; want %v and %v", gotOn, gotOff, on, off)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Two nodes, node1's agent reports a kTLS-offloading NIC and node2's
// does not: every route to node1 carries nic_tls_offload, none to node2,
// in both protocols; an anonymous stream's report changes nothing; a
// changed report is pushed; a report outlives its stream.
func TestNICTLSFromNodeMetadata(t *testing.T) {
	var events []Event
	var evMu sync.Mutex
	e := newEnv(t, grpc.ChainStreamInterceptor(RequireNode(nicAuth)))
	// The same server without authentication (the controller's
	// plaintext debugging port): its streams speak for no node.
	anonAddr := serveAnonymous(t, e.srv)
	e.srv.mu.Lock() // noteNICTLS reads OnEvent under mu
	e.srv.opts.OnEvent = func(ev Event) {
		evMu.Lock()
		defer evMu.Unlock()
		if ev.Kind == "nic-tls" {
			events = append(events, ev)
		}
	}
	e.srv.mu.Unlock()
	for i, ip := range []string{"10.100.0.1", "10.100.0.2"} {
		name := []string{"node1", "node2"}[i]
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:   corev1.NodeSpec{PodCIDR: "10.200." + name[4:] + ".0/24"},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}}}
		e.snap.Resources = append(e.snap.Resources, config.Resource{GVK: schema.GroupVersionKind{Version: "v1", Kind: "Node"}, Name: name, Object: n})
	}
	e.push()
	both := []string{"node1", "node2"}

	for _, delta := range []bool{true, false} {
		name := map[bool]string{true: "delta", false: "state of the world"}[delta]
		t.Run(name, func(t *testing.T) {
			// Nothing reported yet (or node1's report from the
			// previous subtest, which outlives its stream: reset it).
			c2, stop2 := nicClient(t, e, "node2", delta, false, fibv1.NICTLSMetadata(false))
			c1, stop1 := nicClient(t, e, "node1", delta, false, fibv1.NICTLSMetadata(false))
			awaitMarks(t, c2, nil, both)
			stop1()

			c1, stop1 = nicClient(t, e, "node1", delta, false, fibv1.NICTLSMetadata(true))
			awaitMarks(t, c1, []string{"node1"}, []string{"node2"})
			awaitMarks(t, c2, []string{"node1"}, []string{"node2"})

			// A stream that is not authenticated speaks for no node.
			anon, stopAnon := nicClient(t, &env{addr: anonAddr, ctx: e.ctx}, "node2", delta, true, fibv1.NICTLSMetadata(true))
			synced(t, anon)
			stopAnon()
			e.push() // a model push after the anonymous report: still only node1
			servedMarks(t, e.srv, []string{"node1"}, []string{"node2"})

			// The report outlives the stream, and a model change that
			// rebuilds the flow tables (a node added) keeps it.
			stop1()
			extra := "extra-" + strings.ReplaceAll(name, " ", "-")
			e.snap.Resources = append(e.snap.Resources, config.Resource{GVK: schema.GroupVersionKind{Version: "v1", Kind: "Node"}, Name: extra,
				Object: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: extra}}})
			e.push()
			servedMarks(t, e.srv, []string{"node1"}, []string{"node2"})

			// A changed report is pushed: node1 stops offloading. The
			// client's Generation of FDS moves with it (the agent's
			// NICTLS index is rebuilt on that).
			gen := c2.Generation(xdsapi.FlowTableType)
			c1, stop1 = nicClient(t, e, "node1", delta, false, fibv1.NICTLSMetadata(false))
			awaitMarks(t, c2, nil, both)
			if g := c2.Generation(xdsapi.FlowTableType); gen == 0 || g <= gen {
				t.Errorf("FDS generation %d before the change, %d after: want it above 0 and moving", gen, g)
			}
			awaitMarks(t, c1, nil, both)
			stop1()
			stop2()
		})
	}

	// A value that is not a bool is no offload, and said so.
	bad := &structpb.Struct{Fields: map[string]*structpb.Value{fibv1.NodeMetadataNICTLS: structpb.NewStringValue("yes")}}
	c3, _ := nicClient(t, e, "node1", true, false, bad)
	awaitMarks(t, c3, nil, both)
	evMu.Lock()
	defer evMu.Unlock()
	if !slices.ContainsFunc(events, func(ev Event) bool {
		return ev.Node == "node1" && strings.Contains(ev.Reason, "not a bool") && strings.Contains(ev.Reason, "taken as no offload")
	}) {
		t.Errorf("no nic-tls event says node1's bad value was taken as no offload: %+v", events)
	}
	if !slices.ContainsFunc(events, func(ev Event) bool { return ev.Node == "node1" && strings.Contains(ev.Reason, "NIC offloads kTLS") }) {
		t.Errorf("no nic-tls event says node1 offloads: %+v", events)
	}
}

// servedMarks checks the flow tables the server serves now: the routes
// to the nodes in on are marked, those to off are not.
func servedMarks(t *testing.T, s *Server, on, off []string) {
	t.Helper()
	gotOn, gotOff := marks(heldBy(s, xdsapi.FlowTableType))
	if !slices.Equal(gotOn, on) || !slices.Equal(gotOff, off) {
		t.Errorf("served routes marked nic_tls_offload go to %v, unmarked to %v; want %v and %v", gotOn, gotOff, on, off)
	}
}

// serveAnonymous serves s on a second gRPC server without RequireNode.
func serveAnonymous(t *testing.T, s *Server) string {
	t.Helper()
	_, addr := serveGRPC(t, s)
	return addr
}
