package envoy

import (
	"fmt"
	"math/rand/v2"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"
	networkingapi "istio.io/api/networking/v1alpha3"
	securityapi "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/controller/model"
)

func ptr[T any](v T) *T { return &v }

// bigSnapshot has services x endpoints (each endpoint its own pod, two
// versions), spread over 50 namespaces and 100 nodes; every tenth
// service has a DestinationRule with subsets and a canary
// VirtualService; each namespace an AuthorizationPolicy; mesh-wide
// STRICT.
func bigSnapshot(services, endpoints int) *config.Snapshot {
	ip := func(i int) string { return fmt.Sprintf("10.%d.%d.%d", 200+i/65536, (i/256)%256, i%256) }
	var objs []runtime.Object
	for s := range services {
		ns, name := fmt.Sprintf("ns%d", s%50), fmt.Sprintf("s%d", s)
		objs = append(objs, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{ClusterIP: fmt.Sprintf("10.96.%d.%d", s/256, s%256), Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}})
		es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}}}
		for e := range endpoints {
			i := s*endpoints + e
			pod := fmt.Sprintf("%s-%d", name, e)
			objs = append(objs, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pod, Labels: map[string]string{"app": name, "version": fmt.Sprintf("v%d", e%2+1)}},
				Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node%d", i%100), ServiceAccountName: name}, Status: corev1.PodStatus{PodIP: ip(i)}})
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip(i)}, NodeName: ptr(fmt.Sprintf("node%d", i%100)),
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod}})
		}
		objs = append(objs, es)
		if s%10 == 0 {
			dr := &networkingv1.DestinationRule{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
			dr.Spec.Host = name
			dr.Spec.TrafficPolicy = &networkingapi.TrafficPolicy{LoadBalancer: &networkingapi.LoadBalancerSettings{
				LbPolicy: &networkingapi.LoadBalancerSettings_Simple{Simple: networkingapi.LoadBalancerSettings_LEAST_REQUEST}}}
			dr.Spec.Subsets = []*networkingapi.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}, {Name: "v2", Labels: map[string]string{"version": "v2"}}}
			vs := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
			vs.Spec.Hosts = []string{name}
			vs.Spec.Http = []*networkingapi.HTTPRoute{{Route: []*networkingapi.HTTPRouteDestination{
				{Destination: &networkingapi.Destination{Host: name, Subset: "v1"}, Weight: 90},
				{Destination: &networkingapi.Destination{Host: name, Subset: "v2"}, Weight: 10}}}}
			objs = append(objs, dr, vs)
		}
	}
	for n := range 50 {
		ap := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns%d", n), Name: "allow"}}
		ap.Spec.Rules = []*securityapi.Rule{{From: []*securityapi.Rule_From{{Source: &securityapi.Source{Namespaces: []string{fmt.Sprintf("ns%d", n)}}}},
			To: []*securityapi.Rule_To{{Operation: &securityapi.Operation{Methods: []string{"GET"}, Paths: []string{"/api/*"}}}}}}
		objs = append(objs, ap)
	}
	pa := &securityv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: model.RootNamespace, Name: "default"}}
	pa.Spec.Mtls = &securityapi.PeerAuthentication_MutualTLS{Mode: securityapi.PeerAuthentication_MutualTLS_STRICT}
	pa2 := &securityv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: "ns1", Name: "web"}}
	pa2.Spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"version": "v2"}}
	pa2.Spec.PortLevelMtls = map[uint32]*securityapi.PeerAuthentication_MutualTLS{8080: {Mode: securityapi.PeerAuthentication_MutualTLS_DISABLE}}
	objs = append(objs, pa, pa2)
	snap := &config.Snapshot{}
	for _, o := range objs {
		meta := o.(metav1.Object)
		snap.Resources = append(snap.Resources, config.Resource{GVK: schema.GroupVersionKind{Kind: kindOf(o)}, Namespace: meta.GetNamespace(), Name: meta.GetName(), Object: o})
	}
	return snap
}

func kindOf(o runtime.Object) string {
	switch o.(type) {
	case *corev1.Service:
		return "Service"
	case *corev1.Pod:
		return "Pod"
	case *discoveryv1.EndpointSlice:
		return "EndpointSlice"
	case *networkingv1.DestinationRule:
		return "DestinationRule"
	case *networkingv1.VirtualService:
		return "VirtualService"
	case *securityv1.AuthorizationPolicy:
		return "AuthorizationPolicy"
	case *securityv1.PeerAuthentication:
		return "PeerAuthentication"
	}
	return ""
}

func eqMsgs(x, y []proto.Message) bool {
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if !proto.Equal(x[i], y[i]) {
			return false
		}
	}
	return true
}

func meshEqual(a, b *Mesh) bool {
	eq := eqMsgs
	return eq(msgs(a.Clusters), msgs(b.Clusters)) && eq(msgs(a.Endpoints), msgs(b.Endpoints)) &&
		eq(msgs(a.Routes), msgs(b.Routes)) && proto.Equal(a.Outbound, b.Outbound)
}

func msgs[T proto.Message](s []T) []proto.Message {
	out := make([]proto.Message, len(s))
	for i, m := range s {
		out[i] = m
	}
	return out
}

// TestDeterministic: the same objects in any order give proto.Equal
// resources, and every resource of a mesh this size validates.
func TestDeterministic(t *testing.T) {
	s := bigSnapshot(40, 4)
	ex, err := config.LoadDir(examplesDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ex.Resources {
		if r.GVK.Kind != "PeerAuthentication" || r.Namespace != model.RootNamespace {
			s.Resources = append(s.Resources, r)
		}
	}
	build := func(s *config.Snapshot) (*model.Model, *Mesh) {
		m, err := model.Build(s, nil, model.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return m, buildMesh(t, m)
	}
	m0, want := build(s)
	if again := buildMesh(t, m0); !meshEqual(want, again) {
		t.Fatal("BuildMesh twice on one model: different output")
	}
	wantNodes := map[string][]*listenerv3.Listener{}
	for i := range 100 {
		node := fmt.Sprintf("node%d", i)
		wantNodes[node] = nodeListeners(t, m0, node)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 3 {
		sh := &config.Snapshot{Resources: append([]config.Resource(nil), s.Resources...)}
		r.Shuffle(len(sh.Resources), func(i, j int) { sh.Resources[i], sh.Resources[j] = sh.Resources[j], sh.Resources[i] })
		m, got := build(sh)
		if !meshEqual(want, got) {
			t.Fatalf("shuffle %d: mesh differs", i)
		}
		for node, wl := range wantNodes {
			gl, err := NodeListeners(m, node)
			if err != nil {
				t.Fatal(err)
			}
			if !eqMsgs(msgs(wl), msgs(gl)) {
				t.Fatalf("shuffle %d: %s listeners differ", i, node)
			}
		}
	}
}

func BenchmarkBuildMesh(b *testing.B) {
	m, err := model.Build(bigSnapshot(1000, 10), nil, model.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := BuildMesh(m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNodeListeners(b *testing.B) {
	m, err := model.Build(bigSnapshot(1000, 10), nil, model.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NodeListeners(m, "node7"); err != nil {
			b.Fatal(err)
		}
	}
}
