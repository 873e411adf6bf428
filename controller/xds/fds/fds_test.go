package fds

import (
	"cmp"
	"reflect"
	"slices"
	"strings"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	securityapi "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/controller/config"
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
			{Prefix: "10.200.1.11/32", NextHop: "10.100.0.1", Node: "node1", IdentityId: a},
			{Prefix: "10.200.2.0/24", NextHop: "10.100.0.2", Node: "node2"},
			{Prefix: "10.201.0.5/32", NextHop: "10.100.0.2", Node: "node2", IdentityId: b},
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
	if d := gocmp.Diff(wantMesh, tb.Mesh, protocmp.Transform()); d != "" {
		t.Errorf("mesh table (-want +got):\n%s", d)
	}
	wantNodes := map[string]*fibv1.FlowTable{
		"node1": {Node: "node1",
			LocalPods: []*fibv1.LocalPod{{Namespace: "prod", Name: "a", Ip: "10.200.1.11", IdentityId: a, Workload: "a"}},
			PortPolicies: []*fibv1.PortPolicy{
				{Ip: "10.200.1.11", Port: 5353, Protocol: fibv1.Protocol_UDP, Mode: fibv1.MTLSMode_STRICT},
				{Ip: "10.200.1.11", Port: 8080, Protocol: fibv1.Protocol_TCP, Mode: fibv1.MTLSMode_STRICT},
				{Ip: "10.200.1.11", Port: 9090, Protocol: fibv1.Protocol_TCP, Mode: fibv1.MTLSMode_PERMISSIVE},
			}},
		"node2": {Node: "node2",
			LocalPods: []*fibv1.LocalPod{{Namespace: "prod", Name: "b", Ip: "10.201.0.5", IdentityId: b, Workload: "b"}},
			PortPolicies: []*fibv1.PortPolicy{
				// an endpoint that is not ready still gets its policy
				{Ip: "10.201.0.5", Port: 53, Protocol: fibv1.Protocol_UDP, Mode: fibv1.MTLSMode_PERMISSIVE},
				{Ip: "10.201.0.5", Port: 80, Protocol: fibv1.Protocol_TCP, Mode: fibv1.MTLSMode_PERMISSIVE},
			}},
		"node3": {Node: "node3"},
	}
	if d := gocmp.Diff(wantNodes, tb.Nodes, protocmp.Transform()); d != "" {
		t.Errorf("node tables (-want +got):\n%s", d)
	}
}

func TestBuildDeterministic(t *testing.T) {
	first := Build(testModel())
	for range 20 {
		if d := gocmp.Diff(first, Build(testModel()), protocmp.Transform(), cmpopts.IgnoreUnexported(Tables{})); d != "" {
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

// TestOutsideMesh: a pod outside the mesh (a label on it, or on its
// namespace, or hostNetwork) is still a local pod (the FIB forwards to it), with no
// identity, and its ports are DISABLE whatever PeerAuthentication says,
// so XDP does not drop plaintext to it; the others keep their STRICT.
func TestOutsideMesh(t *testing.T) {
	ns := func(name string, labels map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	pod := func(ns, name, ip string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
			Spec: corev1.PodSpec{NodeName: "node1", ServiceAccountName: name}, Status: corev1.PodStatus{PodIP: ip}}
	}
	strict := &securityv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: model.RootNamespace, Name: "default"}}
	strict.Spec.Mtls = &securityapi.PeerAuthentication_MutualTLS{Mode: securityapi.PeerAuthentication_MutualTLS_STRICT}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "s"}, Spec: corev1.ServiceSpec{
		ClusterIP: "10.96.0.1", Ports: []corev1.ServicePort{{Name: "tcp", Port: 5432}}}}
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "s-1", Labels: map[string]string{discoveryv1.LabelServiceName: "s"}}}
	for _, p := range []string{"in", "out"} {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{map[string]string{"in": "10.200.1.11", "out": "10.200.1.12"}[p]},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "prod", Name: p}})
	}
	hostNet := pod("prod", "hostnet", "10.100.0.1", nil) // shares node1's IP
	hostNet.Spec.HostNetwork = true
	objs := []runtime.Object{
		ns("prod", nil), ns("legacy", map[string]string{model.LabelCapture: model.CaptureDisabled}), strict, svc, es,
		pod("prod", "in", "10.200.1.11", nil),
		pod("prod", "out", "10.200.1.12", map[string]string{model.LabelDataplaneMode: model.DataplaneModeNone}),
		pod("legacy", "old", "10.200.1.13", nil),
		hostNet,
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}, Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.100.0.1"}}}},
	}
	s := &config.Snapshot{}
	for _, o := range objs {
		meta := o.(metav1.Object)
		s.Resources = append(s.Resources, config.Resource{GVK: schema.GroupVersionKind{Kind: reflect.TypeOf(o).Elem().Name()},
			Namespace: meta.GetNamespace(), Name: meta.GetName(), Object: o})
	}
	m, err := model.Build(s, nil, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tb := Build(m)
	in := IdentityID("spiffe://cluster.local/ns/prod/sa/in")
	want := &fibv1.FlowTable{Node: "node1",
		LocalPods: []*fibv1.LocalPod{
			{Namespace: "legacy", Name: "old", Ip: "10.200.1.13", Workload: "old"},
			{Namespace: "prod", Name: "hostnet", Ip: "10.100.0.1", Workload: "hostnet"},
			{Namespace: "prod", Name: "in", Ip: "10.200.1.11", IdentityId: in, Workload: "in"},
			{Namespace: "prod", Name: "out", Ip: "10.200.1.12", Workload: "out"},
		},
		PortPolicies: []*fibv1.PortPolicy{
			{Ip: "10.200.1.11", Port: 5432, Protocol: fibv1.Protocol_TCP, Mode: fibv1.MTLSMode_STRICT},
			{Ip: "10.200.1.12", Port: 5432, Protocol: fibv1.Protocol_TCP, Mode: fibv1.MTLSMode_DISABLE},
		},
	}
	if d := gocmp.Diff(want, tb.Nodes["node1"], protocmp.Transform()); d != "" {
		t.Errorf("node table (-want +got):\n%s", d)
	}
	if d := gocmp.Diff([]*fibv1.Identity{{Id: in, SpiffeId: "spiffe://cluster.local/ns/prod/sa/in"}}, tb.Mesh.Identities, protocmp.Transform()); d != "" {
		t.Errorf("identities (-want +got): only the captured pod's\n%s", d)
	}
	wantRoutes := []*fibv1.Route{ // host routes: the identity of pods in the mesh only
		{Prefix: "10.100.0.1/32", NextHop: "10.100.0.1", Node: "node1"}, // hostNetwork: no identity
		{Prefix: "10.200.1.11/32", NextHop: "10.100.0.1", Node: "node1", IdentityId: in},
		{Prefix: "10.200.1.12/32", NextHop: "10.100.0.1", Node: "node1"},
		{Prefix: "10.200.1.13/32", NextHop: "10.100.0.1", Node: "node1"},
	}
	if d := gocmp.Diff(wantRoutes, tb.Mesh.Routes, protocmp.Transform()); d != "" {
		t.Errorf("routes (-want +got):\n%s", d)
	}
	for _, sv := range tb.Mesh.Services {
		for _, be := range sv.Backends {
			if be.Ip == "10.200.1.12" && be.IdentityId != 0 {
				t.Errorf("backend %s of %s has identity %d; want none", be.Ip, sv.Vip, be.IdentityId)
			}
		}
	}
}

