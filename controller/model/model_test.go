package model

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	networkingapi "istio.io/api/networking/v1alpha3"
	securityapi "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/fibmesh/fibmesh/controller/config"
)

func build(t *testing.T, s *config.Snapshot, prev *Model, o Options) *Model {
	t.Helper()
	m, err := Build(s, prev, o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPeerAuthenticationPrecedence(t *testing.T) {
	app := map[string]string{"app": "reviews"}
	type ports = map[uint32]Mode
	type paPorts = map[uint32]securityapi.PeerAuthentication_MutualTLS_Mode
	for _, tc := range []struct {
		name      string
		policies  []mtlsLevel
		wantMode  Mode
		wantPorts ports
	}{
		{"nothing: PERMISSIVE", nil, ModePermissive, nil},
		{"mesh STRICT", []mtlsLevel{{ns: RootNamespace, mode: strict}}, ModeStrict, nil},
		{"mesh UNSET: PERMISSIVE", []mtlsLevel{{ns: RootNamespace, mode: unset}}, ModePermissive, nil},
		{"namespace PERMISSIVE overrides mesh STRICT", []mtlsLevel{{ns: RootNamespace, mode: strict}, {ns: "prod", mode: permissive}}, ModePermissive, nil},
		{"namespace UNSET inherits mesh", []mtlsLevel{{ns: RootNamespace, mode: strict}, {ns: "prod", mode: unset}}, ModeStrict, nil},
		{"other namespace does not apply", []mtlsLevel{{ns: RootNamespace, mode: strict}, {ns: "staging", mode: permissive}}, ModeStrict, nil},
		{"workload DISABLE overrides namespace", []mtlsLevel{{ns: RootNamespace, mode: strict}, {ns: "prod", mode: permissive}, {ns: "prod", selector: app, mode: disable}}, ModeDisable, nil},
		{"mesh STRICT, namespace PERMISSIVE, workload DISABLE, port STRICT",
			[]mtlsLevel{{ns: RootNamespace, mode: strict}, {ns: "prod", mode: permissive}, {ns: "prod", selector: app, mode: disable, ports: paPorts{8080: strict}}},
			ModeDisable, ports{8080: ModeStrict}},
		{"selector not matching does not apply", []mtlsLevel{{ns: "prod", mode: strict}, {ns: "prod", selector: map[string]string{"app": "x"}, mode: disable}}, ModeStrict, nil},
		{"selector in another namespace does not apply", []mtlsLevel{{ns: "staging", selector: app, mode: disable}}, ModePermissive, nil},
		{"selector in the root namespace is not mesh-wide", []mtlsLevel{{ns: RootNamespace, selector: app, mode: disable}}, ModePermissive, nil},
		{"empty selector is namespace-wide", []mtlsLevel{{ns: "prod", selector: map[string]string{}, mode: strict}}, ModeStrict, nil},
		{"port level UNSET inherits the workload", []mtlsLevel{{ns: "prod", selector: app, mode: strict, ports: paPorts{8080: unset}}}, ModeStrict, nil},
		{"port level UNSET under workload UNSET inherits the namespace", []mtlsLevel{{ns: "prod", mode: strict}, {ns: "prod", selector: app, mode: unset, ports: paPorts{8080: unset, 9090: disable}}}, ModeStrict, ports{9090: ModeDisable}},
		{"port level of a namespace-wide policy is ignored", []mtlsLevel{{ns: "prod", mode: strict, ports: paPorts{8080: disable}}}, ModeStrict, nil},
		{"workload UNSET inherits namespace", []mtlsLevel{{ns: "prod", mode: strict}, {ns: "prod", selector: app, mode: unset}}, ModeStrict, nil},
		{"two at the workload level: first by name wins", []mtlsLevel{{ns: "prod", selector: app, mode: disable}, {ns: "prod", selector: app, mode: strict}}, ModeDisable, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := []runtime.Object{pod("prod", "reviews-v1", "node1", "10.200.1.11", app)}
			for i, l := range tc.policies {
				objs = append(objs, pa(fmt.Sprintf("p%d", i), l))
			}
			m := build(t, snap(objs...), nil, Options{})
			w := m.Workloads[0]
			if w.DefaultMode != tc.wantMode {
				t.Errorf("mode %s; want %s", w.DefaultMode, tc.wantMode)
			}
			if d := cmp.Diff(tc.wantPorts, w.PortModes, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("port modes (-want +got):\n%s", d)
			}
			for _, port := range []uint32{8080, 9090, 1} {
				want := tc.wantMode
				if pm, ok := tc.wantPorts[port]; ok {
					want = pm
				}
				if got := m.MTLSMode("prod/reviews-v1", port); got != want {
					t.Errorf("MTLSMode(prod/reviews-v1, %d) = %s; want %s", port, got, want)
				}
			}
		})
	}
}

func TestPeerAuthenticationOldestWins(t *testing.T) {
	app := map[string]string{"app": "reviews"}
	older, newer := pa("z-old", mtlsLevel{ns: "prod", selector: app, mode: strict}), pa("a-new", mtlsLevel{ns: "prod", selector: app, mode: disable})
	older.CreationTimestamp = metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	newer.CreationTimestamp = metav1.NewTime(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC))
	m := build(t, snap(pod("prod", "r", "n", "10.0.0.1", app), newer, older), nil, Options{})
	if got := m.MTLSMode("prod/r", 80); got != ModeStrict {
		t.Errorf("mode %s; want STRICT (the older policy)", got)
	}
}

