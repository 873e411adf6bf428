package model

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fibmesh/fibmesh/controller/config"
)

// The canonical examples, as the model sees them.
func examplesModel(t *testing.T) *Model {
	t.Helper()
	s, err := config.LoadDir("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Build(s, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestCanaryRoute(t *testing.T) {
	m := examplesModel(t)
	var got *Route
	for _, r := range m.Routes {
		if r.Namespace == "production" && r.Name == "reviews" {
			got = r
		}
	}
	if got == nil {
		t.Fatal("no route production/reviews")
	}
	const host = "reviews.production.svc.cluster.local"
	retries := &Retries{Attempts: 3, PerTryTimeout: "2s", RetryOn: []string{"5xx", "reset", "connect-failure"}}
	if d := cmp.Diff([]string{host}, got.Hosts); d != "" {
		t.Errorf("hosts (-want +got):\n%s", d)
	}
	if len(got.HTTP) != 2 {
		t.Fatalf("%d http routes; want 2", len(got.HTTP))
	}
	testers, split := got.HTTP[0], got.HTTP[1]
	if d := cmp.Diff([]Match{{Headers: map[string]StringMatch{"x-canary-user": {"exact", "true"}}}}, testers.Matches); d != "" {
		t.Errorf("testers' match (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]Destination{{Host: host, Subset: "v2", Weight: 100}}, testers.Destinations); d != "" {
		t.Errorf("testers' destination (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]Destination{{Host: host, Subset: "v1", Weight: 90}, {Host: host, Subset: "v2", Weight: 10}}, split.Destinations); d != "" {
		t.Errorf("split (-want +got):\n%s", d)
	}
	if d := cmp.Diff(retries, split.Retries); d != "" || split.Timeout != "10s" {
		t.Errorf("split retries (-want +got):\n%s timeout %q", d, split.Timeout)
	}
	if d := cmp.Diff(&Fault{DelayPercent: 1, Delay: "5s"}, split.Fault); d != "" {
		t.Errorf("split fault (-want +got):\n%s", d)
	}
}

func TestReviewsDestinationPolicy(t *testing.T) {
	m := examplesModel(t)
	want := &DestinationPolicy{
		Namespace: "production", Name: "reviews", Host: "reviews.production.svc.cluster.local",
		LoadBalancer: "LEAST_REQUEST", MaxConnections: 100, HTTP1MaxPending: 100, HTTP2MaxRequests: 1000,
		Outlier: &Outlier{Consecutive5xx: 5, Interval: "10s", BaseEjectionTime: "30s", MaxEjectionPercent: 50},
		Subsets: []Subset{{"v1", map[string]string{"version": "v1"}}, {"v2", map[string]string{"version": "v2"}}},
	}
	for _, d := range m.DestinationPolicies {
		if d.Name == "reviews" && d.Namespace == "production" {
			if diff := cmp.Diff(want, d); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			return
		}
	}
	t.Fatal("no destination policy production/reviews")
}

func TestAuthorizationPolicy(t *testing.T) {
	m := examplesModel(t)
	for _, a := range m.AuthzPolicies {
		if a.Namespace != "production" {
			continue
		}
		want := []AuthzRule{{
			Principals: []string{"cluster.local/ns/production/sa/frontend"},
			Methods:    []string{"GET"}, Paths: []string{"/api/reviews/*"},
			When: []Condition{{Key: "request.headers[x-request-id]", NotValues: []string{""}}},
		}}
		if d := cmp.Diff(want, a.Rules); d != "" || a.Action != "ALLOW" {
			t.Errorf("rules (-want +got):\n%s action %s", d, a.Action)
		}
		if d := cmp.Diff([]string{"production/reviews-v1", "production/reviews-v2"}, a.Workloads); d != "" {
			t.Errorf("workloads (-want +got):\n%s", d)
		}
		return
	}
	t.Fatal("no authorization policy in production")
}

func TestRouteChangeAffectsEveryNode(t *testing.T) {
	s, err := config.LoadDir("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	m1, _ := Build(s, nil, Options{})
	// Drop the reviews VirtualService: its host changes for every node.
	var s2 config.Snapshot
	for _, r := range s.Resources {
		if !(r.GVK.Kind == "VirtualService" && r.Name == "reviews") {
			s2.Resources = append(s2.Resources, r)
		}
	}
	m2, _ := Build(&s2, m1, Options{})
	if d := cmp.Diff([]string{"reviews.production.svc.cluster.local"}, m2.Change.Services); d != "" {
		t.Errorf("services (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"node1", "node2"}, m2.Change.Nodes); d != "" {
		t.Errorf("nodes (-want +got):\n%s", d)
	}
}
