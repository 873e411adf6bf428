// Package admission is the controller's validating admission webhook: it
// answers the API server's AdmissionReview (admission.k8s.io/v1) for
// CREATE and UPDATE of the Istio kinds fibmesh reads (VirtualService,
// DestinationRule, ServiceEntry in networking.istio.io, PeerAuthentication
// and AuthorizationPolicy in security.istio.io). The object is decoded as
// the config stores decode it (package config, strictly), put into the
// snapshot in force in place of its previous version, and analyzed
// (package analyze): Error findings about the object deny the request,
// with one istioctl-style line per finding; Warning findings about it
// come back as the response's warnings, which kubectl prints, and so do
// the Errors about references to objects that may be created later
// (Deferred). Other operations and kinds are allowed unchecked.
//
// A request that is not an AdmissionReview v1 (wrong method, content
// type, version, a body over the size limit, JSON that does not decode)
// gets an HTTP 4xx with a message: the API server then applies the
// webhook's failurePolicy. A well-formed review of a bad object gets
// HTTP 200 with allowed=false, as the API server expects for a denial.
package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"runtime"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/fibmesh/fibmesh/controller/config"
)

// Path is where the webhook is served; the webhook configuration's
// clientConfig names it (service.path or the url's path).
const Path = "/validate"

// Defaults for Options.
const (
	// DefaultMaxBodyBytes bounds a review's body. The API server limits
	// an object to 1.5 MiB in etcd, and a review of an UPDATE carries
	// two of them.
	DefaultMaxBodyBytes = 3 << 20
)

// Options configure a Handler.
type Options struct {
	// Snapshot returns the resources in force, nil before the first
	// (controller.Controller.Snapshot). Required.
	Snapshot func() *config.Snapshot
	// MaxBodyBytes bounds a request's body; 0: DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxConcurrent bounds the reviews analyzed at once (each copies and
	// analyzes the whole snapshot in force, so memory and CPU grow with
	// it); more wait for a slot until their request ends. 0:
	// runtime.GOMAXPROCS(0).
	MaxConcurrent int
}

// Handler serves AdmissionReviews. It is safe for concurrent use.
type Handler struct {
	snapshot func() *config.Snapshot
	maxBody  int64
	slots    chan struct{}
}

// New returns a Handler.
func New(opts Options) (*Handler, error) {
	if opts.Snapshot == nil {
		return nil, errors.New("admission: Options.Snapshot is required")
	}
	h := &Handler{snapshot: opts.Snapshot, maxBody: opts.MaxBodyBytes}
	if h.maxBody <= 0 {
		h.maxBody = DefaultMaxBodyBytes
	}
	n := opts.MaxConcurrent
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	h.slots = make(chan struct{}, n)
	return h, nil
}

// reviewVersion is the only AdmissionReview version served.
var reviewVersion = admissionv1.SchemeGroupVersion.String()

// ServeHTTP answers POST with an AdmissionReview admission.k8s.io/v1
// body (Content-Type application/json) with the review's response.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, fmt.Sprintf("%s %s: the admission webhook takes POST with an AdmissionReview", r.Method, r.URL.Path), http.StatusMethodNotAllowed)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			http.Error(w, fmt.Sprintf("Content-Type %q: want application/json (an AdmissionReview %s)", ct, reviewVersion), http.StatusUnsupportedMediaType)
			return
		}
	} else {
		http.Error(w, fmt.Sprintf("no Content-Type: want application/json (an AdmissionReview %s)", reviewVersion), http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			http.Error(w, fmt.Sprintf("request body over %d bytes", h.maxBody), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "read request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	review, err := parseReview(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// The API server gives up on the webhook at its timeoutSeconds and
	// applies the failurePolicy; a review still waiting for a slot then is
	// answered 503 (nobody reads it).
	select {
	case h.slots <- struct{}{}:
	case <-r.Context().Done():
		http.Error(w, fmt.Sprintf("%d reviews already in progress: gave up waiting for a slot (%v)", cap(h.slots), context.Cause(r.Context())), http.StatusServiceUnavailable)
		return
	}
	resp := h.Review(review.Request)
	<-h.slots
	out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp}
	b, err := json.Marshal(out)
	if err != nil {
		http.Error(w, "encode AdmissionReview: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// parseReview decodes an AdmissionReview v1 that has a request.
func parseReview(body []byte) (*admissionv1.AdmissionReview, error) {
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, fmt.Errorf("not an AdmissionReview: %v", err)
	}
	if review.APIVersion != reviewVersion || review.Kind != "AdmissionReview" {
		return nil, fmt.Errorf("apiVersion %q kind %q: want apiVersion %s kind AdmissionReview (the webhook configuration's admissionReviewVersions must be [v1])",
			review.APIVersion, review.Kind, reviewVersion)
	}
	if review.Request == nil {
		return nil, errors.New("AdmissionReview without a request")
	}
	if review.Request.UID == "" {
		return nil, errors.New("AdmissionReview: request.uid is empty")
	}
	return &review, nil
}