func TestMTLSModeOfUnknownWorkload(t *testing.T) {
	m := build(t, snap(pa("mesh", mtlsLevel{ns: RootNamespace, mode: strict}), pa("ns", mtlsLevel{ns: "legacy", mode: permissive})), nil, Options{})
	for _, tc := range []struct {
		workload string
		want     Mode
	}{{"prod/new-pod", ModeStrict}, {"legacy/new-pod", ModePermissive}, {RootNamespace + "/x", ModeStrict}} {
		if got := m.MTLSMode(tc.workload, 80); got != tc.want {
			t.Errorf("MTLSMode(%s) = %s; want %s", tc.workload, got, tc.want)
		}
	}
	if d := cmp.Diff(map[string]Mode{RootNamespace: ModeStrict, "legacy": ModePermissive}, m.NamespaceMTLS); d != "" || m.MeshMTLS != ModeStrict {
		t.Errorf("mesh %s, namespaces (-want +got):\n%s", m.MeshMTLS, d)
	}
}

func TestPortProtocols(t *testing.T) {
	for _, tc := range []struct {
		port corev1.ServicePort
		want Protocol
	}{
		{corev1.ServicePort{Name: "http"}, ProtocolHTTP},
		{corev1.ServicePort{Name: "HTTP-web"}, ProtocolHTTP},
		{corev1.ServicePort{Name: "http2-x"}, ProtocolHTTP2},
		{corev1.ServicePort{Name: "grpc-api"}, ProtocolGRPC},
		{corev1.ServicePort{Name: "grpc-web"}, ProtocolGRPC},
		{corev1.ServicePort{Name: "https"}, ProtocolHTTPS},
		{corev1.ServicePort{Name: "tls-passthrough"}, ProtocolTLS},
		{corev1.ServicePort{Name: "tcp-db"}, ProtocolTCP},
		{corev1.ServicePort{Name: "mysql"}, ProtocolTCP},
		{corev1.ServicePort{Name: "httpx"}, ProtocolUnknown},
		{corev1.ServicePort{Name: "metrics"}, ProtocolUnknown},
		{corev1.ServicePort{}, ProtocolUnknown},
		{corev1.ServicePort{Name: "tcp", AppProtocol: ptr("http")}, ProtocolHTTP},
		{corev1.ServicePort{Name: "web", AppProtocol: ptr("kubernetes.io/h2c")}, ProtocolHTTP2},
		{corev1.ServicePort{Name: "web", AppProtocol: ptr("GRPC")}, ProtocolGRPC},
		{corev1.ServicePort{Name: "http", AppProtocol: ptr("example.com/custom")}, ProtocolHTTP},
		{corev1.ServicePort{Name: "dns", Protocol: corev1.ProtocolUDP}, ProtocolUDP},
		{corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolUDP}, ProtocolUDP},
	} {
		name := tc.port.Name
		if tc.port.AppProtocol != nil {
			name += "/" + *tc.port.AppProtocol
		}
		t.Run(name, func(t *testing.T) {
			p := tc.port
			p.Port = 80
			m := build(t, snap(service("prod", "s", "10.96.0.1", p)), nil, Options{})
			if got := m.Services[0].Ports[0].Protocol; got != tc.want {
				t.Errorf("protocol %s; want %s", got, tc.want)
			}
		})
	}
}

