package xds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fibmesh/fibmesh/agent/xdsclient"
	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/perf/xdsbench"
)

// goroutinesIn counts the goroutines with a frame of fn (a function's
// qualified name, as stack traces print it) on their stack.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}

// waitFor polls cond every 10 ms until it holds, failing after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, with a deadline
	}
}

const (
	serveFrame  = "fibmesh/controller/xds.serve["
	senderFrame = "fibmesh/controller/xds.(*stream).runSender"
)

// TestIdleStreamGoroutines: an idle stream runs one goroutine of the
// server's own (its handler, in Recv); a sender runs only while
// something is to be sent, and an edit still reaches every stream.
func TestIdleStreamGoroutines(t *testing.T) {
	e := newEnv(t)
	var clients []*xdsclient.Client
	for i, delta := range []bool{true, true, true, false, false} {
		c := e.client(fmt.Sprintf("node%d", i%2+1), delta, nil)
		synced(t, c)
		clients = append(clients, c)
	}
	waitFor(t, "the senders to exit", func() bool { return goroutinesIn(senderFrame) == 0 })
	if n := goroutinesIn(serveFrame); n != len(clients) {
		t.Errorf("%d goroutines in serve for %d idle streams, want one each", n, len(clients))
	}
	vs := e.virtualService("production", "reviews")
	vs.Spec.Http[1].Route[0].Weight, vs.Spec.Http[1].Route[1].Weight = 30, 70
	e.push()
	for i, c := range clients {
		await(t, c, fmt.Sprintf("client %d: the edited route", i), func(u xdsclient.Update) bool {
			return u.NACK == nil && u.TypeURL == resource.RouteType
		})
	}
	waitFor(t, "the senders to exit after the edit", func() bool { return goroutinesIn(senderFrame) == 0 })
	if n := goroutinesIn(serveFrame); n != len(clients) {
		t.Errorf("after the edit: %d goroutines in serve for %d idle streams, want one each", n, len(clients))
	}
}

