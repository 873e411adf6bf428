// Package config turns what users write (multi-document YAML, or objects
// from the Kubernetes API) into typed resources: Kubernetes Service,
// EndpointSlice, Pod, Namespace, Node, ServiceAccount, and Istio's
// VirtualService, DestinationRule, ServiceEntry (networking.istio.io v1,
// v1beta1, v1alpha3) and PeerAuthentication, AuthorizationPolicy
// (security.istio.io v1, v1beta1), with Istio's own Go types so that
// users' manifests apply unchanged.
//
// Decoding is strict: an unknown field, a wrong type or a broken document
// is a *DecodeError that names the file, the document, the kind, the name
// and the field. Kinds fibmesh does not consume (Deployment, Gateway,
// EnvoyFilter, ...) are not errors: they are returned as Skipped, for
// analyze to report. A namespaced object written without
// metadata.namespace is in namespace "default", as kubectl apply would
// put it.
package config

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Source says where a resource came from.
type Source struct {
	// File is the path of the YAML file; empty for resources read from
	// the Kubernetes API.
	File string `json:"file,omitempty"`
	// Doc is the 1-based index of the document in File.
	Doc int `json:"doc,omitempty"`
}

func (s Source) String() string {
	if s.File == "" {
		return "kubernetes"
	}
	return fmt.Sprintf("%s (document %d)", s.File, s.Doc)
}

// Resource is one decoded object.
type Resource struct {
	// GVK is the group, version and kind as written (served version).
	GVK       schema.GroupVersionKind
	Namespace string // "" for cluster-scoped kinds (Node, Namespace)
	Name      string
	Source    Source
	// Object is the typed object. Istio kinds are always decoded into
	// the v1 client-go types (istio.io/client-go/pkg/apis/networking/v1,
	// .../security/v1), whatever version was written: their specs are
	// the same protos. Kubernetes kinds use k8s.io/api types
	// (*corev1.Service, *discoveryv1.EndpointSlice, *corev1.Pod,
	// *corev1.Namespace, *corev1.Node, *corev1.ServiceAccount). Its
	// TypeMeta is GVK, as written. Nil for skipped resources.
	Object runtime.Object
}

// Key returns "Kind namespace/name" (or "Kind name"), for messages.
func (r Resource) Key() string {
	if r.Namespace == "" {
		return r.GVK.Kind + " " + r.Name
	}
	return r.GVK.Kind + " " + r.Namespace + "/" + r.Name
}

// Snapshot is a complete set of inputs, as one store saw them at one time.
type Snapshot struct {
	Resources []Resource
	// Skipped are well-formed objects of kinds fibmesh does not consume.
	Skipped []Resource
}

// DecodeError is a document that could not be decoded.
type DecodeError struct {
	Source    Source
	Kind      string // as written, "" if not even that could be read
	Namespace string
	Name      string
	Field     string // JSON path of the offending field, "" if unknown
	Err       error
}

func (e *DecodeError) Error() string {
	what := e.Kind
	if what == "" {
		what = "document"
	}
	if e.Name != "" {
		if e.Namespace != "" {
			what += " " + e.Namespace + "/" + e.Name
		} else {
			what += " " + e.Name
		}
	}
	msg := fmt.Sprintf("%s: %s", e.Source, what)
	if e.Field != "" {
		msg += ": field " + e.Field
	}
	return msg + ": " + e.Err.Error()
}

func (e *DecodeError) Unwrap() error { return e.Err }
