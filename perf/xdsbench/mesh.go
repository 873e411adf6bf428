// Package xdsbench is the xDS benchmark's mesh: a synthetic cluster of
// services, pods and nodes, where every CanaryEvery-th service has a
// canary VirtualService and a DestinationRule with two subsets (so 3
// clusters and 3 load assignments), and the one edit the benchmark
// makes: such a service's canary weights.
package xdsbench

import (
	"fmt"

	networkingapi "istio.io/api/networking/v1"
	securityapi "istio.io/api/security/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/fibmesh/fibmesh/controller/config"
)

// Mesh is the benchmark's input and the handles to edit it.
type Mesh struct {
	Snapshot *config.Snapshot
	Nodes    []string
	vs       map[int]*networkingv1.VirtualService
	// slices are the services' EndpointSlices; perService the pods each
	// has (the last service takes the remainder).
	slices     []*discoveryv1.EndpointSlice
	perService int
	// vsAt and sliceAt are where each service's VirtualService and
	// EndpointSlice are in Snapshot.Resources: an edit replaces the
	// object there with a changed copy, as a store does (objects in a
	// snapshot are shared and never modified). Indexes, not a map by
	// object: the benchmark's own bookkeeping stays out of the
	// controller's RSS it measures.
	vsAt    map[int]int
	sliceAt []int
}

// Namespaces the services and pods are spread over.
const Namespaces = 50

// CanaryEvery: services 0, CanaryEvery, 2×CanaryEvery, ... have a canary
// VirtualService and DestinationRule (a tenth of the mesh, as many
// meshes route a few services and leave the rest to the defaults).
const CanaryEvery = 10

// NodeName is the name of node i.
func NodeName(i int) string { return fmt.Sprintf("node%d", i) }

// ServiceHost is the hostname of service s.
func ServiceHost(s int) string {
	return fmt.Sprintf("svc%d.ns%d.svc.cluster.local", s, s%Namespaces)
}

// RouteName is the RDS name of service s's route configuration.
func RouteName(s int) string { return ServiceHost(s) + ":80" }