func TestServicesEndpointsIdentities(t *testing.T) {
	v1 := pod("prod", "reviews-v1", "node1", "10.200.1.11", map[string]string{"version": "v1"})
	v2 := pod("prod", "reviews-v2", "node2", "10.200.2.11", map[string]string{"version": "v2"})
	byIP := pod("prod", "reviews-v3", "node2", "10.200.2.12", map[string]string{"version": "v3"})
	svc := service("prod", "reviews", "10.96.0.11", corev1.ServicePort{Name: "http", Port: 9080}, corev1.ServicePort{Name: "grpc-api", Port: 9090})
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "reviews-1", Labels: map[string]string{discoveryv1.LabelServiceName: "reviews"}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}, {Name: ptr("grpc-api"), Port: ptr(int32(8090)), AppProtocol: ptr("grpc")}},
		Endpoints: []discoveryv1.Endpoint{
			// No node name on the slice: taken from the pod. Not ready.
			{Addresses: []string{"10.200.2.11"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "reviews-v2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(false)}},
			{Addresses: []string{"10.200.1.11"}, NodeName: ptr("node1"), TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "prod", Name: "reviews-v1"}},
			// No targetRef: joined by IP.
			{Addresses: []string{"10.200.2.12"}},
			// A pod the model does not know: kept, without identity.
			{Addresses: []string{"10.200.9.9"}, NodeName: ptr("node9"), TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "gone"}},
		}}
	other := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "staging", Name: "reviews-1", Labels: map[string]string{discoveryv1.LabelServiceName: "reviews"}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.1.1.1"}}}}
	headless := &corev1.Service{ObjectMeta: om("prod", "db"), Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: "tcp", Port: 5432}}}}
	m := build(t, snap(svc, es, other, headless, v1, v2, byIP), nil, Options{TrustDomain: "example.org"})
	ports := []EndpointPort{{Name: "grpc-api", Port: 8090, Protocol: ProtocolGRPC}, {Name: "http", Port: 8080, Protocol: ProtocolHTTP}}
	want := []*Service{{
		Hostname: "db.prod.svc.cluster.local", Namespace: "prod", Name: "db",
		Ports: []Port{{"tcp", 5432, ProtocolTCP}}, Endpoints: []*Endpoint{},
	}, {
		Hostname: "reviews.prod.svc.cluster.local", Namespace: "prod", Name: "reviews", VIPs: []string{"10.96.0.11"},
		Ports: []Port{{"http", 9080, ProtocolHTTP}, {"grpc-api", 9090, ProtocolGRPC}},
		Endpoints: []*Endpoint{
			{Address: "10.200.1.11", Ports: ports, Ready: true, Node: "node1", Workload: "prod/reviews-v1", Identity: "spiffe://example.org/ns/prod/sa/sa-reviews-v1", Labels: map[string]string{"version": "v1"}},
			{Address: "10.200.2.11", Ports: ports, Ready: false, Node: "node2", Workload: "prod/reviews-v2", Identity: "spiffe://example.org/ns/prod/sa/sa-reviews-v2", Labels: map[string]string{"version": "v2"}},
			{Address: "10.200.2.12", Ports: ports, Ready: true, Node: "node2", Workload: "prod/reviews-v3", Identity: "spiffe://example.org/ns/prod/sa/sa-reviews-v3", Labels: map[string]string{"version": "v3"}},
			{Address: "10.200.9.9", Ports: ports, Ready: true, Node: "node9"},
		}}}
	if d := cmp.Diff(want, m.Services); d != "" {
		t.Errorf("services (-want +got):\n%s", d)
	}
	ep := m.Services[1].Endpoints[0]
	if got := ep.PortFor(m.Services[1].Ports[1]); got != 8090 {
		t.Errorf("PortFor(grpc-api) = %d; want 8090", got)
	}
	if got := ep.PortFor(Port{Name: "nope", Port: 1}); got != 1 {
		t.Errorf("PortFor(unlisted) = %d; want the service port", got)
	}
	if got := m.ServicesFor("reviews.prod.svc.cluster.local"); len(got) != 1 || got[0].Name != "reviews" {
		t.Errorf("ServicesFor: %v", got)
	}
	if got := m.ServicesFor("nope"); len(got) != 0 {
		t.Errorf("ServicesFor(nope): %v", got)
	}
}

func TestWorkloadsAndIdentities(t *testing.T) {
	noSA := pod("prod", "legacy", "node1", "10.200.1.5", nil)
	noSA.Spec.ServiceAccountName = ""
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		o    Options
		want *Workload
	}{
		{"default trust domain", pod("prod", "web", "node1", "10.200.1.4", map[string]string{"app": "web"}), Options{},
			&Workload{Namespace: "prod", Name: "web", IP: "10.200.1.4", Node: "node1", Labels: map[string]string{"app": "web"},
				ServiceAccount: "sa-web", Identity: "spiffe://cluster.local/ns/prod/sa/sa-web", DefaultMode: ModePermissive}},
		{"own trust domain", pod("prod", "web", "node1", "10.200.1.4", nil), Options{TrustDomain: "corp.example"},
			&Workload{Namespace: "prod", Name: "web", IP: "10.200.1.4", Node: "node1",
				ServiceAccount: "sa-web", Identity: "spiffe://corp.example/ns/prod/sa/sa-web", DefaultMode: ModePermissive}},
		{"no service account: default", noSA, Options{},
			&Workload{Namespace: "prod", Name: "legacy", IP: "10.200.1.5", Node: "node1",
				ServiceAccount: "default", Identity: "spiffe://cluster.local/ns/prod/sa/default", DefaultMode: ModePermissive}},
		{"pending: no IP, no node", pod("prod", "pending", "", "", nil), Options{},
			&Workload{Namespace: "prod", Name: "pending", ServiceAccount: "sa-pending", Identity: "spiffe://cluster.local/ns/prod/sa/sa-pending", DefaultMode: ModePermissive}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := build(t, snap(tc.pod), nil, tc.o)
			if d := cmp.Diff([]*Workload{tc.want}, m.Workloads); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
			if w := m.Workload(tc.pod.Namespace + "/" + tc.pod.Name); w != m.Workloads[0] {
				t.Errorf("Workload(%s/%s) = %v", tc.pod.Namespace, tc.pod.Name, w)
			}
		})
	}
}

