package model

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fibmesh/fibmesh/controller/config"
)

func snap(objs ...any) *config.Snapshot {
	s := &config.Snapshot{}
	for _, o := range objs {
		r := config.Resource{}
		switch v := o.(type) {
		case *corev1.Pod:
			r.Object, r.Namespace, r.Name = v, v.Namespace, v.Name
		case *corev1.Service:
			r.Object, r.Namespace, r.Name = v, v.Namespace, v.Name
		case *corev1.Node:
			r.Object, r.Name = v, v.Name
		case *discoveryv1.EndpointSlice:
			r.Object, r.Namespace, r.Name = v, v.Namespace, v.Name
		case *securityv1.PeerAuthentication:
			r.Object, r.Namespace, r.Name = v, v.Namespace, v.Name
		default:
			panic(fmt.Sprintf("snap: %T", o))
		}
		s.Resources = append(s.Resources, r)
	}
	return s
}

func pod(ns, name, node, ip string, lbls map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: "sa-" + name}, Status: corev1.PodStatus{PodIP: ip}}
}

type mtlsLevel struct {
	ns       string
	selector map[string]string
	mode     securityv1beta1.PeerAuthentication_MutualTLS_Mode
	ports    map[uint32]securityv1beta1.PeerAuthentication_MutualTLS_Mode
}

func pa(name string, l mtlsLevel) *securityv1.PeerAuthentication {
	p := &securityv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: l.ns, Name: name}}
	p.Spec.Mtls = &securityv1beta1.PeerAuthentication_MutualTLS{Mode: l.mode}
	if l.selector != nil {
		p.Spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: l.selector}
	}
	for port, m := range l.ports {
		if p.Spec.PortLevelMtls == nil {
			p.Spec.PortLevelMtls = map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{}
		}
		p.Spec.PortLevelMtls[port] = &securityv1beta1.PeerAuthentication_MutualTLS{Mode: m}
	}
	return p
}

const (
	unset      = securityv1beta1.PeerAuthentication_MutualTLS_UNSET
	strict     = securityv1beta1.PeerAuthentication_MutualTLS_STRICT
	permissive = securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE
	disable    = securityv1beta1.PeerAuthentication_MutualTLS_DISABLE
)

