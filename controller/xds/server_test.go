package xds

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	securityapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/fibmesh/fibmesh/agent/xdsclient"
	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/controller/ca"
	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/controller/xds/envoy"
	"github.com/fibmesh/fibmesh/controller/xds/fds"
)

// env is a Server on a real gRPC listener, fed models of examples/.
type env struct {
	t    *testing.T
	srv  *Server
	addr string
	snap *config.Snapshot
	m    *model.Model
	ctx  context.Context
	// g is the gRPC server; stopRun ends the server's Run.
	g       *grpc.Server
	stopRun context.CancelFunc
}

func newEnv(t *testing.T, opts ...grpc.ServerOption) *env {
	t.Helper()
	snap, err := config.LoadDir("../testdata/cluster")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{t: t, snap: snap, ctx: ctx}
	e.srv = New(Options{Debounce: time.Millisecond})
	authority, err := ca.New("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.SetTrustBundle(ca.BundleSecret(envoy.RootCASecret, authority.Bundle())); err != nil {
		t.Fatal(err)
	}
	// The server's own options (its codec, fixed windows), as
	// fibmesh-controller runs it, then the test's.
	g := grpc.NewServer(append(GRPCServerOptions(), opts...)...)
	e.g, e.stopRun = g, cancel
	e.srv.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	done := make(chan struct{}, 2)
	go func() { g.Serve(ln); done <- struct{}{} }()
	go func() { e.srv.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		g.Stop()
		<-done
		<-done
	})
	e.push()
	return e
}

// push builds the next model of e.snap and waits until the server has
// pushed it.
func (e *env) push() {
	e.t.Helper()
	m, err := model.Build(e.snap, e.m, model.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	e.m = m
	e.srv.Update(m)
	for {
		select {
		case v := <-e.srv.Pushed():
			if v == m.Version {
				return
			}
		case <-time.After(10 * time.Second):
			e.t.Fatalf("model version %d not pushed in 10s", m.Version)
		}
	}
}

// It returns a copy, which replaces the VirtualService in the snapshot:
// objects in a snapshot are never modified (a store replaces an object it
// changes), and model.Build reuses what it built from an object it saw
// before.
func (e *env) virtualService(ns, name string) *networkingv1.VirtualService {
	for i, r := range e.snap.Resources {
		if vs, ok := r.Object.(*networkingv1.VirtualService); ok && vs.Namespace == ns && vs.Name == name {
			c := vs.DeepCopy()
			e.snap.Resources[i].Object = c
			return c
		}
	}
	e.t.Fatalf("no VirtualService %s/%s in examples", ns, name)
	return nil
}

// client starts an agent-like client of node; stop it with the returned
// function (the test's cleanup does too).
func (e *env) client(node string, delta bool, validate func(string, map[string]proto.Message) error) *xdsclient.Client {
	e.t.Helper()
	conn, err := grpc.NewClient(e.addr, append(xdsclient.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		e.t.Fatal(err)
	}
	c := xdsclient.New(conn, xdsclient.Config{Node: node, Delta: delta, Validate: validate, Subscriptions: AgentSubscriptions(node)})
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("client %s: %v", node, err)
		}
		conn.Close()
	})
	return c
}