func TestNodes(t *testing.T) {
	old := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node0"}, Spec: corev1.NodeSpec{PodCIDR: "10.200.0.0/24"}}
	m := build(t, snap(node("node2", "192.168.0.2", "10.200.2.0/24", "fd00:2::/64"), old, node("node1", "192.168.0.1", "10.200.1.0/24")), nil, Options{})
	want := []*Node{
		{Name: "node0", PodCIDRs: []string{"10.200.0.0/24"}},
		{Name: "node1", InternalIP: "192.168.0.1", PodCIDRs: []string{"10.200.1.0/24"}},
		{Name: "node2", InternalIP: "192.168.0.2", PodCIDRs: []string{"10.200.2.0/24", "fd00:2::/64"}},
	}
	if d := cmp.Diff(want, m.Nodes); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestServiceEntry(t *testing.T) {
	se := &networkingv1.ServiceEntry{ObjectMeta: om("production", "books")}
	se.Spec.Hosts = []string{"api.books.example.com", "b.books.example.com"}
	se.Spec.Addresses = []string{"240.0.0.1"}
	se.Spec.Location = networkingapi.ServiceEntry_MESH_EXTERNAL
	se.Spec.Resolution = networkingapi.ServiceEntry_STATIC
	se.Spec.Ports = []*networkingapi.ServicePort{{Number: 443, Name: "https", Protocol: "HTTPS"}, {Number: 8080, Name: "http-alt"}}
	se.Spec.Endpoints = []*networkingapi.WorkloadEntry{{Address: "203.0.113.2", Ports: map[string]uint32{"https": 8443}, ServiceAccount: "books"}, {Address: "203.0.113.1"}}
	// A Kubernetes Service with the same hostname as a ServiceEntry
	// host sorts first.
	svc := &corev1.Service{ObjectMeta: om("production", "b")}
	m := build(t, snap(se, svc), nil, Options{DomainSuffix: "books.example.com"})
	mk := func(host string) *Service {
		return &Service{Hostname: host, Namespace: "production", Name: "books", ServiceEntry: true, Location: "MESH_EXTERNAL", Resolution: "STATIC",
			VIPs: []string{"240.0.0.1"}, Ports: []Port{{"https", 443, ProtocolHTTPS}, {"http-alt", 8080, ProtocolHTTP}},
			Endpoints: []*Endpoint{{Address: "203.0.113.1", Ready: true},
				{Address: "203.0.113.2", Ports: []EndpointPort{{Name: "https", Port: 8443}}, Ready: true, Identity: "spiffe://cluster.local/ns/production/sa/books"}}}
	}
	want := []*Service{mk("api.books.example.com"),
		{Hostname: "b.production.svc.books.example.com", Namespace: "production", Name: "b", Endpoints: []*Endpoint{}},
		mk("b.books.example.com")}
	want[1], want[2] = want[2], want[1]
	if d := cmp.Diff(want, m.Services); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestUnusableInput(t *testing.T) {
	p := pod("prod", "a", "n", "10.0.0.1", nil)
	for _, tc := range []struct {
		name string
		s    *config.Snapshot
		o    Options
		want string
	}{
		{"no snapshot", nil, Options{}, "unusable input: no snapshot"},
		{"bad trust domain", snap(p), Options{TrustDomain: "cluster.local/x"}, `unusable input: trust domain "cluster.local/x"`},
		{"upper-case trust domain", snap(p), Options{TrustDomain: "Example.org"}, `unusable input: trust domain "Example.org"`},
		{"no object", &config.Snapshot{Resources: []config.Resource{{Name: "x"}}}, Options{}, "x from kubernetes: no object"},
		{"nil object", &config.Snapshot{Resources: []config.Resource{{Object: (*corev1.Pod)(nil)}}}, Options{}, "from kubernetes: nil Pod"},
		{"no name", snap(pod("prod", "", "n", "10.0.0.2", nil)), Options{}, "unusable input: Pod from kubernetes: metadata.name is empty"},
		{"no namespace", snap(service("", "s", "10.96.0.1")), Options{}, "unusable input: Service s from kubernetes: metadata.namespace is empty"},
		{"duplicate", snap(p, pod("prod", "a", "m", "10.0.0.3", nil)), Options{}, "unusable input: duplicate Pod prod/a: from kubernetes and kubernetes"},
		{"duplicate policy", snap(pa("x", mtlsLevel{ns: "prod"}), pa("x", mtlsLevel{ns: "prod", mode: strict})), Options{}, "unusable input: duplicate PeerAuthentication prod/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Build(tc.s, nil, tc.o)
			if err == nil {
				t.Fatalf("no error; model %+v", m)
			}
			if !errors.Is(err, ErrUnusable) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q; want %q, wrapping ErrUnusable", err, tc.want)
			}
		})
	}
	// A build on top of a previous model checks duplicates again when
	// the keys are not the previous snapshot's (same count, one renamed
	// into a duplicate), and passes an edit that keeps them.
	prev, err := Build(snap(p, pod("prod", "b", "n", "10.0.0.5", nil)), nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Build(snap(p, pod("prod", "a", "m", "10.0.0.3", nil)), prev, Options{}); !errors.Is(err, ErrUnusable) ||
		!strings.Contains(err.Error(), "duplicate Pod prod/a") {
		t.Errorf("duplicate after a previous model: error %v, want the duplicate", err)
	}
	edited, err := Build(snap(p, pod("prod", "b", "m", "10.0.0.6", nil)), prev, Options{})
	if err != nil {
		t.Fatalf("an edit keeping the keys: %v", err)
	}
	if edited.keys != prev.keys || edited.keys == 0 {
		t.Errorf("keys hash %x after an edit keeping the keys, want the previous %x", edited.keys, prev.keys)
	}
	// Same names in different kinds or namespaces, and a Node and a
	// Namespace with one name, are fine.
	ok := snap(p, pod("staging", "a", "n", "10.0.0.4", nil), service("prod", "a", "10.96.0.1"),
		node("a", "192.168.0.1"), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, &corev1.ServiceAccount{ObjectMeta: om("prod", "a")})
	if _, err := Build(ok, nil, Options{}); err != nil {
		t.Error(err)
	}
}

// TestChanges builds successive versions and checks what each says
// changed.
func TestChanges(t *testing.T) {
	a := pod("prod", "a", "node1", "10.200.1.11", map[string]string{"app": "a"})
	b := pod("prod", "b", "node2", "10.200.2.11", map[string]string{"app": "b"})
	b2 := b.DeepCopy()
	b2.Labels["extra"] = "x"
	svcA, esA := service("prod", "a", "10.96.0.1", corev1.ServicePort{Name: "http", Port: 80}), slice("a", 8080, a)
	svcB, esB := service("prod", "b", "10.96.0.2", corev1.ServicePort{Name: "http", Port: 80}), slice("b", 8080, b)
	policyB := pa("b", mtlsLevel{ns: "prod", selector: map[string]string{"app": "b"}, mode: strict})
	authzB := &securityv1.AuthorizationPolicy{ObjectMeta: om("prod", "b")}
	authzB.Spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "b"}}
	svcC := service("prod", "c", "10.96.0.3")
	vs := canaryVS()
	vs.Namespace, vs.Spec.Hosts = "prod", []string{"a"}
	drReviews := &networkingv1.DestinationRule{ObjectMeta: om("prod", "reviews")}
	drReviews.Spec.Host = "reviews"
	drReviews.Spec.TrafficPolicy = &networkingapi.TrafficPolicy{LoadBalancer: &networkingapi.LoadBalancerSettings{LbPolicy: &networkingapi.LoadBalancerSettings_ConsistentHash{
		ConsistentHash: &networkingapi.LoadBalancerSettings_ConsistentHashLB{HashKey: &networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName{HttpHeaderName: "x-user"}}}}}
	base := []runtime.Object{node("node1", "192.168.0.1"), node("node2", "192.168.0.2"), node("node3", "192.168.0.3"), a, b, svcA, esA}
	with := func(objs ...runtime.Object) []runtime.Object {
		return append(append([]runtime.Object{}, base...), objs...)
	}
	steps := []struct {
		name string
		objs []runtime.Object
		want Change
	}{
		{"first", base, Change{Full: true, Services: []string{"a.prod.svc.cluster.local"}, Nodes: []string{"node1", "node2", "node3"},
			LocalNodes: []string{"node1", "node2", "node3"}, Kinds: ChangeKinds{Services: true, Workloads: true, Nodes: true, Routes: true, L4Routes: true, DestinationPolicies: true, AuthzPolicies: true}}},
		{"same again", base, Change{}},
		{"add a service with an endpoint on node2", with(svcB, esB), Change{Services: []string{"b.prod.svc.cluster.local"}, Nodes: []string{"node2"},
			LocalNodes: []string{"node2"}, Kinds: ChangeKinds{Services: true}}},
		{"add a service without endpoints", with(svcB, esB, svcC), Change{Services: []string{"c.prod.svc.cluster.local"}, Kinds: ChangeKinds{Services: true}}},
		{"PeerAuthentication selecting b, on node2", with(svcB, esB, svcC, policyB), Change{Nodes: []string{"node2"}, LocalNodes: []string{"node2"}, Kinds: ChangeKinds{Workloads: true}}},
		{"AuthorizationPolicy selecting b, on node2", with(svcB, esB, svcC, policyB, authzB), Change{Nodes: []string{"node2"}, LocalNodes: []string{"node2"}, Kinds: ChangeKinds{AuthzPolicies: true}}},
		{"b's labels change: its service's endpoints too", append(with()[:3], a, b2, svcA, esA, svcB, slice("b", 8080, b2), svcC, policyB, authzB),
			Change{Services: []string{"b.prod.svc.cluster.local"}, Nodes: []string{"node2"}, LocalNodes: []string{"node2"}, Kinds: ChangeKinds{Services: true, Workloads: true}}},
		{"b back, without the policies", with(svcB, esB, svcC), Change{Services: []string{"b.prod.svc.cluster.local"}, Nodes: []string{"node2"},
			LocalNodes: []string{"node2"}, Kinds: ChangeKinds{Services: true, Workloads: true, AuthzPolicies: true}}},
		// A route changes every node's routing, but no node's own state.
		{"a route: every node", with(svcB, esB, svcC, vs), Change{Services: []string{"a.prod.svc.cluster.local"}, Nodes: []string{"node1", "node2", "node3"}, Kinds: ChangeKinds{Routes: true}}},
		// A destination policy changes its host's routes and those of
		// the routes that send to it (their hash policy).
		{"a DestinationRule for reviews, which a's route sends to", with(svcB, esB, svcC, vs, drReviews), Change{Services: []string{"a.prod.svc.cluster.local", "reviews.prod.svc.cluster.local"},
			Nodes: []string{"node1", "node2", "node3"}, Kinds: ChangeKinds{DestinationPolicies: true}}},
		{"and it goes", with(svcB, esB, svcC, vs), Change{Services: []string{"a.prod.svc.cluster.local", "reviews.prod.svc.cluster.local"},
			Nodes: []string{"node1", "node2", "node3"}, Kinds: ChangeKinds{DestinationPolicies: true}}},
		{"a node goes", with(svcB, esB, svcC, vs)[1:], Change{Nodes: []string{"node1"}, LocalNodes: []string{"node1"}, Kinds: ChangeKinds{Nodes: true}}},
		{"a service goes", with(svcB, esB, vs)[1:], Change{Services: []string{"c.prod.svc.cluster.local"}, Kinds: ChangeKinds{Services: true}}},
	}
	var prev *Model
	for i, st := range steps {
		m := build(t, snap(st.objs...), prev, Options{})
		if m.Version != uint64(i+1) {
			t.Errorf("%s: version %d; want %d", st.name, m.Version, i+1)
		}
		if d := cmp.Diff(st.want, m.Change, cmpopts.EquateEmpty()); d != "" {
			t.Errorf("%s: change (-want +got):\n%s", st.name, d)
		}
		if st.want.Empty() != m.Change.Empty() {
			t.Errorf("%s: Empty() = %v", st.name, m.Change.Empty())
		}
		prev = m
	}
}

