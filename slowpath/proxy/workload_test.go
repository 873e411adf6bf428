package proxy

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The peer metadata header carries every field of a WorkloadMeta, the
// canonical service and revision included, and drops what a peer cannot
// have sent.
func TestWorkloadMetaFields(t *testing.T) {
	full := WorkloadMeta{Name: "reviews-v1", Namespace: "production", App: "reviews", Version: "v1",
		CanonicalService: "reviews-canonical", CanonicalRevision: "r1", Cluster: "Kubernetes"}
	for _, tt := range []struct {
		name string
		hdr  string
		want WorkloadMeta
	}{
		{"every field", full.encode(), full},
		{"canonical only", "canonical_service=ratings&canonical_revision=latest",
			WorkloadMeta{CanonicalService: "ratings", CanonicalRevision: "latest"}},
		{"control character in a canonical field", "name=a&canonical_revision=r%0A1", WorkloadMeta{}},
		{"unknown key ignored", "name=a&team=books", WorkloadMeta{Name: "a"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if d := cmp.Diff(tt.want, decodeWorkloadMeta(tt.hdr)); d != "" {
				t.Errorf("decodeWorkloadMeta(%q) (-want +got):\n%s", tt.hdr, d)
			}
		})
	}
	if got, want := (WorkloadMeta{Name: "a", Version: "v1"}).encode(), "name=a&version=v1"; got != want {
		t.Errorf("encode: %q, want %q (empty fields left out)", got, want)
	}
}