// await reads c's updates until ok accepts one, failing after 10 s.
func await(t *testing.T, c *xdsclient.Client, what string, ok func(xdsclient.Update) bool) xdsclient.Update {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case u := <-c.Updates():
			if ok(u) {
				return u
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// synced waits until the client has accepted every subscribed type.
func synced(t *testing.T, c *xdsclient.Client) {
	t.Helper()
	seen := map[string]bool{}
	await(t, c, "a first response of every type", func(u xdsclient.Update) bool {
		if u.NACK == nil {
			seen[u.TypeURL] = true
		}
		return len(seen) == len(Types)
	})
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConsistentSnapshot(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			e := newEnv(t)
			c := e.client("node1", delta, nil)
			synced(t, c)

			clusters := c.Resources(resource.ClusterType)
			eds := c.Resources(resource.EndpointType)
			for name, r := range clusters {
				cl := r.(*clusterv3.Cluster)
				if cl.GetType() == clusterv3.Cluster_EDS {
					if _, ok := eds[name]; !ok {
						t.Errorf("EDS cluster %s has no ClusterLoadAssignment", name)
					}
				}
			}
			if _, ok := clusters["outbound|9080|v2|reviews.production.svc.cluster.local"]; !ok {
				t.Errorf("no reviews v2 subset cluster; got %d clusters", len(clusters))
			}
			cla := eds["outbound|9080|v1|reviews.production.svc.cluster.local"].(*endpointv3.ClusterLoadAssignment)
			if got := endpointAddrs(cla); len(got) != 1 || got[0] != "10.200.1.11" {
				t.Errorf("reviews v1 endpoints = %v, want [10.200.1.11]", got)
			}
			routes := c.Resources(resource.RouteType)
			for _, l := range c.Resources(resource.ListenerType) {
				for _, rds := range rdsNames(t, l.(*listenerv3.Listener)) {
					if _, ok := routes[rds]; !ok {
						t.Errorf("listener %s uses route config %s, which was not sent", l.(*listenerv3.Listener).Name, rds)
					}
				}
			}
			ft := c.Resources(fds.TypeURL)
			local := ft["node1"].(*fibv1.FlowTable)
			var pods []string
			for _, p := range local.LocalPods {
				pods = append(pods, p.Name)
			}
			if strings.Join(pods, ",") != "frontend,reviews-v1" {
				t.Errorf("node1's local pods = %v, want frontend,reviews-v1", pods)
			}
			if _, ok := ft["node2"]; ok {
				t.Error("node1 got node2's flow table")
			}
			services := 0
			for _, name := range xdsapi.MeshShardNames() {
				sh, ok := ft[name].(*fibv1.FlowTable)
				if !ok {
					t.Fatalf("no flow table shard %s", name)
				}
				if sh.Node != name {
					t.Errorf("shard %s names itself %q", name, sh.Node)
				}
				services += len(sh.Services)
			}
			if services == 0 {
				t.Error("the shared flow table's shards have no services")
			}
			if _, ok := c.Resources(resource.SecretType)[envoy.RootCASecret]; !ok {
				t.Error("no trust bundle over SDS")
			}
			waitSynced(t, e.srv, "node1")
		})
	}
}