// TestDeterministic: the same objects in any order give the same Dump,
// and Build modifies neither the snapshot nor the previous model.
func TestDeterministic(t *testing.T) {
	s, err := config.LoadDir("../testdata/cluster")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range bigSnapshot(20, 10, 200).Resources {
		if r.GVK.Kind != "PeerAuthentication" { // examples/ has the mesh-wide one
			s.Resources = append(s.Resources, r)
		}
	}
	want := build(t, s, nil, Options{})
	wantDump, err := want.Dump()
	if err != nil {
		t.Fatal(err)
	}
	before := deepCopy(s)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 5 {
		sh := &config.Snapshot{Resources: append([]config.Resource(nil), s.Resources...)}
		r.Shuffle(len(sh.Resources), func(i, j int) { sh.Resources[i], sh.Resources[j] = sh.Resources[j], sh.Resources[i] })
		got, _ := build(t, sh, nil, Options{}).Dump()
		m := build(t, sh, want, Options{})
		if d := cmp.Diff(string(wantDump), string(got)); d != "" {
			t.Fatalf("shuffle %d: dump differs (-want +got):\n%s", i, d)
		}
		if !m.Change.Empty() {
			t.Errorf("shuffle %d: change %+v; want none", i, m.Change)
		}
	}
	if !reflect.DeepEqual(before, deepCopy(s)) {
		t.Error("Build modified the snapshot")
	}
	if again, _ := want.Dump(); string(again) != string(wantDump) {
		t.Error("a later Build modified the previous model")
	}
}

