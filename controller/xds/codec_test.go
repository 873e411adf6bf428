package xds

import (
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The codec's encoding of a response decodes to the response, and
// refers to the resources' bytes of inlineBelow or more instead of
// copying them, in one buffer besides (the smaller values copied into
// it); a response with fields the server does not set is marshalled
// whole.
func TestCodecEncodesResponses(t *testing.T) {
	// Any bytes: the codec does not look inside.
	val := append([]byte("\x0a\x05hello\x12\x03abc"), make([]byte, inlineBelow)...)
	a := &anypb.Any{TypeUrl: resource.ClusterType, Value: val}
	small := &anypb.Any{TypeUrl: resource.ClusterType, Value: val[:inlineBelow-1]}
	empty := &anypb.Any{TypeUrl: resource.ClusterType}
	tests := []struct {
		name    string
		msg     proto.Message
		refs    int // values referenced, not copied
		wantRaw bool
	}{
		{name: "delta", refs: 2, msg: &discovery.DeltaDiscoveryResponse{SystemVersionInfo: "CDS-3", TypeUrl: resource.ClusterType, Nonce: "7",
			Resources: []*discovery.Resource{{Name: "a", Version: "v1", Resource: a}, {Name: "b", Version: "v2", Resource: a}}}},
		{name: "delta removals only", msg: &discovery.DeltaDiscoveryResponse{SystemVersionInfo: "CDS-4", TypeUrl: resource.ClusterType, Nonce: "8",
			RemovedResources: []string{"a", "", "c"}}},
		{name: "delta empty value and no resource", msg: &discovery.DeltaDiscoveryResponse{TypeUrl: resource.ClusterType, Nonce: "9",
			Resources: []*discovery.Resource{{Name: "e", Version: "v", Resource: empty}, {Name: "none"}}}},
		{name: "delta empty", msg: &discovery.DeltaDiscoveryResponse{}},
		{name: "delta with a TTL is marshalled whole", wantRaw: true, msg: &discovery.DeltaDiscoveryResponse{Nonce: "1",
			Resources: []*discovery.Resource{{Name: "a", Resource: a, Ttl: durationpb.New(5)}}}},
		{name: "delta with a control plane is marshalled whole", wantRaw: true, msg: &discovery.DeltaDiscoveryResponse{Nonce: "1",
			ControlPlane: &core.ControlPlane{Identifier: "x"}}},
		{name: "sotw", refs: 2, msg: &discovery.DiscoveryResponse{VersionInfo: "EDS-2", TypeUrl: resource.EndpointType, Nonce: "3",
			Resources: []*anypb.Any{a, empty, a}}},
		{name: "sotw small values copied", msg: &discovery.DiscoveryResponse{VersionInfo: "EDS-3", TypeUrl: resource.EndpointType, Nonce: "4",
			Resources: []*anypb.Any{small, small, empty}}},
		{name: "delta small and large", refs: 1, msg: &discovery.DeltaDiscoveryResponse{SystemVersionInfo: "CDS-5", TypeUrl: resource.ClusterType, Nonce: "10",
			Resources: []*discovery.Resource{{Name: "a", Version: "v1", Resource: small}, {Name: "b", Version: "v2", Resource: a}, {Name: "c", Version: "v3", Resource: small}}}},
		{name: "sotw canary", msg: &discovery.DiscoveryResponse{VersionInfo: "1", Canary: true, Nonce: "4"}},
		{name: "sotw with a control plane is marshalled whole", wantRaw: true, msg: &discovery.DiscoveryResponse{ControlPlane: &core.ControlPlane{Identifier: "x"}}},
		{name: "sotw with resource errors is marshalled whole", wantRaw: true, msg: &discovery.DiscoveryResponse{Nonce: "5",
			ResourceErrors: []*discovery.ResourceError{{ResourceName: &discovery.ResourceName{Name: "a"}}}}},
		{name: "delta with resource errors is marshalled whole", wantRaw: true, msg: &discovery.DeltaDiscoveryResponse{Nonce: "6",
			ResourceErrors: []*discovery.ResourceError{{ResourceName: &discovery.ResourceName{Name: "a"}}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bs, err := exactCodec{}.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			b := bs.Materialize()
			got := tc.msg.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(b, got); err != nil {
				t.Fatalf("decoding the codec's bytes: %v", err)
			}
			if !proto.Equal(tc.msg, got) {
				t.Errorf("decoded %v, want %v", got, tc.msg)
			}
			if want := proto.Size(tc.msg); len(b) != want {
				t.Errorf("encoded %d bytes, proto.Size says %d", len(b), want)
			}
			refs := 0
			for _, buf := range bs {
				if r := buf.ReadOnlyData(); len(r) > 0 && &r[0] == &val[0] {
					refs++
				}
			}
			if refs != tc.refs {
				t.Errorf("%d buffers are the resources' bytes, want %d", refs, tc.refs)
			}
			if !tc.wantRaw && len(bs) > 2*tc.refs+1 {
				t.Errorf("encoded in %d pieces, want at most %d (a piece of its own per referenced value, one buffer besides)", len(bs), 2*tc.refs+1)
			}
			if raw := len(bs) == 1; tc.wantRaw && !raw {
				t.Errorf("encoded in %d pieces, want it marshalled whole", len(bs))
			}
		})
	}
	if _, err := (exactCodec{}).Marshal("not a message"); err == nil {
		t.Error("a string was encoded")
	}
}