func endpointAddrs(cla *endpointv3.ClusterLoadAssignment) []string {
	var out []string
	for _, l := range cla.Endpoints {
		for _, ep := range l.LbEndpoints {
			out = append(out, ep.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
		}
	}
	return out
}

func rdsNames(t *testing.T, l *listenerv3.Listener) []string {
	var out []string
	for _, fc := range l.FilterChains {
		for _, f := range fc.Filters {
			var h hcm.HttpConnectionManager
			if f.GetTypedConfig().MessageIs(&h) {
				if err := f.GetTypedConfig().UnmarshalTo(&h); err != nil {
					t.Fatal(err)
				}
				if n := h.GetRds().GetRouteConfigName(); n != "" {
					out = append(out, n)
				}
			}
		}
	}
	return out
}

// waitSynced waits until the server's status shows node with every type
// ACKed at the version sent.
func waitSynced(t *testing.T, s *Server, node string) NodeStatus {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, ns := range s.Status() {
			if ns.Node != node || len(ns.Types) != len(Types) {
				continue
			}
			all := true
			for _, ts := range ns.Types {
				all = all && ts.Synced()
			}
			if all {
				return ns
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s not synced: %+v", node, s.Status())
		}
		time.Sleep(5 * time.Millisecond) // polling a status, not standing in for an event
	}
}

const reviewsRoute = "reviews.production.svc.cluster.local:9080"

func weights(t *testing.T, rc proto.Message) []uint32 {
	var out []uint32
	for _, vh := range rc.(*routev3.RouteConfiguration).VirtualHosts {
		for _, r := range vh.Routes {
			for _, wc := range r.GetRoute().GetWeightedClusters().GetClusters() {
				out = append(out, wc.GetWeight().GetValue())
			}
		}
	}
	return out
}

func setCanary(e *env, v1, v2 int32) {
	vs := e.virtualService("production", "reviews")
	vs.Spec.Http[1].Route[0].Weight = v1
	vs.Spec.Http[1].Route[1].Weight = v2
	e.push()
}

// TestEditNACKRecover: a VirtualService edit reaches the agent; an edit
// the agent refuses is NACKed, visible in Status, not resent, and the
// agent keeps its last good routes; the next good edit is accepted.
func TestEditNACKRecover(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			e := newEnv(t)
			refuse := errors.New("weight 50 refused by test policy")
			c := e.client("node1", delta, func(typeURL string, rs map[string]proto.Message) error {
				if typeURL == resource.RouteType {
					if rc, ok := rs[reviewsRoute]; ok && slicesContains(weights(t, rc), 50) {
						return refuse
					}
				}
				return nil
			})
			synced(t, c)
			if w := weights(t, c.Resources(resource.RouteType)[reviewsRoute]); !equalU32(w, 90, 10) {
				t.Fatalf("initial canary weights %v, want [90 10]", w)
			}

			setCanary(e, 80, 20)
			u := await(t, c, "the 80/20 edit", func(u xdsclient.Update) bool { return u.TypeURL == resource.RouteType })
			if u.NACK != nil || !equalU32(weights(t, c.Resources(resource.RouteType)[reviewsRoute]), 80, 20) {
				t.Fatalf("80/20 edit: nack=%v weights=%v", u.NACK, weights(t, c.Resources(resource.RouteType)[reviewsRoute]))
			}
			if len(u.Changed) != 1 || u.Changed[0] != reviewsRoute {
				if delta {
					t.Errorf("delta edit carried %v, want only %s", u.Changed, reviewsRoute)
				}
			}
			good := waitSynced(t, e.srv, "node1")

			setCanary(e, 50, 50)
			u = await(t, c, "the refused 50/50 edit", func(u xdsclient.Update) bool { return u.TypeURL == resource.RouteType })
			if u.NACK == nil {
				t.Fatal("50/50 edit was not NACKed")
			}
			if w := weights(t, c.Resources(resource.RouteType)[reviewsRoute]); !equalU32(w, 80, 20) {
				t.Errorf("after the NACK the client holds %v, want the last good [80 20]", w)
			}
			st := nodeStatus(t, e.srv, "node1", func(ns NodeStatus) bool {
				ts := typeStatus(ns, resource.RouteType)
				return ts.NACK != nil
			})
			rds := typeStatus(st, resource.RouteType)
			if !strings.Contains(rds.NACK.Reason, "weight 50 refused") || rds.NACKs != 1 {
				t.Errorf("RDS status after NACK = %+v", rds)
			}
			if rds.Acked != typeStatus(good, resource.RouteType).Acked {
				t.Errorf("acked version moved on a NACK: %s → %s", typeStatus(good, resource.RouteType).Acked, rds.Acked)
			}

			// The refused version is not resent: the next response is the
			// next edit's.
			setCanary(e, 70, 30)
			u = await(t, c, "the 70/30 edit", func(u xdsclient.Update) bool { return u.TypeURL == resource.RouteType })
			if u.NACK != nil {
				t.Fatalf("the response after a NACK was refused again (%v): the refused version was resent", u.NACK)
			}
			if w := weights(t, c.Resources(resource.RouteType)[reviewsRoute]); !equalU32(w, 70, 30) {
				t.Errorf("after recovery weights %v, want [70 30]", w)
			}
			waitSynced(t, e.srv, "node1")
		})
	}
}