// deepCopy copies the Kubernetes objects of a snapshot (the Istio ones,
// protos, are compared by Dump in TestDeterministic).
func deepCopy(s *config.Snapshot) []runtime.Object {
	var out []runtime.Object
	for _, r := range s.Resources {
		switch o := r.Object.(type) {
		case *corev1.Pod, *corev1.Service, *discoveryv1.EndpointSlice, *corev1.Node:
			out = append(out, o.DeepCopyObject())
		}
	}
	return out
}

func TestExamplesGolden(t *testing.T) {
	s, err := config.LoadDir("../testdata/cluster")
	if err != nil {
		t.Fatal(err)
	}
	m := build(t, s, nil, Options{})
	got, err := m.Dump()
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "examples.golden.json")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with UPDATE_GOLDEN=1 to create it)", err)
	}
	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("model of examples/ differs from %s (UPDATE_GOLDEN=1 to accept) (-want +got):\n%s", golden, d)
	}
	// Spot checks that the golden file says what the examples mean.
	for _, w := range m.Workloads {
		if w.Namespace == "production" && w.DefaultMode != ModeStrict {
			t.Errorf("%s/%s: mTLS %s; want STRICT (mesh-wide policy)", w.Namespace, w.Name, w.DefaultMode)
		}
	}
}

