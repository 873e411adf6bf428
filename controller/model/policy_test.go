package model

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	networkingapi "istio.io/api/networking/v1alpha3"
	securityapi "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/fibmesh/fibmesh/controller/config"
)

// The canonical examples, as the model sees them.
func examplesModel(t *testing.T) *Model {
	t.Helper()
	s, err := config.LoadDir("../testdata/cluster")
	if err != nil {
		t.Fatal(err)
	}
	return build(t, s, nil, Options{})
}

const reviewsHost = "reviews.production.svc.cluster.local"

// canaryRoute is the model of canaryVS.
func canaryRoute() *Route {
	retries := &Retries{Attempts: 3, PerTryTimeout: "2s", RetryOn: []string{"5xx", "reset", "connect-failure"}}
	return &Route{Namespace: "production", Name: "reviews", Hosts: []string{reviewsHost}, HTTP: []HTTPRoute{{
		Name:         "canary-testers",
		Matches:      []Match{{Headers: map[string]StringMatch{"x-canary-user": {"exact", "true"}}}},
		Destinations: []Destination{{Host: reviewsHost, Subset: "v2", Weight: 100}},
		Timeout:      "10s", Retries: retries,
	}, {
		Name:         "canary-split",
		Destinations: []Destination{{Host: reviewsHost, Subset: "v1", Weight: 90}, {Host: reviewsHost, Subset: "v2", Weight: 10}},
		Timeout:      "10s", Retries: retries,
		Fault: &Fault{DelayPercent: 1, Delay: "5s"},
	}}}
}

func TestCanaryRoute(t *testing.T) {
	m := build(t, snap(canaryVS()), nil, Options{})
	if d := cmp.Diff([]*Route{canaryRoute()}, m.Routes); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if got := m.RoutesFor(reviewsHost); len(got) != 1 || got[0] != m.Routes[0] {
		t.Errorf("RoutesFor(%s) = %v", reviewsHost, got)
	}
	// examples/ says the same in YAML.
	if d := cmp.Diff(canaryRoute(), examplesModel(t).RoutesFor(reviewsHost)[0]); d != "" {
		t.Errorf("examples/ (-want +got):\n%s", d)
	}
}

