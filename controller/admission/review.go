package admission

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/fibmesh/fibmesh/controller/analyze"
	"github.com/fibmesh/fibmesh/controller/config"
)

// Kinds are the kinds the webhook checks; reviews of others are allowed.
var Kinds = []schema.GroupKind{
	{Group: "networking.istio.io", Kind: "VirtualService"},
	{Group: "networking.istio.io", Kind: "DestinationRule"},
	{Group: "networking.istio.io", Kind: "ServiceEntry"},
	{Group: "security.istio.io", Kind: "PeerAuthentication"},
	{Group: "security.istio.io", Kind: "AuthorizationPolicy"},
}

// Review answers one admission request: allowed for operations other
// than CREATE and UPDATE and for kinds not in Kinds; otherwise denied
// when the object does not decode or analyze finds an Error about it
// in the snapshot in force with the object added (or replacing its
// previous version), allowed with analyze's Warnings about it otherwise.
// Errors with a code in Deferred do not deny: they become warnings.
// Before any snapshot is in force the object is allowed with a warning
// that it was not checked.
func (h *Handler) Review(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return resp
	}
	if !slices.Contains(Kinds, schema.GroupKind{Group: req.Kind.Group, Kind: req.Kind.Kind}) {
		return resp
	}
	res, err := decodeObject(req.Object.Raw, req.Namespace)
	if err != nil {
		return deny(resp, err.Error())
	}
	snap := h.snapshot()
	if snap == nil {
		resp.Warnings = []string{fmt.Sprintf("%s was not checked: fibmesh-controller has no configuration in force yet", res.Key())}
		return resp
	}
	errs, warns := check(snap, res)
	for _, f := range warns {
		w := fmt.Sprintf("[%s] (%s) %s", f.Code, res.Key(), f.Message)
		if f.Level == analyze.Error {
			w += " (" + Deferred[f.Code] + ")"
		}
		resp.Warnings = append(resp.Warnings, w)
	}
	if len(errs) > 0 {
		return deny(resp, denial(res, errs))
	}
	return resp
}

// Deferred are the Error codes that do not deny a request, with the
// reason (shown in the warning that reports them instead): they are
// about objects that may come after this one. kubectl applies a
// directory in file order (examples/ creates a VirtualService before
// the DestinationRule that defines its subsets), GitOps tools apply
// custom resources in any order, and pods start after the
// DestinationRule that selects them. Istio's own webhook checks no
// reference either; `fibctl analyze` and /debug/analyze report them.
var Deferred = map[string]string{
	"IST0101": "allowed: the object it refers to may be created after it",
	"IST0173": "allowed: pods may start after it",
}

// deny makes resp a denial with msg, as the API server shows it:
// `admission webhook "..." denied the request: msg`.
func deny(resp *admissionv1.AdmissionResponse, msg string) *admissionv1.AdmissionResponse {
	resp.Allowed = false
	resp.Result = &metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusBadRequest,
		Reason:  metav1.StatusReasonBadRequest,
		Message: msg,
	}
	return resp
}

// denial lists the Error findings, one istioctl-style line each.
func denial(res config.Resource, errs []analyze.Finding) string {
	var b strings.Builder
	n := "1 error"
	if len(errs) > 1 {
		n = fmt.Sprintf("%d errors", len(errs))
	}
	fmt.Fprintf(&b, "fibmesh analyze: %s in %s (run `fibctl analyze -f` on the manifest before applying it):", n, res.Key())
	for _, f := range errs {
		b.WriteString("\n")
		b.WriteString(f.String())
	}
	return b.String()
}

// check analyzes snap with res in place of its previous version and
// returns the Error findings about res that deny it, and those that do
// not: its Warnings and its Deferred Errors.
func check(snap *config.Snapshot, res config.Resource) (errs, warns []analyze.Finding) {
	next := &config.Snapshot{Resources: make([]config.Resource, 0, len(snap.Resources)+1), Skipped: snap.Skipped}
	gk := res.GVK.GroupKind()
	replaced := false
	for _, r := range snap.Resources {
		if !replaced && r.Name == res.Name && r.Namespace == res.Namespace && r.GVK.GroupKind() == gk {
			next.Resources = append(next.Resources, res)
			replaced = true
			continue
		}
		next.Resources = append(next.Resources, r)
	}
	if !replaced {
		next.Resources = append(next.Resources, res)
	}
	for _, f := range analyze.Analyze(next) {
		if f.Kind != res.GVK.Kind || f.Namespace != res.Namespace || f.Name != res.Name {
			continue
		}
		switch {
		case f.Level == analyze.Error && Deferred[f.Code] == "":
			errs = append(errs, f)
		case f.Level == analyze.Error || f.Level == analyze.Warning:
			warns = append(warns, f)
		}
	}
	return errs, warns
}

// decodeObject decodes a review's object with config's strict decoder.
// An object without metadata.namespace is in namespace (the request's);
// the API server always sets it, but a review written by hand may not.
// The error names the kind, the object and the field, with Istio's code
// for a schema error (IST0106).
func decodeObject(raw []byte, namespace string) (config.Resource, error) {
	if len(raw) == 0 {
		return config.Resource{}, errors.New("request.object is empty: a CREATE or UPDATE review carries the object")
	}
	var meta struct {
		Metadata struct {
			Namespace *string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		return config.Resource{}, fmt.Errorf("request.object is not a JSON object: %v", err)
	}
	res, skipped, err := config.DecodeFile("", raw)
	if err != nil {
		return config.Resource{}, errors.New(decodeMessage(err))
	}
	if len(res) != 1 || len(skipped) != 0 {
		return config.Resource{}, fmt.Errorf("request.object holds %d objects of the kinds fibmesh checks and %d of others: want one %s",
			len(res), len(skipped), strings.Join(kindNames(), ", "))
	}
	r := res[0]
	r.Source = config.Source{} // read from the Kubernetes API, as the kube store's
	if !slices.Contains(Kinds, r.GVK.GroupKind()) {
		return config.Resource{}, fmt.Errorf("request.object is a %s: want one of %s", r.GVK.GroupKind(), strings.Join(kindNames(), ", "))
	}
	if meta.Metadata.Namespace == nil && namespace != "" {
		r.Namespace = namespace
		if o, ok := r.Object.(metav1.Object); ok {
			o.SetNamespace(namespace)
		}
	}
	return r, nil
}

// decodeMessage formats config's decode errors as SchemaValidationError
// lines: "Error [IST0106] (VirtualService ns/name) field spec.x: ...".
func decodeMessage(err error) string {
	var lines []string
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case *config.DecodeError:
			what := e.Kind
			switch {
			case what == "":
				what = "object"
			case e.Namespace != "":
				what += " " + e.Namespace + "/" + e.Name
			case e.Name != "":
				what += " " + e.Name
			}
			msg := e.Err.Error()
			if e.Field != "" {
				msg = "field " + e.Field + ": " + msg
			}
			lines = append(lines, fmt.Sprintf("%s [%s] (%s) Schema validation error: %s",
				analyze.SchemaValidationError.Level, analyze.SchemaValidationError.ID, what, msg))
		case interface{ Unwrap() []error }:
			for _, e := range e.Unwrap() {
				walk(e)
			}
		default:
			lines = append(lines, err.Error())
		}
	}
	walk(err)
	return strings.Join(lines, "\n")
}

func kindNames() []string {
	var out []string
	for _, gk := range Kinds {
		out = append(out, gk.String())
	}
	return out
}
