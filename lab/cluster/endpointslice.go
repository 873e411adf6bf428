package cluster

import (
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
)

// maxEndpointsPerSlice is the endpoint-slice controller's default
// --max-endpoints-per-slice.
const maxEndpointsPerSlice = 100

// EndpointSlices derives the EndpointSlices of every Service that has a
// selector, from the pods, as Kubernetes' endpoint-slice controller does:
// the pods of the Service's namespace whose labels match the selector and
// that have an IP and are not finished (Succeeded, Failed) are endpoints,
// ready and serving when the pod's Ready condition is true; each Service
// port becomes a slice port whose number is the targetPort, a named
// targetPort resolved against the pod's container ports (a pod without
// that port name has no endpoint for that port); pods that resolve to the
// same ports share slices of at most 100 endpoints. Slices carry the
// labels kubernetes.io/service-name and
// endpointslice.kubernetes.io/managed-by plus the Service's own labels,
// and names "<service>-<hash>" stable for the same Service and ports.
// Selector-less and ExternalName Services get none (their slices are the
// user's). The result is sorted by namespace and name.
func EndpointSlices(services []*corev1.Service, pods []*corev1.Pod) []*discoveryv1.EndpointSlice {
	var out []*discoveryv1.EndpointSlice
	for _, s := range services {
		if len(s.Spec.Selector) == 0 || s.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		sel := labels.SelectorFromSet(s.Spec.Selector)
		type group struct {
			ports     []discoveryv1.EndpointPort
			endpoints []discoveryv1.Endpoint
		}
		groups := map[string]*group{}
		for _, p := range pods {
			if p.Namespace != s.Namespace || !sel.Matches(labels.Set(p.Labels)) || p.Status.PodIP == "" ||
				p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				continue
			}
			ports := endpointPorts(s, p)
			gk := portsKey(ports)
			g := groups[gk]
			if g == nil {
				g = &group{ports: ports}
				groups[gk] = g
			}
			ready := podReady(p)
			ep := discoveryv1.Endpoint{
				Addresses:  []string{p.Status.PodIP},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr(ready), Serving: ptr(ready), Terminating: ptr(false)},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name},
			}
			if p.Spec.NodeName != "" {
				ep.NodeName = ptr(p.Spec.NodeName)
			}
			g.endpoints = append(g.endpoints, ep)
		}
		if len(groups) == 0 {
			// A Service with no pods still has a slice, empty, as the
			// controller writes one: "no endpoints" is news too.
			groups[""] = &group{ports: endpointPorts(s, nil)}
		}
		for _, gk := range slices.Sorted(maps.Keys(groups)) {
			g := groups[gk]
			slices.SortFunc(g.endpoints, func(a, b discoveryv1.Endpoint) int {
				return strings.Compare(a.TargetRef.Name, b.TargetRef.Name)
			})
			for i := 0; i == 0 || i < len(g.endpoints); i += maxEndpointsPerSlice {
				eps := g.endpoints[i:min(i+maxEndpointsPerSlice, len(g.endpoints))]
				lbls := maps.Clone(s.Labels)
				if lbls == nil {
					lbls = map[string]string{}
				}
				lbls[LabelServiceName] = s.Name
				lbls[LabelManagedBy] = ManagedByController
				out = append(out, &discoveryv1.EndpointSlice{
					TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
					ObjectMeta: metav1.ObjectMeta{
						Name:      sliceName(s, gk, i/maxEndpointsPerSlice),
						Namespace: s.Namespace,
						Labels:    lbls,
						OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: s.Name,
							Controller: ptr(true), BlockOwnerDeletion: ptr(true)}},
					},
					AddressType: discoveryv1.AddressTypeIPv4,
					Ports:       g.ports,
					Endpoints:   slices.Clone(eps),
				})
			}
		}
	}
	slices.SortFunc(out, func(a, b *discoveryv1.EndpointSlice) int {
		return strings.Compare(Key(a.Namespace, a.Name), Key(b.Namespace, b.Name))
	})
	return out
}

// endpointPorts resolves the Service's ports for pod p (nil: for a slice
// without endpoints, where named targetPorts cannot be resolved and
// numbers are kept as they are).
func endpointPorts(s *corev1.Service, p *corev1.Pod) []discoveryv1.EndpointPort {
	var out []discoveryv1.EndpointPort
	for _, sp := range s.Spec.Ports {
		proto := sp.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		var num int32
		switch {
		case sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal != "":
			if p == nil {
				continue
			}
			n, ok := findPort(p, sp.TargetPort.StrVal, proto)
			if !ok {
				continue
			}
			num = n
		case sp.TargetPort.IntVal != 0:
			num = sp.TargetPort.IntVal
		default:
			num = sp.Port
		}
		out = append(out, discoveryv1.EndpointPort{Name: ptr(sp.Name), Port: ptr(num), Protocol: ptr(proto), AppProtocol: sp.AppProtocol})
	}
	return out
}

// findPort finds a container port by name and protocol, as
// podutil.FindPort does.
func findPort(p *corev1.Pod, name string, proto corev1.Protocol) (int32, bool) {
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			cpProto := cp.Protocol
			if cpProto == "" {
				cpProto = corev1.ProtocolTCP
			}
			if cp.Name == name && cpProto == proto {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

func portsKey(ports []discoveryv1.EndpointPort) string {
	var b strings.Builder
	for _, p := range ports {
		fmt.Fprintf(&b, "%s/%d/%s,", *p.Name, *p.Port, *p.Protocol)
	}
	return b.String()
}

// sliceName is "<service>-<5 characters>", the characters a hash of the
// Service, its port set and the slice's index (the controller uses
// generateName: random).
func sliceName(s *corev1.Service, ports string, i int) string {
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%s#%s#%d", s.Namespace, s.Name, ports, i)
	enc := rand.SafeEncodeString(fmt.Sprintf("%010d", h.Sum32()))
	name := s.Name
	if len(name) > 57 {
		name = name[:57]
	}
	return name + "-" + enc[len(enc)-5:]
}

// podReady says whether p's Ready condition is true.
func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
