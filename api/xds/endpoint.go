package xds

import (
	"cmp"
	"errors"
	"fmt"
	"strings"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
)

// EDS endpoint metadata, as Istio's EDS writes it: an LbEndpoint's
// metadata.filter_metadata[EndpointMetadataKey] is a Struct whose field
// EndpointWorkloadField is a string, the endpoint's workload
// (EndpointWorkload.Encode). A client reads it to name the destination
// workload of what it sends to the endpoint when the other side cannot
// say (an L4 tunnel's PROXY header goes one way; a request that got no
// answer).
const (
	EndpointMetadataKey   = "istio"
	EndpointWorkloadField = "workload"
)

// MaxEndpointWorkloadField is the longest field of an encoded
// EndpointWorkload (a Kubernetes object name's 253 bytes), and
// MaxEndpointWorkload the longest encoded value: 7 fields and their
// separators.
const (
	MaxEndpointWorkloadField = 253
	MaxEndpointWorkload      = 7*MaxEndpointWorkloadField + 6
)

// EndpointWorkload is what EDS says of the workload behind an endpoint,
// in the terms of Istio's metrics (fibv1.WorkloadName for the name; the
// app, version and canonical labels as Istio reads them). An empty field
// is not known.
type EndpointWorkload struct {
	Name, Namespace                     string
	CanonicalService, CanonicalRevision string
	Cluster                             string
	App, Version                        string
}

// EndpointWorkloadOf is the EndpointWorkload of pod namespace/pod with
// its labels, as the agents derive a local pod's (Istio's injector and
// istio/proxy's peer metadata):
//   - name: fibv1.WorkloadName;
//   - app: "app.kubernetes.io/name", else "app"; version:
//     "app.kubernetes.io/version", else "version";
//   - canonical service: "service.istio.io/canonical-name", else the app,
//     else the name; canonical revision:
//     "service.istio.io/canonical-revision", else the version, else
//     "latest".
//
// The cluster is left out: the controller does not know the agents'
// cluster ID, and a client that verified the endpoint's identity knows
// it is of its own mesh.
func EndpointWorkloadOf(namespace, pod string, labels map[string]string) EndpointWorkload {
	return NamedWorkload(fibv1.WorkloadName(pod, labels), namespace, labels)
}

// NamedWorkload is EndpointWorkloadOf for a workload whose name is known
// (an agent's local pod, named by the controller's LocalPod.workload):
// the same label rules, the canonical service falling back to name.
func NamedWorkload(name, namespace string, labels map[string]string) EndpointWorkload {
	w := EndpointWorkload{Name: name, Namespace: namespace,
		App:     cmp.Or(labels[fibv1.LabelAppName], labels[fibv1.LabelApp]),
		Version: cmp.Or(labels[fibv1.LabelAppVersion], labels[fibv1.LabelVersion])}
	w.CanonicalService = cmp.Or(labels[fibv1.LabelCanonicalName], w.App, w.Name)
	w.CanonicalRevision = cmp.Or(labels[fibv1.LabelCanonicalRevision], w.Version, "latest")
	return w
}

// Encode writes w as Istio's EDS does ("workload;namespace;canonical
// service;canonical revision;cluster"), then ";app;version" unless the
// app and version are the canonical service and revision, as they are
// for a pod without canonical labels: Istio's readers take the first
// five fields and ignore more, and ParseEndpointWorkload reads two
// fields left out as those. At the benchmark's 10,000 pods the two
// fields would add ~11 bytes per endpoint to every EDS push for nothing.
func (w EndpointWorkload) Encode() string {
	s := w.Name + ";" + w.Namespace + ";" + w.CanonicalService + ";" + w.CanonicalRevision + ";" + w.Cluster
	if w.App != w.CanonicalService || w.Version != w.CanonicalRevision {
		s += ";" + w.App + ";" + w.Version
	}
	return s
}

// Valid returns an error saying which field of w ParseEndpointWorkload
// would refuse, nil when it would read w back.
func (w EndpointWorkload) Valid() error {
	_, err := ParseEndpointWorkload(w.Encode())
	return err
}

// ParseEndpointWorkload reads an encoded EndpointWorkload (Encode): five
// or seven fields separated by ';', the name and namespace not empty,
// each field at most MaxEndpointWorkloadField bytes of letters, digits,
// '-', '_' and '.' (what Kubernetes names and label values are made of:
// the values become metric labels). Two fields left out are the app and
// version, then the canonical service and revision.
func ParseEndpointWorkload(s string) (EndpointWorkload, error) {
	if len(s) > MaxEndpointWorkload {
		return EndpointWorkload{}, fmt.Errorf("%d bytes: at most %d", len(s), MaxEndpointWorkload)
	}
	var f [7]string
	n := 0
	for rest, more := s, true; more; n++ {
		if n == len(f) {
			return EndpointWorkload{}, errors.New("more than 7 fields (want name;namespace;canonical service;canonical revision;cluster[;app;version])")
		}
		f[n], rest, more = strings.Cut(rest, ";")
	}
	if n != 5 && n != 7 {
		return EndpointWorkload{}, fmt.Errorf("%d fields: want name;namespace;canonical service;canonical revision;cluster[;app;version]", n)
	}
	names := [...]string{"name", "namespace", "canonical service", "canonical revision", "cluster", "app", "version"}
	for i, v := range f[:n] {
		if (i == 0 || i == 1) && v == "" {
			return EndpointWorkload{}, fmt.Errorf("empty %s", names[i])
		}
		if err := checkField(v); err != nil {
			return EndpointWorkload{}, fmt.Errorf("%s %q: %w", names[i], v, err)
		}
	}
	w := EndpointWorkload{Name: f[0], Namespace: f[1], CanonicalService: f[2], CanonicalRevision: f[3], Cluster: f[4],
		App: f[2], Version: f[3]}
	if n == 7 {
		w.App, w.Version = f[5], f[6]
	}
	return w, nil
}

// checkField refuses a field that is too long or not made of letters,
// digits, '-', '_' and '.'.
func checkField(v string) error {
	if len(v) > MaxEndpointWorkloadField {
		return fmt.Errorf("%d bytes: at most %d", len(v), MaxEndpointWorkloadField)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("byte %d (%q): want letters, digits, '-', '_' and '.'", i, c)
		}
	}
	return nil
}
