package envoy

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/perf/xdsbench"
)

// withWorkload adds Istio's endpoint workload metadata to lb.
func withWorkload(lb *endpointv3.LbEndpoint, workload string) *endpointv3.LbEndpoint {
	if lb.Metadata == nil {
		lb.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
	}
	lb.Metadata.FilterMetadata[xdsapi.EndpointMetadataKey] = &structpb.Struct{
		Fields: map[string]*structpb.Value{xdsapi.EndpointWorkloadField: structpb.NewStringValue(workload)}}
	return lb
}

// TestEndpointMetadata: an endpoint backed by a pod carries its workload
// (Istio's "istio" filter metadata), beside the plaintext socket match
// where it has one; one without a pod, or whose workload the agents
// would refuse, carries none.
func TestEndpointMetadata(t *testing.T) {
	plain := func() *corev3.Metadata { return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}} }
	tlsDisabled := func(m *corev3.Metadata) *corev3.Metadata {
		m.FilterMetadata[socketMatchKey] = &structpb.Struct{Fields: map[string]*structpb.Value{tlsModeKey: structpb.NewStringValue(tlsModePlaintext)}}
		return m
	}
	meta := func(m *corev3.Metadata, w string) *corev3.Metadata {
		return withWorkload(&endpointv3.LbEndpoint{Metadata: m}, w).Metadata
	}
	for _, tc := range []struct {
		name      string
		ep        *model.Endpoint
		plaintext bool
		want      *corev3.Metadata
	}{
		{"deployment pod", &model.Endpoint{Workload: "prod/reviews-v1-5d8f9c7b4-x7k2p",
			Labels: map[string]string{"app": "reviews", "version": "v1", "pod-template-hash": "5d8f9c7b4"}},
			false, meta(plain(), "reviews-v1;prod;reviews;v1;")},
		{"pod without labels", &model.Endpoint{Workload: "prod/db-0"}, false, meta(plain(), "db-0;prod;db-0;latest;;;")},
		{"plaintext pod", &model.Endpoint{Workload: "prod/legacy", Labels: map[string]string{"app": "legacy"}},
			true, meta(tlsDisabled(plain()), "legacy;prod;legacy;latest;;legacy;")},
		{"no pod", &model.Endpoint{}, false, nil},
		{"no pod, plaintext", &model.Endpoint{}, true, tlsDisabled(plain())},
		{"label the agents refuse", &model.Endpoint{Workload: "prod/odd", Labels: map[string]string{"app": "a b"}}, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, endpointMetadata(tc.ep, tc.plaintext), protocmp.Transform()); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// TestEndpointMetadataBytes measures what the workload metadata adds to
// EDS at the xDS benchmark's scale (1,000 services, 10,000 pods, a
// tenth of the services with two subsets), and holds it under 64 bytes
// per endpoint: every agent gets every assignment.
func TestEndpointMetadataBytes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the benchmark's 10,000-pod mesh")
	}
	bench, err := xdsbench.New(1000, 10000, 1000)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Build(bench.Snapshot, nil, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mesh := buildMesh(t, m)
	var with, without, eps int
	for _, cla := range mesh.Endpoints {
		with += proto.Size(cla)
		bare := proto.Clone(cla).(*endpointv3.ClusterLoadAssignment)
		for _, loc := range bare.Endpoints {
			for _, lb := range loc.LbEndpoints {
				if lb.Metadata.GetFilterMetadata()[xdsapi.EndpointMetadataKey] == nil {
					t.Fatalf("%s: endpoint %v has no workload metadata", cla.ClusterName, lb.GetEndpoint().GetAddress())
				}
				delete(lb.Metadata.FilterMetadata, xdsapi.EndpointMetadataKey)
				if len(lb.Metadata.FilterMetadata) == 0 {
					lb.Metadata = nil
				}
				eps++
			}
		}
		without += proto.Size(bare)
	}
	per := float64(with-without) / float64(eps)
	t.Logf("EDS at 10,000 pods: %d assignments, %d endpoints, %d bytes without workload metadata, %d with (+%d, %.1f per endpoint)",
		len(mesh.Endpoints), eps, without, with, with-without, per)
	if per > 64 {
		t.Errorf("workload metadata adds %.1f bytes per endpoint; want at most 64", per)
	}
}