func TestPeerAuthenticationPrecedence(t *testing.T) {
	app := map[string]string{"app": "reviews"}
	for _, tc := range []struct {
		name      string
		policies  []mtlsLevel
		wantMode  Mode
		wantPorts map[uint32]Mode
	}{
		{"nothing: PERMISSIVE", nil, ModePermissive, nil},
		{"mesh STRICT", []mtlsLevel{{ns: RootNamespace, mode: strict}}, ModeStrict, nil},
		{"namespace PERMISSIVE overrides mesh STRICT", []mtlsLevel{{ns: RootNamespace, mode: strict}, {ns: "prod", mode: permissive}}, ModePermissive, nil},
		{"namespace UNSET inherits mesh", []mtlsLevel{{ns: RootNamespace, mode: strict}, {ns: "prod", mode: unset}}, ModeStrict, nil},
		{"other namespace does not apply", []mtlsLevel{{ns: RootNamespace, mode: strict}, {ns: "staging", mode: permissive}}, ModeStrict, nil},
		{"workload DISABLE overrides namespace", []mtlsLevel{{ns: RootNamespace, mode: strict}, {ns: "prod", mode: permissive}, {ns: "prod", selector: app, mode: disable}}, ModeDisable, nil},
		{"selector not matching does not apply", []mtlsLevel{{ns: "prod", mode: strict}, {ns: "prod", selector: map[string]string{"app": "x"}, mode: disable}}, ModeStrict, nil},
		{"port level STRICT under workload DISABLE", []mtlsLevel{{ns: RootNamespace, mode: strict}, {ns: "prod", selector: app, mode: disable, ports: map[uint32]securityv1beta1.PeerAuthentication_MutualTLS_Mode{8080: strict}}}, ModeDisable, map[uint32]Mode{8080: ModeStrict}},
		{"port level UNSET inherits", []mtlsLevel{{ns: "prod", selector: app, mode: strict, ports: map[uint32]securityv1beta1.PeerAuthentication_MutualTLS_Mode{8080: unset}}}, ModeStrict, nil},
		{"workload UNSET inherits namespace", []mtlsLevel{{ns: "prod", mode: strict}, {ns: "prod", selector: app, mode: unset}}, ModeStrict, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := []any{pod("prod", "reviews-v1", "node1", "10.200.1.11", app)}
			for i, l := range tc.policies {
				objs = append(objs, pa(fmt.Sprintf("p%d", i), l))
			}
			m, err := Build(snap(objs...), nil, Options{})
			if err != nil {
				t.Fatal(err)
			}
			w := m.Workloads[0]
			if w.DefaultMode != tc.wantMode || !cmp.Equal(w.PortModes, tc.wantPorts) {
				t.Errorf("mode %s ports %v; want %s %v", w.DefaultMode, w.PortModes, tc.wantMode, tc.wantPorts)
			}
			if got := w.MTLSMode(8080); tc.wantPorts[8080] != "" && got != tc.wantPorts[8080] {
				t.Errorf("MTLSMode(8080) = %s", got)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestServicesEndpointsIdentities(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "reviews"}, Spec: corev1.ServiceSpec{
		ClusterIP: "10.96.0.11", ClusterIPs: []string{"10.96.0.11"},
		Ports: []corev1.ServicePort{{Name: "http", Port: 9080}, {Name: "grpc-api", Port: 9090}, {Name: "metrics", Port: 15090, AppProtocol: ptr("http2")}, {Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}, {Name: "x", Port: 1}},
	}}
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "reviews-1", Labels: map[string]string{discoveryv1.LabelServiceName: "reviews"}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.200.2.11"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "reviews-v2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(false)}},
			{Addresses: []string{"10.200.1.11"}, NodeName: ptr("node1"), TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "prod", Name: "reviews-v1"}},
		}}
	m, err := Build(snap(svc, es, pod("prod", "reviews-v1", "node1", "10.200.1.11", map[string]string{"version": "v1"}), pod("prod", "reviews-v2", "node2", "10.200.2.11", map[string]string{"version": "v2"})), nil, Options{TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	want := &Service{Hostname: "reviews.prod.svc.cluster.local", Namespace: "prod", Name: "reviews", VIPs: []string{"10.96.0.11"},
		Ports: []Port{{"http", 9080, ProtocolHTTP}, {"grpc-api", 9090, ProtocolGRPC}, {"metrics", 15090, ProtocolHTTP2}, {"dns", 53, ProtocolUDP}, {"x", 1, ProtocolUnknown}},
		Endpoints: []*Endpoint{
			{Address: "10.200.1.11", Ready: true, Node: "node1", Workload: "prod/reviews-v1", Identity: "spiffe://example.org/ns/prod/sa/sa-reviews-v1", Labels: map[string]string{"version": "v1"}},
			{Address: "10.200.2.11", Ready: false, Node: "node2", Workload: "prod/reviews-v2", Identity: "spiffe://example.org/ns/prod/sa/sa-reviews-v2", Labels: map[string]string{"version": "v2"}},
		}}
	if d := cmp.Diff(want, m.Services[0]); d != "" {
		t.Errorf("service (-want +got):\n%s", d)
	}
}

func TestVersionsAndChanges(t *testing.T) {
	p1 := pod("prod", "a", "node1", "10.200.1.11", map[string]string{"app": "a"})
	p2 := pod("prod", "b", "node2", "10.200.2.11", map[string]string{"app": "b"})
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "a"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	m1, _ := Build(snap(p1, p2), nil, Options{})
	if m1.Version != 1 || !m1.Change.Full {
		t.Errorf("first build: version %d, change %+v", m1.Version, m1.Change)
	}
	m2, _ := Build(snap(p1, p2, svc), m1, Options{})
	if m2.Version != 2 || !cmp.Equal(m2.Change.Services, []string{"a.prod.svc.cluster.local"}) || len(m2.Change.Nodes) != 0 {
		t.Errorf("add a service: %+v", m2.Change)
	}
	// A policy selecting only b (on node2) affects node2 only.
	m3, _ := Build(snap(p1, p2, svc, pa("b", mtlsLevel{ns: "prod", selector: map[string]string{"app": "b"}, mode: strict})), m2, Options{})
	if m3.Version != 3 || len(m3.Change.Services) != 0 || !cmp.Equal(m3.Change.Nodes, []string{"node2"}) {
		t.Errorf("policy on b: %+v", m3.Change)
	}
	m4, _ := Build(snap(p1, p2, svc, pa("b", mtlsLevel{ns: "prod", selector: map[string]string{"app": "b"}, mode: strict})), m3, Options{})
	if len(m4.Change.Services) != 0 || len(m4.Change.Nodes) != 0 {
		t.Errorf("nothing changed, change %+v", m4.Change)
	}
}

func TestExamplesGolden(t *testing.T) {
	s, err := config.LoadDir("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Build(s, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Dump()
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "examples.golden.json")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		os.MkdirAll("testdata", 0o755)
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

// bigSnapshot has 1,000 services x 10 endpoints and 10,000 pods.
func bigSnapshot() *config.Snapshot {
	var objs []any
	for i := range 10000 {
		objs = append(objs, pod(fmt.Sprintf("ns%d", i%50), fmt.Sprintf("p%d", i), fmt.Sprintf("node%d", i%100), fmt.Sprintf("10.%d.%d.%d", 200+i/65536, (i/256)%256, i%256), map[string]string{"app": fmt.Sprintf("s%d", i/10)}))
	}
	for s := range 1000 {
		ns := fmt.Sprintf("ns%d", (s*10)%50)
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("s%d", s)}, Spec: corev1.ServiceSpec{ClusterIP: fmt.Sprintf("10.96.%d.%d", s/256, s%256), Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
		es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("s%d-1", s), Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name}}}
		for e := range 10 {
			i := s*10 + e
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.%d.%d.%d", 200+i/65536, (i/256)%256, i%256)}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: fmt.Sprintf("ns%d", i%50), Name: fmt.Sprintf("p%d", i)}})
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
	m, err := Build(bigSnapshot(), nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Services) != 1000 || len(m.Workloads) != 10000 {
		t.Fatalf("%d services, %d workloads", len(m.Services), len(m.Workloads))
	}
	for _, s := range m.Services {
		if len(s.Endpoints) != 10 {
			t.Fatalf("%s: %d endpoints", s.Hostname, len(s.Endpoints))
		}
	}
}

func BenchmarkBuild(b *testing.B) {
	s := bigSnapshot()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(s, nil, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
