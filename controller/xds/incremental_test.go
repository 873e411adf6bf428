package xds

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	networkingapi "istio.io/api/networking/v1alpha3"
	securityapi "istio.io/api/security/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"

	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/controller/model"
)

// TestIncrementalEqualsFull: after each edit of a sequence, what the
// server holds after pushing only what the edit changed equals what a
// fresh server holds after a full push of the same model. This is what
// makes skipping work safe.
func TestIncrementalEqualsFull(t *testing.T) {
	snap, err := config.LoadDir("../testdata/cluster")
	if err != nil {
		t.Fatal(err)
	}
	// find returns an object to edit: a copy, which replaces it in the
	// snapshot, as a store replaces an object that changed (objects in a
	// snapshot are never modified; model.Build reuses what it built from
	// an object it saw before).
	find := func(kind, ns, name string) any {
		for i, r := range snap.Resources {
			if r.GVK.Kind == kind && r.Namespace == ns && r.Name == name {
				c := r.Object.DeepCopyObject()
				snap.Resources[i].Object = c
				return c
			}
		}
		t.Fatalf("no %s %s/%s in examples", kind, ns, name)
		return nil
	}
	remove := func(kind, ns, name string) {
		for i, r := range snap.Resources {
			if r.GVK.Kind == kind && r.Namespace == ns && r.Name == name {
				snap.Resources = append(snap.Resources[:i], snap.Resources[i+1:]...)
				return
			}
		}
		t.Fatalf("no %s %s/%s to remove", kind, ns, name)
	}
	add := func(group, kind string, obj interface {
		runtime.Object
		GetNamespace() string
		GetName() string
	}) {
		snap.Resources = append(snap.Resources, config.Resource{
			GVK:       schema.GroupVersionKind{Group: group, Version: "v1", Kind: kind},
			Namespace: obj.GetNamespace(), Name: obj.GetName(), Object: obj,
		})
	}
	edits := []struct {
		name string
		do   func()
	}{
		{"an endpoint becomes not ready", func() {
			es := find("EndpointSlice", "production", "reviews-1").(*discoveryv1.EndpointSlice)
			es.Endpoints[0].Conditions.Ready = ptrTo(false)
		}},
		{"the endpoint is ready again", func() {
			es := find("EndpointSlice", "production", "reviews-1").(*discoveryv1.EndpointSlice)
			es.Endpoints[0].Conditions.Ready = ptrTo(true)
		}},
		{"canary weights", func() {
			vs := find("VirtualService", "production", "reviews").(*networkingv1.VirtualService)
			vs.Spec.Http[1].Route[0].Weight, vs.Spec.Http[1].Route[1].Weight = 70, 30
		}},
		{"destination rule load balancer", func() {
			dr := find("DestinationRule", "production", "reviews").(*networkingv1.DestinationRule)
			dr.Spec.TrafficPolicy.LoadBalancer = &networkingapi.LoadBalancerSettings{
				LbPolicy: &networkingapi.LoadBalancerSettings_Simple{Simple: networkingapi.LoadBalancerSettings_ROUND_ROBIN}}
		}},
		{"ratings PERMISSIVE", func() { addPermissive(snap, "production", "ratings") }},
		{"ratings DISABLE (plaintext upstream)", func() {
			pa := find("PeerAuthentication", "production", "ratings").(*securityv1.PeerAuthentication)
			pa.Spec.Mtls.Mode = securityapi.PeerAuthentication_MutualTLS_DISABLE
		}},
		{"authorization policy removed", func() { remove("AuthorizationPolicy", "production", "reviews-allow-frontend") }},
		{"a pod goes", func() { remove("Pod", "production", "reviews-v2") }},
		{"a service port changes", func() {
			svc := find("Service", "production", "ratings").(*corev1.Service)
			svc.Spec.Ports[0].Port = 9091
		}},
		{"a route goes", func() { remove("VirtualService", "production", "reviews") }},
		{"a pod leaves the mesh (pod label)", func() {
			find("Pod", "production", "reviews-v1").(*corev1.Pod).Labels[model.LabelCapture] = model.CaptureDisabled
		}},
		{"the pod is back in the mesh", func() {
			delete(find("Pod", "production", "reviews-v1").(*corev1.Pod).Labels, model.LabelCapture)
		}},
		{"a namespace leaves the mesh (namespace label)", func() {
			find("Namespace", "", "production").(*corev1.Namespace).Labels[model.LabelDataplaneMode] = model.DataplaneModeNone
		}},
		{"the namespace is back in the mesh", func() {
			delete(find("Namespace", "", "production").(*corev1.Namespace).Labels, model.LabelDataplaneMode)
		}},
		{"a TCP service", func() {
			add("", "Service", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "db"}, Spec: corev1.ServiceSpec{
				ClusterIP: "10.96.0.20", Ports: []corev1.ServicePort{{Name: "tcp-postgres", Port: 5432, Protocol: corev1.ProtocolTCP}}}})
		}},
		{"a tcp route (sourceLabels, weights)", func() {
			vs := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "db"}}
			vs.Spec.Hosts = []string{"db"}
			vs.Spec.Tcp = []*networkingapi.TCPRoute{{
				Match: []*networkingapi.L4MatchAttributes{{SourceLabels: map[string]string{"app": "frontend"}}},
				Route: []*networkingapi.RouteDestination{{Destination: &networkingapi.Destination{Host: "db", Subset: "replica"}}},
			}, {
				Route: []*networkingapi.RouteDestination{{Destination: &networkingapi.Destination{Host: "db", Subset: "v1"}, Weight: 90},
					{Destination: &networkingapi.Destination{Host: "db", Subset: "v2"}, Weight: 10}},
			}}
			add("networking.istio.io", "VirtualService", vs)
		}},
		{"tcp route weights", func() {
			vs := find("VirtualService", "production", "db").(*networkingv1.VirtualService)
			vs.Spec.Tcp[1].Route[0].Weight, vs.Spec.Tcp[1].Route[1].Weight = 50, 50
		}},
		{"a source pod's labels change", func() {
			find("Pod", "production", "frontend").(*corev1.Pod).Labels["app"] = "frontend-next"
		}},
		{"a TLS ServiceEntry", func() {
			se := &networkingv1.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "api"}}
			se.Spec.Hosts = []string{"api.example.com"}
			se.Spec.Resolution = networkingapi.ServiceEntry_DNS
			se.Spec.Ports = []*networkingapi.ServicePort{{Number: 443, Name: "tls", Protocol: "TLS"}}
			add("networking.istio.io", "ServiceEntry", se)
		}},
		{"a tls route (SNI)", func() {
			vs := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "api"}}
			vs.Spec.Hosts = []string{"api.example.com"}
			vs.Spec.Tls = []*networkingapi.TLSRoute{{
				Match: []*networkingapi.TLSMatchAttributes{{SniHosts: []string{"api.example.com"}, Port: 443}},
				Route: []*networkingapi.RouteDestination{{Destination: &networkingapi.Destination{Host: "api.example.com"}}},
			}}
			add("networking.istio.io", "VirtualService", vs)
		}},
		{"the tls route's SNI changes", func() {
			find("VirtualService", "production", "api").(*networkingv1.VirtualService).Spec.Tls[0].Match[0].SniHosts = []string{"*.example.com"}
		}},
		{"the tcp route goes", func() { remove("VirtualService", "production", "db") }},
	}

	ctx := context.Background()
	inc := New(Options{})
	m, err := model.Build(snap, nil, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r := inc.push(ctx, m, time.Now(), pending{full: true}); r.Err != nil {
		t.Fatal(r.Err)
	}
	for _, e := range edits {
		e.do()
		next, err := model.Build(snap, m, model.Options{})
		if err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
		m = next
		var ch pending
		ch.add(m.Change)
		if r := inc.push(ctx, m, time.Now(), ch); r.Err != nil {
			t.Fatalf("%s: %v", e.name, r.Err)
		}
		fresh := New(Options{})
		if r := fresh.push(ctx, m, time.Now(), pending{full: true}); r.Err != nil {
			t.Fatalf("%s: fresh push: %v", e.name, r.Err)
		}
		for _, typ := range []string{resource.ClusterType, resource.EndpointType, resource.RouteType, fdsType} {
			got, want := heldBy(inc, typ), heldBy(fresh, typ)
			if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
				t.Errorf("%s: %s after an incremental push differs from a full one (-full +incremental):\n%s", e.name, ShortType(typ), d)
			}
		}
		for n := range fresh.ldsHash {
			if inc.ldsHash[n] != fresh.ldsHash[n] {
				t.Errorf("%s: node %s's listeners differ: incremental %s, full %s", e.name, n, inc.ldsHash[n], fresh.ldsHash[n])
			}
		}
		if len(inc.ldsHash) != len(fresh.ldsHash) {
			t.Errorf("%s: listeners for %d nodes, want %d", e.name, len(inc.ldsHash), len(fresh.ldsHash))
		}
	}
}

var fdsType = Types[len(Types)-1]

// heldBy is what the server serves of a type (decoded from the bytes
// sent), FlowTable versions cleared (they say when a table last changed,
// which differs by design).
func heldBy(s *Server, typ string) map[string]proto.Message {
	out := map[string]proto.Message{}
	all, err := s.shared[typ].scope.resources()
	if err != nil {
		panic(err)
	}
	for name, r := range all {
		if ft, ok := r.(*fibv1.FlowTable); ok {
			c := proto.Clone(ft).(*fibv1.FlowTable)
			c.Version = ""
			r = c
		}
		out[name] = r
	}
	return out
}

func ptrTo[T any](v T) *T { return &v }