// New makes a mesh of services, pods spread round-robin over nodes (pod i
// on node i mod nodes, in that node's /24 pod CIDR), and pods/services
// endpoints per service, half version v1 and half v2, with mesh-wide
// STRICT mTLS.
func New(services, pods, nodes int) (*Mesh, error) {
	if services <= 0 || nodes <= 0 || pods < services {
		return nil, fmt.Errorf("xdsbench: want services > 0, nodes > 0 and pods >= services (got %d, %d, %d)", services, nodes, pods)
	}
	if nodes > 65536 || pods/nodes > 240 {
		return nil, fmt.Errorf("xdsbench: at most 65536 nodes and 240 pods per node (got %d nodes, %d pods)", nodes, pods)
	}
	canaries := (services + CanaryEvery - 1) / CanaryEvery
	m := &Mesh{Snapshot: &config.Snapshot{Resources: make([]config.Resource, 0, nodes+pods+2*services+2*canaries+1)},
		vs: map[int]*networkingv1.VirtualService{}, vsAt: map[int]int{}}
	add := func(kind, group, version string, o runtime.Object) {
		meta := o.(metav1.Object)
		m.Snapshot.Resources = append(m.Snapshot.Resources, config.Resource{
			GVK:       schema.GroupVersionKind{Group: group, Version: version, Kind: kind},
			Namespace: meta.GetNamespace(), Name: meta.GetName(), Object: o,
		})
	}
	cidr := func(n int) string { return fmt.Sprintf("10.%d.%d", 128+n/256, n%256) }
	for n := range nodes {
		m.Nodes = append(m.Nodes, NodeName(n))
		add("Node", "", "v1", &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: NodeName(n)},
			Spec: corev1.NodeSpec{PodCIDRs: []string{cidr(n) + ".0/24"}},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("10.100.%d.%d", n/256, n%256)}}}})
	}
	perService := pods / services
	m.perService = perService
	podIP := func(i int) string { return fmt.Sprintf("%s.%d", cidr(i%nodes), 10+i/nodes) }
	podName := func(i int) string { return fmt.Sprintf("p%d", i) }
	for i := range pods {
		s := min(i/perService, services-1)
		ns := fmt.Sprintf("ns%d", s%Namespaces)
		version := "v1"
		if i%2 == 1 {
			version = "v2"
		}
		add("Pod", "", "v1", &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: podName(i), Labels: map[string]string{"app": fmt.Sprintf("svc%d", s), "version": version}},
			Spec:       corev1.PodSpec{NodeName: NodeName(i % nodes), ServiceAccountName: fmt.Sprintf("svc%d", s)},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: podIP(i), PodIPs: []corev1.PodIP{{IP: podIP(i)}}},
		})
	}
	for s := range services {
		ns, name := fmt.Sprintf("ns%d", s%Namespaces), fmt.Sprintf("svc%d", s)
		vip := fmt.Sprintf("10.96.%d.%d", s/256, s%256)
		add("Service", "", "v1", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{ClusterIP: vip, ClusterIPs: []string{vip}, Selector: map[string]string{"app": name},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}})
		es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: name}}, AddressType: discoveryv1.AddressTypeIPv4,
			Ports: []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}}}
		for i := s * perService; i < (s+1)*perService || (s == services-1 && i < pods); i++ {
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{podIP(i)}, NodeName: ptr(NodeName(i % nodes)),
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: podName(i)}})
		}
		m.slices = append(m.slices, es)
		m.sliceAt = append(m.sliceAt, len(m.Snapshot.Resources))
		add("EndpointSlice", "discovery.k8s.io", "v1", es)
		if s%CanaryEvery != 0 {
			continue
		}
		vs := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: networkingapi.VirtualService{Hosts: []string{name}, Http: []*networkingapi.HTTPRoute{{
				Name: "canary",
				Route: []*networkingapi.HTTPRouteDestination{
					{Destination: &networkingapi.Destination{Host: name, Subset: "v1"}, Weight: 90},
					{Destination: &networkingapi.Destination{Host: name, Subset: "v2"}, Weight: 10},
				},
			}}}}
		m.vs[s] = vs
		m.vsAt[s] = len(m.Snapshot.Resources)
		add("VirtualService", "networking.istio.io", "v1", vs)
		add("DestinationRule", "networking.istio.io", "v1", &networkingv1.DestinationRule{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: networkingapi.DestinationRule{Host: name, Subsets: []*networkingapi.Subset{
				{Name: "v1", Labels: map[string]string{"version": "v1"}},
				{Name: "v2", Labels: map[string]string{"version": "v2"}},
			}}})
	}
	add("PeerAuthentication", "security.istio.io", "v1", &securityv1.PeerAuthentication{
		ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "default"},
		Spec:       securityapi.PeerAuthentication{Mtls: &securityapi.PeerAuthentication_MutualTLS{Mode: securityapi.PeerAuthentication_MutualTLS_STRICT}},
	})
	return m, nil
}

// SetCanary sets service s's canary weights (v1 gets w1, v2 100-w1); s
// must be a multiple of CanaryEvery.
func (m *Mesh) SetCanary(s int, w1 int32) {
	vs, ok := m.vs[s]
	if !ok {
		panic(fmt.Sprintf("xdsbench: service %d has no VirtualService (want a multiple of %d)", s, CanaryEvery))
	}
	c := vs.DeepCopy()
	r := c.Spec.Http[0].Route
	r[0].Weight, r[1].Weight = w1, 100-w1
	m.vs[s] = c
	m.Snapshot.Resources[m.vsAt[s]].Object = c
}

// PodService is the service whose endpoint pod i is, in a mesh of pods
// and services.
func PodService(i, pods, services int) int { return min(i/(pods/services), services-1) }

// SetReady sets pod i's endpoint's ready condition (a readiness probe
// flipping): the endpoint churn the benchmark times.
func (m *Mesh) SetReady(i int, ready bool) {
	s := min(i/m.perService, len(m.slices)-1)
	c := m.slices[s].DeepCopy()
	c.Endpoints[i-s*m.perService].Conditions.Ready = ptr(ready)
	m.Snapshot.Resources[m.sliceAt[s]].Object = c
	m.slices[s] = c
}

func ptr[T any](v T) *T { return &v }
