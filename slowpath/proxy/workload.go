package proxy

import (
	"net/url"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// hdrPeer carries a workload's metadata between the two agents of an
// HTTP request, as Istio's sidecars exchange x-envoy-peer-metadata: the
// calling agent sets it on a request it sends over the mesh's tunnel
// (the caller's workload), the called agent on its response (the
// callee's). Each side reads the other's for its metrics and access
// log, and removes it: it is trusted only from the tunnel (an app's is
// dropped), and never reaches an app.
const hdrPeer = "X-Fibmesh-Peer-Metadata"

// maxPeerMeta bounds the header a side accepts: a name and a cluster of
// at most 253 bytes, a namespace and four label values of at most 63
// (Kubernetes' limits), and their keys fit in it.
const maxPeerMeta = 2048

// WorkloadMeta is what the metrics and access logs say about a workload,
// in Istio's terms: the workload is the pod's controller (a Deployment's
// name) or the pod itself; App and Version are its app and version as
// Istio reads them from its labels ("app.kubernetes.io/name" else
// "app", "app.kubernetes.io/version" else "version"); CanonicalService
// and CanonicalRevision its canonical service and revision
// ("service.istio.io/canonical-name" else the app labels else the
// workload name; "service.istio.io/canonical-revision" else the version
// labels else "latest"); Cluster the cluster it runs in. An empty field
// is not known.
type WorkloadMeta struct {
	Name              string `json:"name,omitempty"`
	Namespace         string `json:"namespace,omitempty"`
	App               string `json:"app,omitempty"`
	Version           string `json:"version,omitempty"`
	CanonicalService  string `json:"canonical_service,omitempty"`
	CanonicalRevision string `json:"canonical_revision,omitempty"`
	Cluster           string `json:"cluster,omitempty"`
}

// IsZero reports whether nothing is known.
func (w WorkloadMeta) IsZero() bool { return w == WorkloadMeta{} }

// endpointWorkload is what EDS says of the workload behind ep (Istio's
// endpoint metadata); zero when it says nothing.
func endpointWorkload(ep *xdsconf.Endpoint) WorkloadMeta {
	w := ep.Workload
	if w == nil {
		return WorkloadMeta{}
	}
	return WorkloadMeta{Name: w.Name, Namespace: w.Namespace, App: w.App, Version: w.Version,
		CanonicalService: w.CanonicalService, CanonicalRevision: w.CanonicalRevision, Cluster: w.Cluster}
}

// fields are w's fields with their keys in hdrPeer.
func (w *WorkloadMeta) fields() []struct {
	k string
	v *string
} {
	return []struct {
		k string
		v *string
	}{{"name", &w.Name}, {"namespace", &w.Namespace}, {"app", &w.App}, {"version", &w.Version},
		{"canonical_service", &w.CanonicalService}, {"canonical_revision", &w.CanonicalRevision}, {"cluster", &w.Cluster}}
}

// encode writes w as the value of hdrPeer: a URL query
// ("app=reviews&name=reviews-v1&namespace=production&..."), empty fields
// left out.
func (w WorkloadMeta) encode() string {
	v := url.Values{}
	for _, f := range w.fields() {
		if *f.v != "" {
			v.Set(f.k, *f.v)
		}
	}
	return v.Encode()
}

// peerWorkloadTLV is the calling pod's workload from the PROXY header's
// TypeWorkload TLV, trusted as far as the verified peer: the zero
// WorkloadMeta when it is malformed (decodeWorkloadMeta) or names
// another namespace than the peer's SPIFFE ID (an agent speaks only for
// its own pods' identities). A namespace it leaves out is the peer's.
func peerWorkloadTLV(v []byte, peer spiffeid.ID) WorkloadMeta {
	w := decodeWorkloadMeta(string(v))
	if w.IsZero() {
		return w
	}
	ns, ok := spiffeNamespace(peer)
	switch {
	case !ok:
		return WorkloadMeta{}
	case w.Namespace == "":
		w.Namespace = ns
	case w.Namespace != ns:
		return WorkloadMeta{}
	}
	return w
}

// spiffeNamespace is the namespace of a SPIFFE ID of the mesh's form
// (spiffe://<td>/ns/<ns>/sa/<sa>).
func spiffeNamespace(id spiffeid.ID) (string, bool) {
	segs := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(segs) != 4 || segs[0] != "ns" || segs[2] != "sa" || segs[1] == "" {
		return "", false
	}
	return segs[1], true
}

// decodeWorkloadMeta reads a hdrPeer value (or a TypeWorkload TLV's); the zero WorkloadMeta when it
// is empty, too long or malformed (a peer's metadata is a label value:
// nothing that does not look like one is taken).
func decodeWorkloadMeta(s string) WorkloadMeta {
	if s == "" || len(s) > maxPeerMeta {
		return WorkloadMeta{}
	}
	v, err := url.ParseQuery(s)
	if err != nil {
		return WorkloadMeta{}
	}
	var w WorkloadMeta
	for _, f := range w.fields() {
		*f.v = v.Get(f.k)
		if len(*f.v) > 253 || strings.ContainsFunc(*f.v, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
			return WorkloadMeta{}
		}
	}
	return w
}
