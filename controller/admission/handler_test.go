package admission

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/yaml"

	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/internal/yamldoc"
)

// examples is the demo mesh of examples/, the snapshot in force in these
// tests.
func examples(t testing.TB) *config.Snapshot {
	t.Helper()
	snap, err := config.LoadDir("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// review returns an AdmissionReview as the API server sends it for op on
// the object in manifest (YAML), with oldManifest as oldObject for UPDATE.
func review(t testing.TB, op, manifest string) []byte {
	t.Helper()
	var obj struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	js, err := yaml.YAMLToJSON([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(js, &obj); err != nil {
		t.Fatal(err)
	}
	group, version, ok := strings.Cut(obj.APIVersion, "/")
	if !ok {
		group, version = "", obj.APIVersion
	}
	resource := strings.ToLower(obj.Kind) + "s"
	object, oldObject := string(js), "null"
	switch op {
	case "DELETE":
		object, oldObject = "null", string(js)
	case "UPDATE":
		oldObject = string(js)
	}
	return fmt.Appendf(nil, `{
  "kind": "AdmissionReview",
  "apiVersion": "admission.k8s.io/v1",
  "request": {
    "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
    "kind": {"group": %q, "version": %q, "kind": %q},
    "resource": {"group": %q, "version": %q, "resource": %q},
    "requestKind": {"group": %q, "version": %q, "kind": %q},
    "requestResource": {"group": %q, "version": %q, "resource": %q},
    "name": %q,
    "namespace": %q,
    "operation": %q,
    "userInfo": {"username": "admin", "uid": "014fbff9a07c", "groups": ["system:authenticated", "my-admin-group"]},
    "object": %s,
    "oldObject": %s,
    "dryRun": false,
    "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
  }
}`, group, version, obj.Kind, group, version, resource, group, version, obj.Kind, group, version, resource,
		obj.Metadata.Name, obj.Metadata.Namespace, op, object, oldObject)
}

// post sends body to h as the API server does and returns the status and
// the decoded review (nil when the status is not 200).
func post(t testing.TB, h http.Handler, contentType string, body []byte) (int, string, *admissionv1.AdmissionReview) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, Path+"?timeout=10s", bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		return w.Code, w.Body.String(), nil
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("response Content-Type %q, want application/json", ct)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatalf("response is not an AdmissionReview: %v\n%s", err, w.Body)
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil {
		t.Fatalf("response %s %s response=%v, want an admission.k8s.io/v1 AdmissionReview with a response", out.APIVersion, out.Kind, out.Response)
	}
	if out.Response.UID != "705ab4f5-6393-11e8-b7cc-42010a800002" {
		t.Errorf("response uid %q, want the request's", out.Response.UID)
	}
	return w.Code, w.Body.String(), &out
}

func newHandler(t testing.TB, snap *config.Snapshot) *Handler {
	t.Helper()
	h, err := New(Options{Snapshot: func() *config.Snapshot { return snap }})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// vsReviews is examples/10-reviews-virtualservice.yaml's object, made
// shorter; variants edit its route.
const vsReviews = `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: production
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: %s
    - destination:
        host: reviews
        subset: v2
      weight: %s
`

func TestReview(t *testing.T) {
	h := newHandler(t, examples(t))
	for _, tt := range []struct {
		name     string
		op       string
		manifest string
		allowed  bool
		message  []string // substrings of the denial
		warnings []string // substrings, one per warning, in order
	}{
		{name: "update, unchanged meaning", op: "UPDATE", manifest: fmt.Sprintf(vsReviews, "90", "10"), allowed: true},
		{name: "create v1beta1", op: "CREATE", manifest: strings.Replace(fmt.Sprintf(vsReviews, "90", "10"), "networking.istio.io/v1", "networking.istio.io/v1beta1", 1), allowed: true},
		{name: "weights all zero: IST0106", op: "UPDATE", manifest: fmt.Sprintf(vsReviews, "0", "0"), message: []string{
			"fibmesh analyze: 1 error in VirtualService production/reviews",
			"\nError [IST0106] (VirtualService production/reviews) ",
		}},
		{name: "weights not 100: warning FM0001", op: "UPDATE", manifest: fmt.Sprintf(vsReviews, "50", "10"), allowed: true,
			warnings: []string{"[FM0001] (VirtualService production/reviews) "}},
		{name: "missing host: IST0101 as a warning", op: "CREATE", manifest: `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: typo, namespace: production}
spec:
  hosts: [reviews.example.com]
  http:
  - route:
    - destination: {host: reviwes}
`, allowed: true, warnings: []string{"[IST0101] (VirtualService production/typo) ", "(allowed: the object it refers to may be created after it)"}},
		{name: "second VirtualService for the same host: IST0109", op: "CREATE", manifest: `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-too, namespace: production}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
`, message: []string{"Error [IST0109] (VirtualService production/reviews-too) "}},
		{name: "wrong type: decode error names the field", op: "CREATE", manifest: `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: production}
spec:
  hosts: [reviews]
  http:
  - timeout: 10
    route:
    - destination: {host: reviews}
`, message: []string{"Error [IST0106] (VirtualService production/bad) Schema validation error: field spec.http[0].timeout: "}},
		{name: "unknown field", op: "CREATE", manifest: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: production}
spec:
  action: ALLOW
  rules:
  - form: [{source: {principals: ["*"]}}]
`, message: []string{"(AuthorizationPolicy production/bad) Schema validation error: field spec.rules[0].form: unknown field"}},
		{name: "delete is allowed unchecked", op: "DELETE", manifest: fmt.Sprintf(vsReviews, "0", "0"), allowed: true},
		{name: "other kind is allowed unchecked", op: "CREATE", manifest: `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: production}
spec: {nonsense: 1}
`, allowed: true},
		{name: "a Service is not checked", op: "CREATE", manifest: `
apiVersion: v1
kind: Service
metadata: {name: s, namespace: production}
spec: {ports: "no"}
`, allowed: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, body, out := post(t, h, "application/json", review(t, tt.op, tt.manifest))
			if code != http.StatusOK {
				t.Fatalf("status %d: %s", code, body)
			}
			resp := out.Response
			if resp.Allowed != tt.allowed {
				t.Fatalf("allowed = %v, want %v; response: %s", resp.Allowed, tt.allowed, body)
			}
			if !tt.allowed {
				if resp.Result == nil || resp.Result.Code != http.StatusBadRequest {
					t.Fatalf("denial's status %+v, want code 400", resp.Result)
				}
				for _, m := range tt.message {
					if !strings.Contains(resp.Result.Message, m) {
						t.Errorf("denial message\n%s\nwant it to contain %q", resp.Result.Message, m)
					}
				}
			} else if resp.Result != nil {
				t.Errorf("allowed with a status: %+v", resp.Result)
			}
			if len(tt.warnings) == 0 && len(resp.Warnings) > 0 {
				t.Errorf("warnings %q, want none", resp.Warnings)
			}
			all := strings.Join(resp.Warnings, "\n")
			for _, w := range tt.warnings {
				if !strings.Contains(all, w) {
					t.Errorf("warnings\n%s\nwant one to contain %q", all, w)
				}
			}
		})
	}
}

// TestReviewReplaces: an UPDATE is checked against the snapshot with the
// object in place of its old version, not next to it (which would
// conflict with itself, IST0109), also when written in another version.
func TestReviewReplaces(t *testing.T) {
	snap := examples(t)
	h := newHandler(t, snap)
	n := len(snap.Resources)
	for _, v := range []string{"v1", "v1beta1", "v1alpha3"} {
		m := strings.Replace(fmt.Sprintf(vsReviews, "80", "20"), "networking.istio.io/v1", "networking.istio.io/"+v, 1)
		_, body, out := post(t, h, "application/json", review(t, "UPDATE", m))
		if !out.Response.Allowed || len(out.Response.Warnings) > 0 {
			t.Errorf("%s: %s", v, body)
		}
	}
	if len(snap.Resources) != n {
		t.Errorf("the snapshot in force changed: %d resources, was %d", len(snap.Resources), n)
	}
}

// TestNoSnapshot: before the controller has any input, objects are
// allowed with a warning that says they were not checked.
func TestNoSnapshot(t *testing.T) {
	h := newHandler(t, nil)
	_, body, out := post(t, h, "application/json", review(t, "CREATE", fmt.Sprintf(vsReviews, "0", "0")))
	if !out.Response.Allowed || len(out.Response.Warnings) != 1 || !strings.Contains(out.Response.Warnings[0], "was not checked") {
		t.Errorf("response %s, want allowed with a warning that it was not checked", body)
	}
}

// TestBadRequests: what is not an AdmissionReview v1 gets an HTTP error
// that says what is wrong; the API server applies failurePolicy.
func TestBadRequests(t *testing.T) {
	snap := examples(t)
	h, err := New(Options{Snapshot: func() *config.Snapshot { return snap }, MaxBodyBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	good := review(t, "CREATE", fmt.Sprintf(vsReviews, "90", "10"))
	for _, tt := range []struct {
		name, contentType string
		body              []byte
		code              int
		want              string
	}{
		{"garbage", "application/json", []byte("\x00\x01garbage"), 400, "not an AdmissionReview"},
		{"JSON but not a review", "application/json", []byte(`[1,2]`), 400, "not an AdmissionReview"},
		{"wrong version", "application/json", bytes.Replace(good, []byte("admission.k8s.io/v1"), []byte("admission.k8s.io/v1beta1"), 1), 400,
			`apiVersion "admission.k8s.io/v1beta1" kind "AdmissionReview": want apiVersion admission.k8s.io/v1 kind AdmissionReview`},
		{"no request", "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), 400, "without a request"},
		{"no uid", "application/json", bytes.Replace(good, []byte(`"705ab4f5-6393-11e8-b7cc-42010a800002"`), []byte(`""`), 1), 400, "request.uid is empty"},
		{"wrong content type", "application/yaml", good, 415, `Content-Type "application/yaml": want application/json`},
		{"no content type", "", good, 415, "no Content-Type"},
		{"too large", "application/json", append(bytes.Repeat([]byte(" "), 64<<10), good...), 413, "request body over 65536 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, body, _ := post(t, h, tt.contentType, tt.body)
			if code != tt.code || !strings.Contains(body, tt.want) {
				t.Errorf("status %d %q, want %d with %q", code, body, tt.code, tt.want)
			}
		})
	}
	t.Run("GET", func(t *testing.T) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, Path, nil))
		if w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "POST" {
			t.Errorf("GET: %d, Allow %q, want 405 and Allow: POST", w.Code, w.Header().Get("Allow"))
		}
	})
	t.Run("charset", func(t *testing.T) {
		if code, body, _ := post(t, h, "application/json; charset=utf-8", good); code != http.StatusOK {
			t.Errorf("application/json; charset=utf-8: %d %s", code, body)
		}
	})
}

// TestObjectErrors: a review whose object is missing or not one object
// of the checked kinds is denied with what is wrong.
func TestObjectErrors(t *testing.T) {
	h := newHandler(t, examples(t))
	good := string(review(t, "CREATE", fmt.Sprintf(vsReviews, "90", "10")))
	obj := good[strings.Index(good, `"object": `)+len(`"object": `) : strings.Index(good, `,
    "oldObject"`)]
	for _, tt := range []struct {
		name, object, want string
	}{
		{"empty", `null`, "request.object is empty"},
		{"not an object", `"text"`, "request.object is not a JSON object"},
		{"a list", `{"apiVersion":"v1","kind":"List","items":[` + obj + `,` + obj + `]}`, "request.object holds 2 objects"},
		{"no name", strings.Replace(obj, `"name":"reviews"`, `"labels":{}`, 1), "field metadata.name: is required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := strings.Replace(good, `"object": `+obj, `"object": `+tt.object, 1)
			code, raw, out := post(t, h, "application/json", []byte(body))
			if code != http.StatusOK {
				t.Fatalf("status %d: %s", code, raw)
			}
			if out.Response.Allowed || !strings.Contains(out.Response.Result.Message, tt.want) {
				t.Errorf("response %s, want a denial saying %q", raw, tt.want)
			}
		})
	}
}

// TestNamespaceFromRequest: an object without metadata.namespace is in
// the request's namespace, not "default".
func TestNamespaceFromRequest(t *testing.T) {
	res, err := decodeObject([]byte(`{"apiVersion":"networking.istio.io/v1","kind":"DestinationRule","metadata":{"name":"d"},"spec":{"host":"reviews"}}`), "production")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("production", res.Namespace); diff != "" {
		t.Errorf("namespace (-want +got):\n%s", diff)
	}
}

// TestDecodeServerObject: an object as the API server stores and sends
// it (uid, resourceVersion, managedFields, kubectl's annotation, a
// status) decodes: none of that is an unknown field.
func TestDecodeServerObject(t *testing.T) {
	raw := []byte(`{"apiVersion":"networking.istio.io/v1","kind":"DestinationRule","metadata":{
  "annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}\n"},"creationTimestamp":"2026-12-04T07:00:00Z","generation":1,
  "managedFields":[{"apiVersion":"networking.istio.io/v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:annotations":{".":{}}},"f:spec":{".":{},"f:host":{}}},
    "manager":"kubectl-client-side-apply","operation":"Update","time":"2026-12-04T07:00:00Z"}],
  "name":"d","namespace":"production","resourceVersion":"123","uid":"2b0e7c4e-1111-2222-3333-444455556666"},
  "spec":{"host":"reviews"},"status":{}}`)
	res, err := decodeObject(raw, "production")
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Key(); got != "DestinationRule production/d" {
		t.Errorf("decoded %s, want DestinationRule production/d", got)
	}
}

// TestApplyExamplesInOrder: `kubectl apply -f examples/` goes through:
// each Istio object, reviewed against what the files before it created,
// is allowed. (The VirtualService comes before the DestinationRule that
// defines its subsets, and no pod runs yet: Deferred.)
func TestApplyExamplesInOrder(t *testing.T) {
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("examples: %v %v", files, err)
	}
	sort.Strings(files)
	snap := &config.Snapshot{}
	h := newHandler(t, nil)
	h.snapshot = func() *config.Snapshot { return snap }
	checked := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs, err := yamldoc.Split(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range docs {
			res, skipped, err := config.DecodeFile(f, d.Raw)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res {
				if slices.Contains(Kinds, r.GVK.GroupKind()) {
					checked++
					_, body, out := post(t, h, "application/json", review(t, "CREATE", string(d.Raw)))
					if !out.Response.Allowed {
						t.Errorf("%s (document %d) %s: denied: %s", f, d.N, r.Key(), body)
					}
				}
				next := *snap
				next.Resources = append(slices.Clip(snap.Resources), r)
				snap = &next
			}
			snap.Skipped = append(snap.Skipped, skipped...)
		}
	}
	if checked < 5 {
		t.Errorf("%d Istio objects checked in examples/, want at least 5", checked)
	}
}