// The shards hold every route, VIP and identity of the shared table once,
// each in the shard of its key, in the table's order.
func TestShards(t *testing.T) {
	tb := Build(testModel())
	shards := tb.Shards()
	names := xdsapi.MeshShardNames()
	if len(shards) != len(names) {
		t.Fatalf("%d shards, want %d", len(shards), len(names))
	}
	merged := &fibv1.FlowTable{}
	for i, sh := range shards {
		if sh.Node != names[i] {
			t.Errorf("shard %d names itself %q, want %q", i, sh.Node, names[i])
		}
		for _, r := range sh.Routes {
			if want := xdsapi.MeshShard(xdsapi.MeshShardOf(r.Prefix)); sh.Node != want {
				t.Errorf("route %s in shard %s, want %s", r.Prefix, sh.Node, want)
			}
		}
		for _, id := range sh.Identities {
			if want := xdsapi.MeshShard(xdsapi.MeshShardOf(id.SpiffeId)); sh.Node != want {
				t.Errorf("identity %s in shard %s, want %s", id.SpiffeId, sh.Node, want)
			}
		}
		for _, v := range sh.Services {
			if want := xdsapi.MeshServiceShard(xdsapi.MeshServiceShardOf(v.Hostname)); sh.Node != want {
				t.Errorf("VIP of %s in shard %s, want %s", v.Hostname, sh.Node, want)
			}
		}
		merged.Routes = append(merged.Routes, sh.Routes...)
		merged.Services = append(merged.Services, sh.Services...)
		merged.Identities = append(merged.Identities, sh.Identities...)
	}
	sortAll := func(ft *fibv1.FlowTable) {
		slices.SortFunc(ft.Routes, func(a, b *fibv1.Route) int { return strings.Compare(a.Prefix+a.Node, b.Prefix+b.Node) })
		slices.SortStableFunc(ft.Services, func(a, b *fibv1.ServiceVIP) int { return strings.Compare(a.Vip, b.Vip) })
		slices.SortFunc(ft.Identities, func(a, b *fibv1.Identity) int { return cmp.Compare(a.Id, b.Id) })
	}
	whole := proto.Clone(tb.Mesh).(*fibv1.FlowTable)
	sortAll(whole)
	sortAll(merged)
	if d := gocmp.Diff(whole, merged, protocmp.Transform()); d != "" {
		t.Errorf("shards merged differ from the shared table (-table +shards):\n%s", d)
	}
}

