package proxy

import (
	"net/url"
	"strings"
)

// hdrPeer carries a workload's metadata between the two agents of an
// HTTP request, as Istio's sidecars exchange x-envoy-peer-metadata: the
// calling agent sets it on a request it sends over the mesh's tunnel
// (the caller's workload), the called agent on its response (the
// callee's). Each side reads the other's for its metrics and access
// log, and removes it: it is trusted only from the tunnel (an app's is
// dropped), and never reaches an app.
const hdrPeer = "X-Fibmesh-Peer-Metadata"

// maxPeerMeta bounds the header a side accepts: a name, a namespace and
// two labels of at most 253 bytes each, escaped, fit in it.
const maxPeerMeta = 2048

// WorkloadMeta is what the metrics and access logs say about a workload,
// in Istio's terms: the workload is the pod's controller (a Deployment's
// name) or the pod itself, App and Version its "app" and "version"
// labels, Cluster the cluster it runs in. An empty field is not known.
type WorkloadMeta struct {
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	App       string `json:"app,omitempty"`
	Version   string `json:"version,omitempty"`
	Cluster   string `json:"cluster,omitempty"`
}

// IsZero reports whether nothing is known.
func (w WorkloadMeta) IsZero() bool { return w == WorkloadMeta{} }

// encode writes w as the value of hdrPeer: a URL query
// ("name=reviews-v1&namespace=production&..."), empty fields left out.
func (w WorkloadMeta) encode() string {
	v := url.Values{}
	for _, f := range []struct{ k, v string }{{"name", w.Name}, {"namespace", w.Namespace}, {"app", w.App},
		{"version", w.Version}, {"cluster", w.Cluster}} {
		if f.v != "" {
			v.Set(f.k, f.v)
		}
	}
	return v.Encode()
}

// decodeWorkloadMeta reads a hdrPeer value; the zero WorkloadMeta when it
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
	w := WorkloadMeta{Name: v.Get("name"), Namespace: v.Get("namespace"), App: v.Get("app"),
		Version: v.Get("version"), Cluster: v.Get("cluster")}
	for _, f := range []string{w.Name, w.Namespace, w.App, w.Version, w.Cluster} {
		if len(f) > 253 || strings.ContainsFunc(f, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
			return WorkloadMeta{}
		}
	}
	return w
}
