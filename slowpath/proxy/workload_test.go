package proxy

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
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

// FuzzPeerWorkloadTLV feeds the tunnel's workload TLV value, which a
// peer agent sends, to the called side's decoder: whatever it accepts
// is label-safe (printable ASCII, at most 253 bytes a field), of the
// verified peer's namespace, and encodes back to itself.
func FuzzPeerWorkloadTLV(f *testing.F) {
	for _, s := range []string{
		WorkloadMeta{Name: "frontend", Namespace: "production", App: "frontend", Version: "v1", CanonicalService: "frontend",
			CanonicalRevision: "v1", Cluster: "Kubernetes"}.encode(),
		"name=frontend",
		"name=admin&namespace=kube-system",
		"name=%zz",
		"name=a%0Ab&app=x",
		"",
	} {
		f.Add([]byte(s))
	}
	peer := spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString("cluster.local"), "/ns/production/sa/frontend")
	f.Fuzz(func(t *testing.T, v []byte) {
		w := peerWorkloadTLV(v, peer)
		if w.IsZero() {
			return
		}
		if w.Namespace != "production" {
			t.Fatalf("accepted namespace %q from a peer of production", w.Namespace)
		}
		for _, fl := range w.fields() {
			if len(*fl.v) > 253 || strings.ContainsFunc(*fl.v, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
				t.Fatalf("accepted %s=%q", fl.k, *fl.v)
			}
		}
		if back := decodeWorkloadMeta(w.encode()); back != w {
			t.Fatalf("%+v encodes to %q, which decodes to %+v", w, w.encode(), back)
		}
	})
}
