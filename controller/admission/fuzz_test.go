package admission

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// FuzzDecode feeds untrusted bytes to the webhook's two parsers: the
// review (parseReview) and its object (decodeObject, config's strict
// decoder), then checks the whole review. None may panic; an object
// decodeObject accepts is one of Kinds, with a name and a namespace. The
// seeds are testdata/fuzz/FuzzDecode (real reviews, broken ones) and the
// examples' manifests.
func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	snap := examples(f)
	h := newHandler(f, snap)
	f.Fuzz(func(t *testing.T, data []byte) {
		if review, err := parseReview(data); err == nil {
			h.Review(review.Request)
		}
		res, err := decodeObject(data, "fuzz")
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		if res.Name == "" || res.Namespace == "" || res.Object == nil {
			t.Fatalf("decoded %+v: want a name, a namespace and an object", res)
		}
		if !strings.Contains(res.GVK.Group, "istio.io") {
			t.Fatalf("decoded a %s, not one of Kinds", res.GVK)
		}
		h.Review(&admissionv1.AdmissionRequest{UID: "u", Operation: admissionv1.Create,
			Kind: metav1.GroupVersionKind{Group: res.GVK.Group, Version: res.GVK.Version, Kind: res.GVK.Kind}, Namespace: "fuzz", Object: runtime.RawExtension{Raw: data}})
	})
}
