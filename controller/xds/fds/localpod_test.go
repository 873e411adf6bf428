package fds

import (
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	"github.com/fibmesh/fibmesh/controller/model"
)

// A local pod carries its workload's name (fibv1.WorkloadName: always
// one) and the labels Istio's metrics read, and none of its other
// labels.
func TestLocalPodWorkloadAndLabels(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pod    string
		labels map[string]string
		want   *fibv1.LocalPod
	}{
		{"deployment pod with app and version", "reviews-v1-7d9f8c6b5-x2x4q",
			map[string]string{"app": "reviews", "version": "v1", "pod-template-hash": "7d9f8c6b5", "team": "books"},
			&fibv1.LocalPod{Workload: "reviews-v1", Labels: map[string]string{"app": "reviews", "version": "v1"}}},
		{"recommended and canonical labels", "ratings-5f7b9c8d4-abcde",
			map[string]string{"app.kubernetes.io/name": "ratings", "app.kubernetes.io/version": "1.2.0",
				"service.istio.io/canonical-name": "ratings-svc", "service.istio.io/canonical-revision": "r7",
				"app.kubernetes.io/part-of": "bookinfo", "pod-template-hash": "5f7b9c8d4"},
			&fibv1.LocalPod{Workload: "ratings", Labels: map[string]string{"app.kubernetes.io/name": "ratings",
				"app.kubernetes.io/version": "1.2.0", "service.istio.io/canonical-name": "ratings-svc",
				"service.istio.io/canonical-revision": "r7"}}},
		{"workload-name label wins", "db-0",
			map[string]string{"service.istio.io/workload-name": "db", "app": "db"},
			&fibv1.LocalPod{Workload: "db", Labels: map[string]string{"app": "db"}}},
		{"hash not in the name", "web-abcde",
			map[string]string{"pod-template-hash": "7d9f8c6b5"},
			&fibv1.LocalPod{Workload: "web-abcde"}},
		{"daemonset pod by its name", "agent-x7k2p", nil, &fibv1.LocalPod{Workload: "agent"}},
		{"empty label value kept", "x", map[string]string{"version": ""},
			&fibv1.LocalPod{Workload: "x", Labels: map[string]string{"version": ""}}},
		{"no labels", "bare", nil, &fibv1.LocalPod{Workload: "bare"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &model.Model{
				Nodes: []*model.Node{{Name: "node1", InternalIP: "10.100.0.1"}},
				Workloads: []*model.Workload{{Namespace: "prod", Name: tc.pod, IP: "10.200.1.11", Node: "node1",
					Labels: tc.labels, DefaultMode: model.ModeDisable}},
			}
			want := tc.want
			want.Namespace, want.Name, want.Ip = "prod", tc.pod, "10.200.1.11"
			got := Build(m).Nodes["node1"].GetLocalPods()
			if d := gocmp.Diff([]*fibv1.LocalPod{want}, got, protocmp.Transform()); d != "" {
				t.Errorf("local pods (-want +got):\n%s", d)
			}
		})
	}
}