// A readiness change patched into the last tables gives what Build gives.
func TestWithServices(t *testing.T) {
	m := testModel()
	before := Build(m)
	next := testModel()
	ep := next.Services[0].Endpoints[1]
	ep.Ready = !ep.Ready
	got, ok := before.WithServices(next, map[string]bool{next.Services[0].Hostname: true})
	if !ok {
		t.Fatal("WithServices refused a readiness change")
	}
	want := Build(next)
	if d := gocmp.Diff(want.Mesh, got.Mesh, protocmp.Transform()); d != "" {
		t.Errorf("patched mesh table differs from a build (-build +patched):\n%s", d)
	}
	if gocmp.Equal(before.Mesh, got.Mesh, protocmp.Transform()) {
		t.Error("the readiness change changed nothing: the test tests nothing")
	}
	// The shards are a build's, and only the changed host's shard is a
	// new message: the server skips the others by identity.
	if d := gocmp.Diff(want.Shards(), got.Shards(), protocmp.Transform()); d != "" {
		t.Errorf("patched shards differ from a build's (-build +patched):\n%s", d)
	}
	touched := xdsapi.MeshShards + xdsapi.MeshServiceShardOf(next.Services[0].Hostname)
	for i, sh := range got.Shards() {
		if same := sh == before.Shards()[i]; same == (i == touched) {
			t.Errorf("shard %d: shared with the tables before = %v, want %v", i, same, i != touched)
		}
	}
	// A VIP and port shared with another host: Build keeps the first by
	// hostname, so WithServices declines.
	dup := testModel()
	dup.Services[1].VIPs = dup.Services[0].VIPs
	dup.Services[1].Ports = dup.Services[0].Ports
	if _, ok := Build(dup).WithServices(dup, map[string]bool{dup.Services[1].Hostname: true}); ok {
		t.Error("WithServices patched a host whose VIP another host holds")
	}
}

// Two nodes, one whose agent reported a kTLS-offloading NIC: every route
// to it, CIDR and host route, is marked; the other's are not; the shards
// carry the marks; an unchanged report returns the same tables.
func TestWithNICTLS(t *testing.T) {
	base := Build(testModel())
	a, b := IdentityID(idA), IdentityID(idB)
	tests := []struct {
		name string
		nics map[string]bool
		want []*fibv1.Route
	}{
		{name: "no reports", nics: nil, want: []*fibv1.Route{
			{Prefix: "10.200.1.0/24", NextHop: "10.100.0.1", Node: "node1"},
			{Prefix: "10.200.1.11/32", NextHop: "10.100.0.1", Node: "node1", IdentityId: a},
			{Prefix: "10.200.2.0/24", NextHop: "10.100.0.2", Node: "node2"},
			{Prefix: "10.201.0.5/32", NextHop: "10.100.0.2", Node: "node2", IdentityId: b},
		}},
		{name: "node2 offloads, node1 does not", nics: map[string]bool{"node1": false, "node2": true}, want: []*fibv1.Route{
			{Prefix: "10.200.1.0/24", NextHop: "10.100.0.1", Node: "node1"},
			{Prefix: "10.200.1.11/32", NextHop: "10.100.0.1", Node: "node1", IdentityId: a},
			{Prefix: "10.200.2.0/24", NextHop: "10.100.0.2", Node: "node2", NicTlsOffload: true},
			{Prefix: "10.201.0.5/32", NextHop: "10.100.0.2", Node: "node2", IdentityId: b, NicTlsOffload: true},
		}},
		{name: "a node not in the model", nics: map[string]bool{"node9": true}, want: []*fibv1.Route{
			{Prefix: "10.200.1.0/24", NextHop: "10.100.0.1", Node: "node1"},
			{Prefix: "10.200.1.11/32", NextHop: "10.100.0.1", Node: "node1", IdentityId: a},
			{Prefix: "10.200.2.0/24", NextHop: "10.100.0.2", Node: "node2"},
			{Prefix: "10.201.0.5/32", NextHop: "10.100.0.2", Node: "node2", IdentityId: b},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := proto.CloneOf(base.Mesh)
			got := base.WithNICTLS(tt.nics)
			if d := gocmp.Diff(tt.want, got.Mesh.GetRoutes(), protocmp.Transform()); d != "" {
				t.Errorf("routes (-want +got):\n%s", d)
			}
			if d := gocmp.Diff(before, base.Mesh, protocmp.Transform()); d != "" {
				t.Errorf("WithNICTLS modified its receiver (-before +after):\n%s", d)
			}
			var marked []string
			for _, sh := range got.Shards() {
				for _, r := range sh.GetRoutes() {
					if r.GetNicTlsOffload() {
						marked = append(marked, r.GetPrefix())
					}
				}
			}
			slices.Sort(marked)
			var want []string
			for _, r := range tt.want {
				if r.GetNicTlsOffload() {
					want = append(want, r.GetPrefix())
				}
			}
			if !slices.Equal(marked, want) {
				t.Errorf("shards mark %v; want %v", marked, want)
			}
			if again := got.WithNICTLS(tt.nics); again != got {
				t.Error("the same reports again returned new tables: an unchanged table must keep its messages")
			}
		})
	}
}