// bigSnapshot has services x endpoints (each endpoint its own pod),
// pods in all, spread over 50 namespaces and 100 nodes, and a mesh-wide
// STRICT policy.
func bigSnapshot(services, endpoints, pods int) *config.Snapshot {
	ip := func(i int) string { return fmt.Sprintf("10.%d.%d.%d", 200+i/65536, (i/256)%256, i%256) }
	var objs []runtime.Object
	for i := range pods {
		objs = append(objs, pod(fmt.Sprintf("ns%d", i%50), fmt.Sprintf("p%d", i), fmt.Sprintf("node%d", i%100), ip(i), map[string]string{"app": fmt.Sprintf("s%d", i/endpoints)}))
	}
	for i := range 100 {
		objs = append(objs, node(fmt.Sprintf("node%d", i), fmt.Sprintf("192.168.%d.%d", i/256, i%256)))
	}
	for s := range services {
		ns := fmt.Sprintf("ns%d", (s*endpoints)%50)
		svc := service(ns, fmt.Sprintf("s%d", s), fmt.Sprintf("10.96.%d.%d", s/256, s%256), corev1.ServicePort{Name: "http", Port: 80})
		es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("s%d-1", s), Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name}},
			Ports: []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}}}
		for e := range endpoints {
			i := s*endpoints + e
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip(i)}, NodeName: ptr(fmt.Sprintf("node%d", i%100)),
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: fmt.Sprintf("ns%d", i%50), Name: fmt.Sprintf("p%d", i)}})
		}
		objs = append(objs, svc, es)
	}
	objs = append(objs, pa("default", mtlsLevel{ns: RootNamespace, mode: strict}))
	return snap(objs...)
}

func TestBuildAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	s := bigSnapshot(1000, 10, 10000)
	m := build(t, s, nil, Options{})
	if len(m.Services) != 1000 || len(m.Workloads) != 10000 || len(m.Nodes) != 100 {
		t.Fatalf("%d services, %d workloads, %d nodes", len(m.Services), len(m.Workloads), len(m.Nodes))
	}
	for _, s := range m.Services {
		if len(s.Endpoints) != 10 {
			t.Fatalf("%s: %d endpoints", s.Hostname, len(s.Endpoints))
		}
		for _, e := range s.Endpoints {
			if e.Identity == "" {
				t.Fatalf("%s: endpoint %s not joined with its pod", s.Hostname, e.Address)
			}
		}
	}
	// Rebuilding the same input on top says nothing changed.
	if m2 := build(t, s, m, Options{}); !m2.Change.Empty() {
		t.Errorf("rebuild: change %+v", m2.Change)
	}
}