// TestRunEndEndsStreams: when Run returns, every open stream ends (the
// client sees its end, status OK) and a graceful gRPC stop returns
// without waiting for the agents, delta and state-of-the-world: with one
// goroutine per stream (its handler, blocked in Recv, is ended by
// writing the stream's status), and on the fallback (a goroutine per
// stream receives), on a server with GRPCServerOptions and a plain one.
func TestRunEndEndsStreams(t *testing.T) {
	snap, err := config.LoadDir("../testdata/cluster")
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Build(snap, nil, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { oneGoroutine = true }()
	for _, tc := range []struct {
		name   string
		direct bool
		opts   []grpc.ServerOption
	}{
		{"one goroutine, GRPCServerOptions", true, GRPCServerOptions()},
		{"one goroutine, plain gRPC server", true, nil},
		{"fallback, GRPCServerOptions", false, GRPCServerOptions()},
		{"fallback, plain gRPC server", false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			oneGoroutine = tc.direct
			sv := serveModel(t, Options{Debounce: time.Millisecond}, m, tc.opts...)
			g, stopRun, ran := sv.g, sv.stopRun, sv.ran

			conn, err := grpc.NewClient(sv.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			cctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ads := discovery.NewAggregatedDiscoveryServiceClient(conn)
			node := &core.Node{Id: "node1"}
			delta, err := ads.DeltaAggregatedResources(cctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := delta.Send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
				t.Fatal(err)
			}
			if _, err := delta.Recv(); err != nil {
				t.Fatal(err)
			}
			sotw, err := ads.StreamAggregatedResources(cctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := sotw.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
				t.Fatal(err)
			}
			if _, err := sotw.Recv(); err != nil {
				t.Fatal(err)
			}
			if tc.direct {
				waitFor(t, "the senders to exit", func() bool { return goroutinesIn(senderFrame) == 0 })
				if n := goroutinesIn(serveFrame); n != 2 {
					t.Errorf("%d goroutines in serve for 2 idle streams, want one each", n)
				}
			}

			stopRun()
			<-ran
			stopped := make(chan struct{})
			go func() { g.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(10 * time.Second):
				t.Fatal("GracefulStop still waits 10 s after Run returned: the streams did not end")
			}
			for name, recv := range map[string]func() error{
				"delta": func() error { _, err := delta.Recv(); return err },
				"sotw":  func() error { _, err := sotw.Recv(); return err },
			} {
				err := recv()
				for err == nil { // a response sent before the end
					err = recv()
				}
				if !errors.Is(err, io.EOF) {
					t.Errorf("%s stream ended with %v, want its end (io.EOF: status OK)", name, err)
				}
			}
		})
	}
}

// TestRunEndWhileSending: Run ends while pushes are being sent to many
// streams; every stream still ends and a graceful stop returns (senders
// blocked in Send are ended with their streams), with the race detector
// watching the status written beside a running Send.
func TestRunEndWhileSending(t *testing.T) {
	e := newEnv(t)
	conn, err := grpc.NewClient(e.addr, append(xdsclient.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ended := make(chan struct{}, 12)
	for i := range 12 {
		// The streams end with the server: what Run returns is not
		// the test's (Run's end is).
		c := xdsclient.New(conn, xdsclient.Config{Node: fmt.Sprintf("node%d", i%2+1), Delta: i%3 != 0, Subscriptions: AgentSubscriptions(fmt.Sprintf("node%d", i%2+1))})
		go func() { c.Run(ctx); ended <- struct{}{} }()
		synced(t, c)
	}
	for i := range 5 {
		vs := e.virtualService("production", "reviews")
		w := int32(10 + 10*i)
		vs.Spec.Http[1].Route[0].Weight, vs.Spec.Http[1].Route[1].Weight = w, 100-w
		e.push() // pushed; the senders are still sending it
	}
	e.stopRun()
	stopped := make(chan struct{})
	go func() { e.g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("GracefulStop still waits 10 s after Run returned amid pushes")
	}
	waitFor(t, "every stream's goroutines to end", func() bool {
		return goroutinesIn(serveFrame) == 0 && goroutinesIn(senderFrame) == 0
	})
	for range 12 {
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			t.Fatal("a client's stream did not end with the server")
		}
	}
}

// TestBlockedSendEndsOnStop: a client that never reads leaves its
// stream's sender waiting in Send (flow control: a first sync of 200
// services and 2,000 pods is more than the windows hold). Its status
// cannot be written either (it queues behind the data), so a graceful
// stop waits for that client, as it did with the sender in the handler
// (fibmesh-controller stops hard after 5 s); a hard stop then ends the
// stream, its handler and its sender.
func TestBlockedSendEndsOnStop(t *testing.T) {
	defer func() { oneGoroutine = true }()
	for _, direct := range []bool{true, false} {
		t.Run(fmt.Sprintf("one goroutine=%v", direct), func(t *testing.T) {
			oneGoroutine = direct
			mesh, err := xdsbench.New(200, 2000, 10)
			if err != nil {
				t.Fatal(err)
			}
			m, err := model.Build(mesh.Snapshot, nil, model.Options{})
			if err != nil {
				t.Fatal(err)
			}
			sv := serveModel(t, Options{Debounce: time.Millisecond, SyncConcurrency: -1}, m, GRPCServerOptions()...)
			g, stopRun, ran := sv.g, sv.stopRun, sv.ran

			conn, err := grpc.NewClient(sv.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			cctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			delta, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(cctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, typ := range Types {
				if err := delta.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: xdsbench.NodeName(0)}, TypeUrl: typ}); err != nil {
					t.Fatal(err)
				}
			}
			// Never read: the sender fills the windows and waits in Send.
			stuck := 0
			waitFor(t, "the sender to wait in Send", func() bool {
				if goroutinesIn(senderFrame) == 1 {
					stuck++
				} else {
					stuck = 0
				}
				return stuck >= 20 // still there after 200 ms
			})
			stopRun()
			<-ran
			g.Stop()
			waitFor(t, "the stream's goroutines to end", func() bool {
				return goroutinesIn(serveFrame) == 0 && goroutinesIn(senderFrame) == 0
			})
		})
	}
}

// servedModel is a Server serving a model on loopback, with its gRPC
// server and Run in goroutines of their own, both ended by t's cleanup.
type servedModel struct {
	g       *grpc.Server
	addr    string
	stopRun context.CancelFunc
	ran     chan struct{} // closed when Run returned
}

// serveModel starts a Server with o on a gRPC server with gopts, pushes
// m and waits for that first push.
func serveModel(t *testing.T, o Options, m *model.Model, gopts ...grpc.ServerOption) *servedModel {
	t.Helper()
	s := New(o)
	g, addr := serveGRPC(t, s, gopts...)
	ctx, stopRun := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { s.Run(ctx); close(ran) }()
	t.Cleanup(func() { stopRun(); <-ran })
	s.Update(m)
	<-s.FirstPush()
	return &servedModel{g, addr, stopRun, ran}
}

// serveGRPC serves s on a gRPC server with gopts on loopback, stopped by
// t's cleanup, and returns it and its address.
func serveGRPC(t *testing.T, s *Server, gopts ...grpc.ServerOption) (*grpc.Server, string) {
	t.Helper()
	g := grpc.NewServer(gopts...)
	s.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { g.Serve(ln); close(served) }()
	t.Cleanup(func() { g.Stop(); <-served })
	return g, ln.Addr().String()
}
