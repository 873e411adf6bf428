package model

import (
	"reflect"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
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
)

// snap makes a snapshot of objects, as a store would: each a Resource
// with its kind, namespace and name.
func snap(objs ...runtime.Object) *config.Snapshot {
	s := &config.Snapshot{}
	for _, o := range objs {
		meta := o.(metav1.Object)
		kind := reflect.TypeOf(o).Elem().Name()
		s.Resources = append(s.Resources, config.Resource{
			GVK:       schema.GroupVersionKind{Kind: kind},
			Namespace: meta.GetNamespace(), Name: meta.GetName(), Object: o,
		})
	}
	return s
}

func ptr[T any](v T) *T { return &v }

func om(ns, name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }

// pod is a running pod whose service account is "sa-<name>".
func pod(ns, name, node, ip string, lbls map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: "sa-" + name}, Status: corev1.PodStatus{PodIP: ip}}
}

// service is a ClusterIP Service.
func service(ns, name, vip string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: om(ns, name), Spec: corev1.ServiceSpec{ClusterIP: vip, ClusterIPs: []string{vip}, Ports: ports}}
}

// slice is an EndpointSlice of service svc with one port "http" on
// targetPort and an endpoint per pod (address = pod IP, targetRef = pod).
func slice(svc string, targetPort int32, pods ...*corev1.Pod) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: pods[0].Namespace, Name: svc + "-abc",
		Labels: map[string]string{discoveryv1.LabelServiceName: svc}}, AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(targetPort)}}}
	for _, p := range pods {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{p.Status.PodIP}, NodeName: ptr(p.Spec.NodeName),
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name}})
	}
	return es
}

func node(name, ip string, cidrs ...string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDRs: cidrs},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}}}}
}

type mtlsLevel struct {
	ns       string
	selector map[string]string
	mode     securityapi.PeerAuthentication_MutualTLS_Mode
	ports    map[uint32]securityapi.PeerAuthentication_MutualTLS_Mode
}

func pa(name string, l mtlsLevel) *securityv1.PeerAuthentication {
	p := &securityv1.PeerAuthentication{ObjectMeta: om(l.ns, name)}
	p.Spec.Mtls = &securityapi.PeerAuthentication_MutualTLS{Mode: l.mode}
	if l.selector != nil {
		p.Spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: l.selector}
	}
	for port, m := range l.ports {
		if p.Spec.PortLevelMtls == nil {
			p.Spec.PortLevelMtls = map[uint32]*securityapi.PeerAuthentication_MutualTLS{}
		}
		p.Spec.PortLevelMtls[port] = &securityapi.PeerAuthentication_MutualTLS{Mode: m}
	}
	return p
}

const (
	unset      = securityapi.PeerAuthentication_MutualTLS_UNSET
	strict     = securityapi.PeerAuthentication_MutualTLS_STRICT
	permissive = securityapi.PeerAuthentication_MutualTLS_PERMISSIVE
	disable    = securityapi.PeerAuthentication_MutualTLS_DISABLE
)

func secs(s float64) *durationpb.Duration {
	return durationpb.New(time.Duration(s * float64(time.Second)))
}

// canaryVS is the canonical canary: testers (x-canary-user: "true") to
// v2, everyone else 90/10 v1/v2, retries 3 x 2s on
// 5xx,reset,connect-failure, timeout 10s, 1% of the split delayed 5s.
func canaryVS() *networkingv1.VirtualService {
	retries := func() *networkingapi.HTTPRetry {
		return &networkingapi.HTTPRetry{Attempts: 3, PerTryTimeout: secs(2), RetryOn: "5xx,reset,connect-failure"}
	}
	dest := func(subset string, w int32) *networkingapi.HTTPRouteDestination {
		return &networkingapi.HTTPRouteDestination{Destination: &networkingapi.Destination{Host: "reviews", Subset: subset}, Weight: w}
	}
	vs := &networkingv1.VirtualService{ObjectMeta: om("production", "reviews")}
	vs.Spec.Hosts = []string{"reviews"}
	vs.Spec.Http = []*networkingapi.HTTPRoute{{
		Name: "canary-testers",
		Match: []*networkingapi.HTTPMatchRequest{{Headers: map[string]*networkingapi.StringMatch{
			"x-canary-user": {MatchType: &networkingapi.StringMatch_Exact{Exact: "true"}}}}},
		Route:   []*networkingapi.HTTPRouteDestination{dest("v2", 0)},
		Retries: retries(), Timeout: secs(10),
	}, {
		Name:    "canary-split",
		Route:   []*networkingapi.HTTPRouteDestination{dest("v1", 90), dest("v2", 10)},
		Retries: retries(), Timeout: secs(10),
		Fault: &networkingapi.HTTPFaultInjection{Delay: &networkingapi.HTTPFaultInjection_Delay{
			Percentage:    &networkingapi.Percent{Value: 1},
			HttpDelayType: &networkingapi.HTTPFaultInjection_Delay_FixedDelay{FixedDelay: secs(5)}}},
	}}
	return vs
}

// reviewsDR is the canonical DestinationRule: subsets by version,
// LEAST_REQUEST, a connection pool and outlier detection.
func reviewsDR() *networkingv1.DestinationRule {
	dr := &networkingv1.DestinationRule{ObjectMeta: om("production", "reviews")}
	dr.Spec.Host = "reviews.production.svc.cluster.local"
	dr.Spec.TrafficPolicy = &networkingapi.TrafficPolicy{
		LoadBalancer: &networkingapi.LoadBalancerSettings{LbPolicy: &networkingapi.LoadBalancerSettings_Simple{Simple: networkingapi.LoadBalancerSettings_LEAST_REQUEST}},
		ConnectionPool: &networkingapi.ConnectionPoolSettings{
			Tcp:  &networkingapi.ConnectionPoolSettings_TCPSettings{MaxConnections: 100},
			Http: &networkingapi.ConnectionPoolSettings_HTTPSettings{Http1MaxPendingRequests: 100, Http2MaxRequests: 1000}},
		OutlierDetection: &networkingapi.OutlierDetection{Consecutive_5XxErrors: wrapperspb.UInt32(5), Interval: secs(10),
			BaseEjectionTime: secs(30), MaxEjectionPercent: 50},
	}
	dr.Spec.Subsets = []*networkingapi.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}, {Name: "v2", Labels: map[string]string{"version": "v2"}}}
	return dr
}