// TestIncremental: a change that affects node2 only sends nothing to
// node1: node1's next response after it is the one a later mesh-wide
// edit causes.
func TestIncremental(t *testing.T) {
	e := newEnv(t)
	c1 := e.client("node1", true, nil)  // delta
	c2 := e.client("node2", false, nil) // state of the world, on the same server

	synced(t, c1)
	synced(t, c2)
	waitSynced(t, e.srv, "node1")
	waitSynced(t, e.srv, "node2")
	for _, ns := range e.srv.Status() {
		if ns.Streams != 1 {
			t.Errorf("node %s: %d streams, want 1 (delta and SotW streams mixed up?)", ns.Node, ns.Streams)
		}
	}

	// ratings (on node2) becomes PERMISSIVE: node2's port policies and
	// inbound listeners change; nothing of node1's does.
	addPermissive(e.snap, "production", "ratings")
	e.push()
	got := map[string]bool{}
	await(t, c2, "node2's flow table and listeners", func(u xdsclient.Update) bool {
		got[u.TypeURL] = true
		return got[fds.TypeURL] && got[resource.ListenerType]
	})
	var mode fibv1.MTLSMode
	for _, pp := range c2.Resources(fds.TypeURL)["node2"].(*fibv1.FlowTable).PortPolicies {
		if pp.Ip == "10.200.2.12" {
			mode = pp.Mode
		}
	}
	if mode != fibv1.MTLSMode_PERMISSIVE {
		t.Errorf("ratings' port policy on node2 = %v, want PERMISSIVE", mode)
	}

	setCanary(e, 60, 40)
	u := await(t, c1, "node1's next response", func(xdsclient.Update) bool { return true })
	if u.TypeURL != resource.RouteType {
		t.Errorf("node1's first response after a node2-only change is %s %v, want the later RDS edit", ShortType(u.TypeURL), u.Changed)
	}
}

// addPermissive adds a PeerAuthentication making the pods labelled
// app=<app> in namespace PERMISSIVE, as a store would.
func addPermissive(snap *config.Snapshot, namespace, app string) {
	pa := &securityv1.PeerAuthentication{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: app},
		Spec: securityapi.PeerAuthentication{
			Selector: &typeapi.WorkloadSelector{MatchLabels: map[string]string{"app": app}},
			Mtls:     &securityapi.PeerAuthentication_MutualTLS{Mode: securityapi.PeerAuthentication_MutualTLS_PERMISSIVE},
		},
	}
	snap.Resources = append(snap.Resources, config.Resource{
		GVK:       schema.GroupVersionKind{Group: "security.istio.io", Version: "v1", Kind: "PeerAuthentication"},
		Namespace: pa.Namespace, Name: pa.Name, Object: pa,
	})
}

func nodeStatus(t *testing.T, s *Server, node string, ok func(NodeStatus) bool) NodeStatus {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, ns := range s.Status() {
			if ns.Node == node && ok(ns) {
				return ns
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s status never matched: %+v", node, s.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func typeStatus(ns NodeStatus, typeURL string) TypeStatus {
	for _, ts := range ns.Types {
		if ts.TypeURL == typeURL {
			return ts
		}
	}
	return TypeStatus{}
}

func slicesContains(s []uint32, v uint32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func equalU32(got []uint32, want ...uint32) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// TestListenerNACK: a state-of-the-world client refusing its listeners
// (the per-node snapshot cache, not a LinearCache) is not sent the refused
// version again; the next change's listeners arrive and are accepted.
func TestListenerNACK(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			e := newEnv(t)
			c := e.client("node1", delta, func(typeURL string, rs map[string]proto.Message) error {
				if _, plain := rs[envoy.InboundPlaintextListener]; typeURL == resource.ListenerType && plain {
					return errors.New("test policy: no plaintext listener on node1")
				}
				return nil
			})
			synced(t, c)
			// frontend (node1) becomes PERMISSIVE: node1 gets a plaintext listener.
			addPermissive(e.snap, "production", "frontend")
			e.push()
			u := await(t, c, "node1's new listeners", func(u xdsclient.Update) bool { return u.TypeURL == resource.ListenerType })
			if u.NACK == nil {
				t.Fatal("listeners with a plaintext listener were accepted")
			}
			if _, plain := c.Resources(resource.ListenerType)[envoy.InboundPlaintextListener]; plain {
				t.Error("the refused listeners are in force")
			}
			nodeStatus(t, e.srv, "node1", func(ns NodeStatus) bool { return typeStatus(ns, resource.ListenerType).NACK != nil })

			// Back to STRICT: the next listeners are the next change's, accepted.
			e.snap.Resources = e.snap.Resources[:len(e.snap.Resources)-1]
			e.push()
			u = await(t, c, "node1's listeners after the fix", func(u xdsclient.Update) bool { return u.TypeURL == resource.ListenerType })
			if u.NACK != nil {
				t.Fatalf("the listeners after a NACK were refused again (%v): the refused version was resent", u.NACK)
			}
			waitSynced(t, e.srv, "node1")
		})
	}
}