// BenchmarkBuild builds the model of 1,000 services x 10 endpoints and
// 10,000 pods from scratch.
func BenchmarkBuild(b *testing.B) {
	s := bigSnapshot(1000, 10, 10000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(s, nil, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuildIncremental builds the same input on top of the previous
// model: the cost of a push where nothing changed, Change included.
func BenchmarkBuildIncremental(b *testing.B) {
	s := bigSnapshot(1000, 10, 10000)
	prev, err := Build(s, nil, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(s, prev, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// Build reuses the previous model's workload for a pod object the new
// snapshot still holds, builds again the one whose object was replaced,
// and builds every workload again when what all of them depend on (a
// PeerAuthentication, a namespace) changes; the models equal fresh builds
// either way.
func TestBuildReusesWorkloads(t *testing.T) {
	a := pod("prod", "a", "node1", "10.1.0.1", map[string]string{"app": "a"})
	b := pod("prod", "b", "node1", "10.1.0.2", map[string]string{"app": "b"})
	b2 := pod("prod", "b", "node1", "10.1.0.2", map[string]string{"app": "b", "version": "v2"})
	strictNS := pa("strict", mtlsLevel{ns: "prod", mode: strict})
	steps := []struct {
		name   string
		objs   []runtime.Object
		reused map[string]bool // workload name → the previous model's object
	}{
		{name: "first", objs: []runtime.Object{a, b}},
		{name: "same objects", objs: []runtime.Object{a, b}, reused: map[string]bool{"a": true, "b": true}},
		{name: "b replaced", objs: []runtime.Object{a, b2}, reused: map[string]bool{"a": true}},
		{name: "a PeerAuthentication added", objs: []runtime.Object{a, b2, strictNS}},
		{name: "unchanged again", objs: []runtime.Object{a, b2, strictNS}, reused: map[string]bool{"a": true, "b": true}},
	}
	var prev *Model
	for _, st := range steps {
		m := build(t, snap(st.objs...), prev, Options{})
		fresh := build(t, snap(st.objs...), nil, Options{})
		if d := cmp.Diff(fresh.Workloads, m.Workloads); d != "" {
			t.Errorf("%s: workloads differ from a fresh build (-fresh +got):\n%s", st.name, d)
		}
		if prev != nil {
			for i, w := range m.Workloads {
				if reused := w == prev.Workloads[i]; reused != st.reused[w.Name] {
					t.Errorf("%s: workload %s reused = %v, want %v", st.name, w.Name, reused, st.reused[w.Name])
				}
			}
		}
		prev = m
	}
	if got := prev.Workloads[0].DefaultMode; got != ModeStrict {
		t.Errorf("after the PeerAuthentication, a's mode is %s, want STRICT", got)
	}
}

// Build reuses a Service built from the very Service and EndpointSlice
// objects against the same workloads; a replaced EndpointSlice rebuilds
// its service alone, a changed pod every service (endpoints carry their
// workloads' identities and labels); the models equal fresh builds.
func TestBuildReusesServices(t *testing.T) {
	a := pod("prod", "a", "node1", "10.1.0.1", map[string]string{"app": "a"})
	b := pod("prod", "b", "node1", "10.1.0.2", map[string]string{"app": "b"})
	b2 := pod("prod", "b", "node1", "10.1.0.2", map[string]string{"app": "b", "version": "v2"})
	port := corev1.ServicePort{Name: "http", Port: 80}
	svcA, svcB := service("prod", "a", "10.96.0.1", port), service("prod", "b", "10.96.0.2", port)
	esA, esB := slice("a", 8080, a), slice("b", 8080, b)
	esA2 := esA.DeepCopy()
	esA2.Endpoints[0].Conditions.Ready = ptr(false)
	steps := []struct {
		name   string
		objs   []runtime.Object
		reused map[string]bool // service name → the previous model's object
	}{
		{name: "first", objs: []runtime.Object{a, b, svcA, svcB, esA, esB}},
		{name: "same objects", objs: []runtime.Object{a, b, svcA, svcB, esA, esB}, reused: map[string]bool{"a": true, "b": true}},
		{name: "a's slice replaced", objs: []runtime.Object{a, b, svcA, svcB, esA2, esB}, reused: map[string]bool{"b": true}},
		{name: "pod b replaced", objs: []runtime.Object{a, b2, svcA, svcB, esA2, esB}},
	}
	var prev *Model
	for _, st := range steps {
		m := build(t, snap(st.objs...), prev, Options{})
		fresh := build(t, snap(st.objs...), nil, Options{})
		if d := cmp.Diff(fresh.Services, m.Services); d != "" {
			t.Errorf("%s: services differ from a fresh build (-fresh +got):\n%s", st.name, d)
		}
		if prev != nil {
			for i, s := range m.Services {
				if reused := s == prev.Services[i]; reused != st.reused[s.Name] {
					t.Errorf("%s: service %s reused = %v, want %v", st.name, s.Name, reused, st.reused[s.Name])
				}
			}
		}
		prev = m
	}
	if prev.Services[0].Endpoints[0].Ready {
		t.Error("a's endpoint is ready after its slice said not")
	}
}
