package config

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	apinet "istio.io/api/networking/v1alpha3"
	apisec "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

const examplesDir = "../testdata/cluster"

// TestExamples checks that examples/ decodes with no error and holds the
// canonical demo mesh, value for value.
func TestExamples(t *testing.T) {
	s, err := LoadDir(examplesDir)
	if err != nil {
		t.Fatalf("LoadDir(%s): %v", examplesDir, err)
	}
	if len(s.Skipped) != 0 {
		t.Errorf("examples hold kinds fibmesh skips: %v", s.Skipped)
	}
	byKey := map[string]Resource{}
	var keys []string
	for _, r := range s.Resources {
		k := r.GVK.GroupVersion().String() + " " + r.Key()
		byKey[r.Key()] = r
		keys = append(keys, k)
	}
	wantKeys := []string{
		"v1 Namespace istio-system",
		"v1 Namespace production",
		"v1 Namespace staging",
		"v1 Pod production/frontend",
		"v1 Pod production/ratings",
		"v1 Pod production/reviews-v1",
		"v1 Pod production/reviews-v2",
		"v1 Service production/frontend",
		"v1 Service production/ratings",
		"v1 Service production/reviews",
		"v1 ServiceAccount production/frontend",
		"v1 ServiceAccount production/ratings",
		"v1 ServiceAccount production/reviews",
		"discovery.k8s.io/v1 EndpointSlice production/frontend-1",
		"discovery.k8s.io/v1 EndpointSlice production/ratings-1",
		"discovery.k8s.io/v1 EndpointSlice production/reviews-1",
		"networking.istio.io/v1alpha3 DestinationRule production/ratings",
		"networking.istio.io/v1beta1 DestinationRule production/reviews",
		"networking.istio.io/v1 ServiceEntry production/books-api",
		"networking.istio.io/v1alpha3 VirtualService production/ratings",
		"networking.istio.io/v1 VirtualService production/reviews",
		"security.istio.io/v1 AuthorizationPolicy production/reviews-allow-frontend",
		"security.istio.io/v1 PeerAuthentication istio-system/default",
		"security.istio.io/v1beta1 PeerAuthentication staging/default",
	}
	if diff := cmp.Diff(wantKeys, keys); diff != "" {
		t.Fatalf("resources (-want +got):\n%s", diff)
	}

	retries := &apinet.HTTPRetry{Attempts: 3, PerTryTimeout: durationpb.New(2 * time.Second), RetryOn: "5xx,reset,connect-failure"}
	dest := func(subset string, weight int32) *apinet.HTTPRouteDestination {
		return &apinet.HTTPRouteDestination{Destination: &apinet.Destination{Host: "reviews", Subset: subset}, Weight: weight}
	}
	wantSpecs := map[string]proto.Message{
		"VirtualService production/reviews": &apinet.VirtualService{
			Hosts: []string{"reviews"},
			Http: []*apinet.HTTPRoute{{
				Name: "canary-testers",
				Match: []*apinet.HTTPMatchRequest{{Headers: map[string]*apinet.StringMatch{
					"x-canary-user": {MatchType: &apinet.StringMatch_Exact{Exact: "true"}},
				}}},
				Route:   []*apinet.HTTPRouteDestination{dest("v2", 0)},
				Retries: retries,
				Timeout: durationpb.New(10 * time.Second),
			}, {
				Name:    "canary-split",
				Route:   []*apinet.HTTPRouteDestination{dest("v1", 90), dest("v2", 10)},
				Retries: retries,
				Timeout: durationpb.New(10 * time.Second),
				Fault: &apinet.HTTPFaultInjection{Delay: &apinet.HTTPFaultInjection_Delay{
					Percentage:    &apinet.Percent{Value: 1},
					HttpDelayType: &apinet.HTTPFaultInjection_Delay_FixedDelay{FixedDelay: durationpb.New(5 * time.Second)},
				}},
			}},
		},
		"DestinationRule production/reviews": &apinet.DestinationRule{
			Host: "reviews",
			TrafficPolicy: &apinet.TrafficPolicy{
				LoadBalancer: &apinet.LoadBalancerSettings{LbPolicy: &apinet.LoadBalancerSettings_Simple{Simple: apinet.LoadBalancerSettings_LEAST_REQUEST}},
				ConnectionPool: &apinet.ConnectionPoolSettings{
					Tcp:  &apinet.ConnectionPoolSettings_TCPSettings{MaxConnections: 100},
					Http: &apinet.ConnectionPoolSettings_HTTPSettings{Http1MaxPendingRequests: 100, Http2MaxRequests: 1000},
				},
				OutlierDetection: &apinet.OutlierDetection{
					Consecutive_5XxErrors: wrapperspb.UInt32(5),
					Interval:              durationpb.New(10 * time.Second),
					BaseEjectionTime:      durationpb.New(30 * time.Second),
					MaxEjectionPercent:    50,
				},
			},
			Subsets: []*apinet.Subset{
				{Name: "v1", Labels: map[string]string{"version": "v1"}},
				{Name: "v2", Labels: map[string]string{"version": "v2"}},
			},
		},
		"PeerAuthentication istio-system/default": &apisec.PeerAuthentication{
			Mtls: &apisec.PeerAuthentication_MutualTLS{Mode: apisec.PeerAuthentication_MutualTLS_STRICT},
		},
		"PeerAuthentication staging/default": &apisec.PeerAuthentication{
			Mtls: &apisec.PeerAuthentication_MutualTLS{Mode: apisec.PeerAuthentication_MutualTLS_PERMISSIVE},
		},
		"AuthorizationPolicy production/reviews-allow-frontend": &apisec.AuthorizationPolicy{
			Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "reviews"}},
			Action:   apisec.AuthorizationPolicy_ALLOW,
			Rules: []*apisec.Rule{{
				From: []*apisec.Rule_From{{Source: &apisec.Source{Principals: []string{"cluster.local/ns/production/sa/frontend"}}}},
				To:   []*apisec.Rule_To{{Operation: &apisec.Operation{Methods: []string{"GET"}, Paths: []string{"/api/reviews/*"}}}},
				When: []*apisec.Condition{{Key: "request.headers[x-request-id]", NotValues: []string{""}}},
			}},
		},
	}
	for key, want := range wantSpecs {
		got := objView(byKey[key].Object).(istioView).Spec
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Errorf("%s spec (-want +got):\n%s", key, diff)
		}
	}

	if l := byKey["Namespace staging"].Object.(*corev1.Namespace).Labels; len(l) == 0 {
		t.Errorf("Namespace staging has no label")
	}
	svc := byKey["Service production/reviews"].Object.(*corev1.Service)
	if p := svc.Spec.Ports; len(p) != 1 || p[0].Name != "http" || p[0].Port != 9080 {
		t.Errorf("Service reviews ports = %v, want one port 9080 named http", p)
	}

	// Pods sit where the lab puts them: node<i>, IP in 10.200.<i>.0/24;
	// every EndpointSlice endpoint is a pod with its IP and node.
	pods := map[string]*corev1.Pod{}
	for _, r := range s.Resources {
		p, ok := r.Object.(*corev1.Pod)
		if !ok {
			continue
		}
		pods[p.Name] = p
		node := p.Spec.NodeName
		if !strings.HasPrefix(node, "node") {
			t.Errorf("Pod %s: nodeName %q, want node<i>", p.Name, node)
			continue
		}
		cidr := netip.MustParsePrefix(fmt.Sprintf("10.200.%s.0/24", strings.TrimPrefix(node, "node")))
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil || !cidr.Contains(ip) || len(p.Status.PodIPs) != 1 || p.Status.PodIPs[0].IP != p.Status.PodIP {
			t.Errorf("Pod %s on %s: podIP %q podIPs %v, want one IP in %s", p.Name, node, p.Status.PodIP, p.Status.PodIPs, cidr)
		}
		if p.Labels["app"] == "" || (p.Labels["version"] != "v1" && p.Labels["version"] != "v2") {
			t.Errorf("Pod %s labels %v, want app and version v1|v2", p.Name, p.Labels)
		}
	}
	if v1, v2 := pods["reviews-v1"], pods["reviews-v2"]; v1 == nil || v2 == nil || v1.Labels["version"] != "v1" || v2.Labels["version"] != "v2" {
		t.Errorf("want pods reviews-v1 (version v1) and reviews-v2 (version v2)")
	}
	for _, r := range s.Resources {
		es, ok := r.Object.(*discoveryv1.EndpointSlice)
		if !ok {
			continue
		}
		svcName := es.Labels[discoveryv1.LabelServiceName]
		for _, ep := range es.Endpoints {
			p := pods[ep.TargetRef.Name]
			if p == nil || len(ep.Addresses) != 1 || ep.Addresses[0] != p.Status.PodIP || ep.NodeName == nil || *ep.NodeName != p.Spec.NodeName || p.Labels["app"] != svcName {
				t.Errorf("EndpointSlice %s: endpoint %v does not match a pod of service %s", es.Name, ep.Addresses, svcName)
			}
		}
	}
}