func TestRoutes(t *testing.T) {
	sm := func(kind, v string) *networkingapi.StringMatch {
		switch kind {
		case "prefix":
			return &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Prefix{Prefix: v}}
		case "regex":
			return &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Regex{Regex: v}}
		}
		return &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Exact{Exact: v}}
	}
	vs := func(ns string, hosts []string, h ...*networkingapi.HTTPRoute) *networkingv1.VirtualService {
		v := &networkingv1.VirtualService{ObjectMeta: om(ns, "vs")}
		v.Spec.Hosts, v.Spec.Http = hosts, h
		return v
	}
	for _, tc := range []struct {
		name string
		in   *networkingv1.VirtualService
		want *Route
	}{
		{"hosts: short, namespaced, external, wildcard",
			vs("prod", []string{"a", "b.other", "api.example.com", "*.example.com"}),
			&Route{Namespace: "prod", Name: "vs", Hosts: []string{"a.prod.svc.cluster.local", "b.other.svc.cluster.local", "api.example.com", "*.example.com"}}},
		{"matches: uri, method, headers, port; ANDed within, ORed across",
			vs("prod", []string{"a"}, &networkingapi.HTTPRoute{
				Match: []*networkingapi.HTTPMatchRequest{
					{Uri: sm("prefix", "/api/"), Method: sm("exact", "GET"), Headers: map[string]*networkingapi.StringMatch{"x-a": sm("regex", "^v[0-9]+$"), "x-b": sm("exact", ""), "x-c": {}}},
					{Port: 8080},
				},
				Route: []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: "b", Port: &networkingapi.PortSelector{Number: 9080}}}},
			}),
			&Route{Namespace: "prod", Name: "vs", Hosts: []string{"a.prod.svc.cluster.local"}, HTTP: []HTTPRoute{{
				Matches: []Match{
					{URI: &StringMatch{"prefix", "/api/"}, Method: &StringMatch{"exact", "GET"}, Headers: map[string]StringMatch{"x-a": {"regex", "^v[0-9]+$"}, "x-b": {"exact", ""}, "x-c": {"prefix", ""}}},
					{Port: 8080},
				},
				Destinations: []Destination{{Host: "b.prod.svc.cluster.local", Port: 9080, Weight: 100}},
			}}}},
		{"abort fault, deprecated delay percent, retries without retryOn",
			vs("prod", []string{"a"}, &networkingapi.HTTPRoute{
				Route:   []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: "a"}}},
				Retries: &networkingapi.HTTPRetry{Attempts: 2},
				Fault: &networkingapi.HTTPFaultInjection{
					Delay: &networkingapi.HTTPFaultInjection_Delay{Percent: 5, HttpDelayType: &networkingapi.HTTPFaultInjection_Delay_FixedDelay{FixedDelay: secs(0.25)}},
					Abort: &networkingapi.HTTPFaultInjection_Abort{Percentage: &networkingapi.Percent{Value: 0.5}, ErrorType: &networkingapi.HTTPFaultInjection_Abort_HttpStatus{HttpStatus: 503}},
				},
			}),
			&Route{Namespace: "prod", Name: "vs", Hosts: []string{"a.prod.svc.cluster.local"}, HTTP: []HTTPRoute{{
				Destinations: []Destination{{Host: "a.prod.svc.cluster.local", Weight: 100}},
				Retries:      &Retries{Attempts: 2},
				Fault:        &Fault{DelayPercent: 5, Delay: "250ms", AbortPercent: 0.5, AbortStatus: 503},
			}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := build(t, snap(tc.in), nil, Options{})
			if d := cmp.Diff([]*Route{tc.want}, m.Routes); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestDestinationPolicy(t *testing.T) {
	want := &DestinationPolicy{
		Namespace: "production", Name: "reviews", Host: reviewsHost,
		LoadBalancer: "LEAST_REQUEST", MaxConnections: 100, HTTP1MaxPending: 100, HTTP2MaxRequests: 1000,
		Outlier: &Outlier{Consecutive5xx: 5, Interval: "10s", BaseEjectionTime: "30s", MaxEjectionPercent: 50},
		Subsets: []Subset{{"v1", map[string]string{"version": "v1"}}, {"v2", map[string]string{"version": "v2"}}},
	}
	m := build(t, snap(reviewsDR()), nil, Options{})
	if d := cmp.Diff([]*DestinationPolicy{want}, m.DestinationPolicies); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if d := cmp.Diff([]*DestinationPolicy{want}, examplesModel(t).DestinationPoliciesFor(reviewsHost)); d != "" {
		t.Errorf("examples/ (-want +got):\n%s", d)
	}

	hash := &networkingv1.DestinationRule{ObjectMeta: om("prod", "h")}
	hash.Spec.Host = "a"
	hash.Spec.TrafficPolicy = &networkingapi.TrafficPolicy{
		LoadBalancer: &networkingapi.LoadBalancerSettings{LbPolicy: &networkingapi.LoadBalancerSettings_ConsistentHash{
			ConsistentHash: &networkingapi.LoadBalancerSettings_ConsistentHashLB{}}},
		ConnectionPool: &networkingapi.ConnectionPoolSettings{
			Tcp:  &networkingapi.ConnectionPoolSettings_TCPSettings{ConnectTimeout: secs(0.5)},
			Http: &networkingapi.ConnectionPoolSettings_HTTPSettings{MaxRequestsPerConnection: 1, MaxRetries: 4}},
	}
	m = build(t, snap(hash), nil, Options{})
	wantHash := &DestinationPolicy{Namespace: "prod", Name: "h", Host: "a.prod.svc.cluster.local", LoadBalancer: "CONSISTENT_HASH",
		ConsistentHash: &ConsistentHash{}, ConnectTimeout: "500ms", MaxRequestsPerConnection: 1, MaxRetries: 4}
	if d := cmp.Diff([]*DestinationPolicy{wantHash}, m.DestinationPolicies); d != "" {
		t.Errorf("consistent hash (-want +got):\n%s", d)
	}
}

// The consistent-hash keys and tables of a DestinationRule, as written.
func TestConsistentHash(t *testing.T) {
	type lb = networkingapi.LoadBalancerSettings_ConsistentHashLB
	for _, tc := range []struct {
		name string
		ch   *lb
		want *ConsistentHash
	}{
		{"header", &lb{HashKey: &networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName{HttpHeaderName: "x-user"}},
			&ConsistentHash{HTTPHeaderName: "x-user"}},
		{"cookie with a TTL", &lb{HashKey: &networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpCookie{HttpCookie: &networkingapi.LoadBalancerSettings_ConsistentHashLB_HTTPCookie{
			Name: "session", Path: "/app", Ttl: secs(3600)}}}, &ConsistentHash{HTTPCookie: &HTTPCookie{Name: "session", Path: "/app", TTL: "1h0m0s"}}},
		{"session cookie", &lb{HashKey: &networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpCookie{HttpCookie: &networkingapi.LoadBalancerSettings_ConsistentHashLB_HTTPCookie{
			Name: "s", Ttl: secs(0)}}}, &ConsistentHash{HTTPCookie: &HTTPCookie{Name: "s", TTL: "0s"}}},
		{"cookie without a TTL", &lb{HashKey: &networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpCookie{HttpCookie: &networkingapi.LoadBalancerSettings_ConsistentHashLB_HTTPCookie{
			Name: "s"}}}, &ConsistentHash{HTTPCookie: &HTTPCookie{Name: "s"}}},
		{"source IP, deprecated ring size", &lb{HashKey: &networkingapi.LoadBalancerSettings_ConsistentHashLB_UseSourceIp{UseSourceIp: true}, MinimumRingSize: 2048},
			&ConsistentHash{UseSourceIP: true, MinimumRingSize: 2048}},
		{"query parameter, ring hash", &lb{HashKey: &networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName{HttpQueryParameterName: "user"},
			HashAlgorithm: &networkingapi.LoadBalancerSettings_ConsistentHashLB_RingHash_{RingHash: &networkingapi.LoadBalancerSettings_ConsistentHashLB_RingHash{MinimumRingSize: 4096}}},
			&ConsistentHash{HTTPQueryParameterName: "user", MinimumRingSize: 4096}},
		{"ring hash wins over the deprecated size", &lb{MinimumRingSize: 2048,
			HashAlgorithm: &networkingapi.LoadBalancerSettings_ConsistentHashLB_RingHash_{RingHash: &networkingapi.LoadBalancerSettings_ConsistentHashLB_RingHash{}}},
			&ConsistentHash{}},
		{"maglev", &lb{HashKey: &networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName{HttpHeaderName: "x-user"}, MinimumRingSize: 2048,
			HashAlgorithm: &networkingapi.LoadBalancerSettings_ConsistentHashLB_Maglev{Maglev: &networkingapi.LoadBalancerSettings_ConsistentHashLB_MagLev{TableSize: 65537}}},
			&ConsistentHash{HTTPHeaderName: "x-user", Maglev: true, MaglevTableSize: 65537}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dr := &networkingv1.DestinationRule{ObjectMeta: om("prod", "h")}
			dr.Spec.Host = "a"
			dr.Spec.TrafficPolicy = &networkingapi.TrafficPolicy{LoadBalancer: &networkingapi.LoadBalancerSettings{
				LbPolicy: &networkingapi.LoadBalancerSettings_ConsistentHash{ConsistentHash: tc.ch}}}
			m := build(t, snap(dr), nil, Options{})
			want := &DestinationPolicy{Namespace: "prod", Name: "h", Host: "a.prod.svc.cluster.local", LoadBalancer: "CONSISTENT_HASH", ConsistentHash: tc.want}
			if d := cmp.Diff([]*DestinationPolicy{want}, m.DestinationPolicies); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestAuthorizationPolicies(t *testing.T) {
	reviews := map[string]string{"app": "reviews"}
	pods := []runtime.Object{
		pod("production", "reviews-v1", "node1", "10.200.1.11", map[string]string{"app": "reviews", "version": "v1"}),
		pod("production", "reviews-v2", "node2", "10.200.2.11", map[string]string{"app": "reviews", "version": "v2"}),
		pod("production", "frontend", "node1", "10.200.1.12", map[string]string{"app": "frontend"}),
		pod("staging", "reviews", "node2", "10.200.2.20", reviews),
	}
	ap := func(ns string, sel map[string]string, action securityapi.AuthorizationPolicy_Action, rules ...*securityapi.Rule) *securityv1.AuthorizationPolicy {
		p := &securityv1.AuthorizationPolicy{ObjectMeta: om(ns, "p")}
		if sel != nil {
			p.Spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: sel}
		}
		p.Spec.Action, p.Spec.Rules = action, rules
		return p
	}
	canonical := &securityapi.Rule{
		From: []*securityapi.Rule_From{{Source: &securityapi.Source{Principals: []string{"cluster.local/ns/production/sa/frontend"}}}},
		To:   []*securityapi.Rule_To{{Operation: &securityapi.Operation{Methods: []string{"GET"}, Paths: []string{"/api/reviews/*"}}}},
		When: []*securityapi.Condition{{Key: "request.headers[x-request-id]", NotValues: []string{""}}},
	}
	canonicalRule := AuthzRule{
		From: []AuthzSource{{Principals: []string{"cluster.local/ns/production/sa/frontend"}}},
		To:   []AuthzOperation{{Methods: []string{"GET"}, Paths: []string{"/api/reviews/*"}}},
		When: []Condition{{Key: "request.headers[x-request-id]", NotValues: []string{""}}},
	}
	for _, tc := range []struct {
		name string
		in   *securityv1.AuthorizationPolicy
		want *AuthzPolicy
	}{
		{"canonical: frontend may GET /api/reviews/* with x-request-id",
			ap("production", reviews, securityapi.AuthorizationPolicy_ALLOW, canonical),
			&AuthzPolicy{Namespace: "production", Name: "p", Selector: reviews, Action: "ALLOW", Rules: []AuthzRule{canonicalRule},
				Workloads: []string{"production/reviews-v1", "production/reviews-v2"}}},
		{"two sources stay two (ORed), negations kept",
			ap("production", map[string]string{"version": "v2"}, securityapi.AuthorizationPolicy_DENY, &securityapi.Rule{
				From: []*securityapi.Rule_From{{Source: &securityapi.Source{Namespaces: []string{"staging"}}}, {Source: &securityapi.Source{NotIpBlocks: []string{"10.0.0.0/8"}}}},
				To:   []*securityapi.Rule_To{{Operation: &securityapi.Operation{Ports: []string{"9080"}, NotPaths: []string{"/healthz"}}}},
			}),
			&AuthzPolicy{Namespace: "production", Name: "p", Selector: map[string]string{"version": "v2"}, Action: "DENY", Rules: []AuthzRule{{
				From: []AuthzSource{{Namespaces: []string{"staging"}}, {NotIPBlocks: []string{"10.0.0.0/8"}}},
				To:   []AuthzOperation{{Ports: []string{"9080"}, NotPaths: []string{"/healthz"}}},
			}}, Workloads: []string{"production/reviews-v2"}}},
		{"no selector: the namespace; no rules (deny all) kept as none",
			ap("production", nil, securityapi.AuthorizationPolicy_ALLOW),
			&AuthzPolicy{Namespace: "production", Name: "p", Action: "ALLOW",
				Workloads: []string{"production/frontend", "production/reviews-v1", "production/reviews-v2"}}},
		{"an empty rule (allow all) kept as one",
			ap("staging", nil, securityapi.AuthorizationPolicy_ALLOW, &securityapi.Rule{}),
			&AuthzPolicy{Namespace: "staging", Name: "p", Action: "ALLOW", Rules: []AuthzRule{{}}, Workloads: []string{"staging/reviews"}}},
		{"root namespace with selector: every namespace",
			ap(RootNamespace, reviews, securityapi.AuthorizationPolicy_AUDIT),
			&AuthzPolicy{Namespace: RootNamespace, Name: "p", Selector: reviews, Action: "AUDIT",
				Workloads: []string{"production/reviews-v1", "production/reviews-v2", "staging/reviews"}}},
		{"selector matching nothing",
			ap("production", map[string]string{"app": "nope"}, securityapi.AuthorizationPolicy_DENY),
			&AuthzPolicy{Namespace: "production", Name: "p", Selector: map[string]string{"app": "nope"}, Action: "DENY", Workloads: []string{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := build(t, snap(append(pods, tc.in)...), nil, Options{})
			if d := cmp.Diff([]*AuthzPolicy{tc.want}, m.AuthzPolicies); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
			for _, w := range tc.want.Workloads {
				if got := m.AuthzFor(w); len(got) != 1 {
					t.Errorf("AuthzFor(%s) = %v", w, got)
				}
			}
			if got := m.AuthzFor("production/none"); len(got) != 0 {
				t.Errorf("AuthzFor(unknown) = %v", got)
			}
		})
	}
	// examples/ says the canonical one in YAML.
	got := examplesModel(t).AuthzFor("production/reviews-v1")
	if len(got) != 1 {
		t.Fatalf("examples/: AuthzFor(production/reviews-v1) = %v", got)
	}
	if d := cmp.Diff([]AuthzRule{canonicalRule}, got[0].Rules); d != "" || got[0].Action != "ALLOW" {
		t.Errorf("examples/ rules (-want +got):\n%s action %s", d, got[0].Action)
	}
}

func TestRouteChangeAffectsEveryNode(t *testing.T) {
	s, err := config.LoadDir("../testdata/cluster")
	if err != nil {
		t.Fatal(err)
	}
	m1 := build(t, s, nil, Options{})
	// Drop the reviews VirtualService: its host changes for every node.
	var s2 config.Snapshot
	for _, r := range s.Resources {
		if !(r.GVK.Kind == "VirtualService" && r.Name == "reviews") {
			s2.Resources = append(s2.Resources, r)
		}
	}
	m2 := build(t, &s2, m1, Options{})
	if d := cmp.Diff([]string{reviewsHost}, m2.Change.Services); d != "" {
		t.Errorf("services (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"node1", "node2"}, m2.Change.Nodes); d != "" {
		t.Errorf("nodes (-want +got):\n%s", d)
	}
}
