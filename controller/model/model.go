// Package model is the controller's validated, versioned model of the
// mesh, built from a config.Snapshot: services with their ports,
// protocols, VIPs and endpoints; workloads with their SPIFFE identities;
// nodes; and the mTLS mode of every workload port, resolved from
// PeerAuthentications with Istio's precedence; routes (VirtualServices),
// destination policies (DestinationRules) and authorization policies, in
// fibmesh's own structs rather than Istio's protos.
//
// Build is pure and deterministic: the same snapshot, in any resource
// order, gives the same model, byte for byte in Dump. Each Build numbers
// its model one past the previous one and says what changed (which
// services, which nodes), so that pushes can be incremental.
//
// A Model is immutable once built: it shares nothing with the snapshot,
// and callers must not modify it, so that one version can be read by many
// goroutines while the next is built.
//
// Build rejects only input that makes the model unusable (see
// ErrUnusable); everything else, including what fibmesh does not support
// yet, is represented as written and left to analyze to report.
package model

import (
	"cmp"
	"slices"
	"strings"
)

// RootNamespace is the mesh's root namespace: a PeerAuthentication there
// without a selector applies mesh-wide.
const RootNamespace = "istio-system"

// Options configure Build.
type Options struct {
	// TrustDomain is the SPIFFE trust domain of workload identities;
	// default "cluster.local".
	TrustDomain string
	// DomainSuffix is the cluster's DNS suffix of Service hostnames
	// (<name>.<namespace>.svc.<suffix>); default "cluster.local".
	DomainSuffix string
	// FirstVersion numbers the first model (default 1); later ones count
	// up from it. A controller sets it from the clock at start-up, so
	// that versions keep moving forward across its restarts and agents
	// (and fibctl config status) never see the version go back.
	FirstVersion uint64
}

func (o Options) withDefaults() Options {
	if o.TrustDomain == "" {
		o.TrustDomain = "cluster.local"
	}
	if o.DomainSuffix == "" {
		o.DomainSuffix = "cluster.local"
	}
	return o
}

// Mode is an mTLS mode.
type Mode string

// mTLS modes. PERMISSIVE is the default where no policy says otherwise.
const (
	ModePermissive Mode = "PERMISSIVE"
	ModeStrict     Mode = "STRICT"
	ModeDisable    Mode = "DISABLE"
)

// Model is one version of the mesh.
type Model struct {
	Version     uint64      `json:"version"`
	TrustDomain string      `json:"trustDomain"`
	Services    []*Service  `json:"services"`
	Workloads   []*Workload `json:"workloads"`
	Nodes       []*Node     `json:"nodes"`
	// Routes are the VirtualServices, DestinationPolicies the
	// DestinationRules, AuthzPolicies the AuthorizationPolicies.
	Routes              []*Route             `json:"routes"`
	DestinationPolicies []*DestinationPolicy `json:"destinationPolicies"`
	AuthzPolicies       []*AuthzPolicy       `json:"authorizationPolicies"`
	// MeshMTLS is the mode set mesh-wide (a PeerAuthentication without
	// selector in RootNamespace), PERMISSIVE when none is.
	MeshMTLS Mode `json:"meshMtls"`
	// NamespaceMTLS is the mode of each namespace that has a
	// namespace-wide PeerAuthentication, after inheritance from the mesh.
	NamespaceMTLS map[string]Mode `json:"namespaceMtls,omitempty"`
	// NamespacesOutsideMesh are the namespaces whose labels take every
	// pod in them out of the mesh (CaptureOff), sorted.
	NamespacesOutsideMesh []string `json:"namespacesOutsideMesh,omitempty"`
	// Change says what differs from the previous version. It is not part
	// of Dump: the same inputs give the same Dump whatever came before.
	Change Change `json:"-"`

	// memo and services let the next Build reuse this one's workloads
	// and services.
	memo     *workloadMemo
	services *serviceMemo
	// keys is the hash of the sequence of the snapshot's object keys,
	// which validate found free of duplicates.
	keys uint64
}

// Service is a Kubernetes Service, or a host of a ServiceEntry.
type Service struct {
	Hostname  string `json:"hostname"` // name.namespace.svc.<suffix>, or the ServiceEntry host
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// ServiceEntry is true for hosts declared by a ServiceEntry.
	ServiceEntry bool `json:"serviceEntry,omitempty"`
	// Location and Resolution are the ServiceEntry's (MESH_EXTERNAL,
	// DNS, ...) as written; empty for Kubernetes Services.
	Location   string `json:"location,omitempty"`
	Resolution string `json:"resolution,omitempty"`
	// VIPs are the ClusterIPs (or the ServiceEntry's addresses); none
	// for a headless Service.
	VIPs []string `json:"vips,omitempty"`
	// Ports in the order written.
	Ports []Port `json:"ports"`
	// Endpoints sorted by address.
	Endpoints []*Endpoint `json:"endpoints"`
}

// Port is a service port and the protocol fibmesh speaks on it.
type Port struct {
	Name     string   `json:"name,omitempty"`
	Port     int32    `json:"port"`
	Protocol Protocol `json:"protocol"`
}

// Protocol is what a port carries, decided as Istio does: appProtocol,
// then the port name's prefix (http, http2, grpc, https, tls, tcp, ...).
type Protocol string

// Protocols.
const (
	ProtocolHTTP    Protocol = "HTTP"
	ProtocolHTTP2   Protocol = "HTTP2"
	ProtocolGRPC    Protocol = "GRPC"
	ProtocolHTTPS   Protocol = "HTTPS"
	ProtocolTLS     Protocol = "TLS"
	ProtocolTCP     Protocol = "TCP"
	ProtocolUDP     Protocol = "UDP"
	ProtocolUnknown Protocol = "UNKNOWN" // sniffed at run time; no L7 policy
)

// Endpoint is one address serving a service, from an EndpointSlice (or
// a ServiceEntry's endpoints), joined with the Pod it belongs to.
type Endpoint struct {
	Address string `json:"address"`
	// Ports are the EndpointSlice's ports (the target ports, by service
	// port name), sorted by name.
	Ports []EndpointPort `json:"ports,omitempty"`
	// Ready is the slice's ready condition; a missing condition means
	// ready, as the EndpointSlice API says.
	Ready bool   `json:"ready"`
	Node  string `json:"node,omitempty"`
	// Workload is namespace/name of the backing pod (by targetRef, or by
	// IP where the slice has no targetRef); empty when no pod is known.
	Workload string `json:"workload,omitempty"`
	// Identity is the SPIFFE ID of the pod's service account.
	Identity string `json:"identity,omitempty"`
	// Labels are the pod's labels (subsets select on them), shared
	// with its Workload and read-only.
	Labels map[string]string `json:"labels,omitempty"`
}

// EndpointPort is the port an endpoint serves a named service port on.
type EndpointPort struct {
	Name     string   `json:"name,omitempty"`
	Port     int32    `json:"port"`
	Protocol Protocol `json:"protocol,omitempty"`
}

// PortFor returns the endpoint's port for service port p: the endpoint
// port with p's name, or p's own number where the endpoint lists none.
func (e *Endpoint) PortFor(p Port) int32 {
	for _, ep := range e.Ports {
		if ep.Name == p.Name {
			return ep.Port
		}
	}
	return p.Port
}

// Workload is a pod, its identity and the mTLS mode of its ports.
type Workload struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	IP        string `json:"ip,omitempty"`
	Node      string `json:"node,omitempty"`
	// Labels are the pod object's own map, shared: like every object of
	// a config snapshot, read-only (a copy per workload was 3 MB of the
	// controller's heap at 10,000 pods).
	Labels         map[string]string `json:"labels,omitempty"`
	ServiceAccount string            `json:"serviceAccount"`
	// Identity is spiffe://<td>/ns/<ns>/sa/<sa>; empty for a workload
	// outside the mesh, which gets no SVID.
	Identity string `json:"identity"`
	// DefaultMode is the mTLS mode of every port of the workload but
	// those in PortModes, where a port-level setting differs.
	DefaultMode Mode            `json:"mtls"`
	PortModes   map[uint32]Mode `json:"portMtls,omitempty"`
	// OutsideMesh is true for a pod that is not captured (CaptureOff:
	// a label on it or its namespace says so; or spec.hostNetwork: it
	// shares its node's IP); OutsideMeshBy is that label, or
	// OutsideMeshHostNetwork. Such a workload has no Identity, DefaultMode DISABLE and no
	// PortModes, whatever PeerAuthentications say: clients reach it in
	// plaintext and nothing listens for it.
	OutsideMesh   bool   `json:"outsideMesh,omitempty"`
	OutsideMeshBy string `json:"outsideMeshBy,omitempty"`
}

// MTLSMode returns the mTLS mode of one of the workload's ports.
func (w *Workload) MTLSMode(port uint32) Mode {
	if m, ok := w.PortModes[port]; ok {
		return m
	}
	return w.DefaultMode
}

// Node is a cluster node: its name, InternalIP (the next hop for its pod
// CIDRs) and pod CIDRs.
type Node struct {
	Name       string   `json:"name"`
	InternalIP string   `json:"internalIP,omitempty"`
	PodCIDRs   []string `json:"podCIDRs,omitempty"`
}

// Change is what one version changed against the previous one.
type Change struct {
	// Services are the hostnames of services added, removed or changed
	// (ports, VIPs, endpoints, or the routes and destination policies
	// for the host), sorted.
	Services []string `json:"services"`
	// Nodes are the nodes affected, sorted: those with an endpoint of a
	// changed service, running a changed workload (mTLS mode included)
	// or a workload a changed authorization policy selects, and nodes
	// added, removed or changed themselves. A changed route or
	// destination policy affects every node, because routing is decided
	// where the client runs.
	Nodes []string `json:"nodes"`
	// LocalNodes are Nodes without the every-node expansion that routing
	// causes: the nodes whose own workloads, the endpoints on them, or
	// the authorization policies enforced at them changed.
	LocalNodes []string `json:"localNodes"`
	// Kinds says which kinds of objects changed, for consumers that
	// translate each kind on its own (xDS: a VirtualService edit touches
	// route configurations only).
	Kinds ChangeKinds `json:"kinds"`
	// Full is true for the first version: everything is new.
	Full bool `json:"full,omitempty"`
}

// ChangeKinds says which kinds of objects a Change touched.
type ChangeKinds struct {
	Services  bool `json:"services,omitempty"`  // ports, VIPs, endpoints
	Workloads bool `json:"workloads,omitempty"` // pods, identities, mTLS modes
	Nodes     bool `json:"nodes,omitempty"`
	Routes    bool `json:"routes,omitempty"`
	// L4Routes: tcp or tls rules changed, or which route is in force
	// for a host that has some: the outbound listener carries those
	// rules, so it changes with them, on every node (Routes is set too).
	// (The workloads their sourceLabels select are Workloads changes.)
	L4Routes            bool `json:"l4Routes,omitempty"`
	DestinationPolicies bool `json:"destinationPolicies,omitempty"`
	AuthzPolicies       bool `json:"authorizationPolicies,omitempty"`
}

// Any reports whether any kind changed.
func (k ChangeKinds) Any() bool {
	return k.Services || k.Workloads || k.Nodes || k.Routes || k.L4Routes || k.DestinationPolicies || k.AuthzPolicies
}

// Or is the kinds changed in k or o.
func (k ChangeKinds) Or(o ChangeKinds) ChangeKinds {
	return ChangeKinds{Services: k.Services || o.Services, Workloads: k.Workloads || o.Workloads, Nodes: k.Nodes || o.Nodes,
		Routes: k.Routes || o.Routes, L4Routes: k.L4Routes || o.L4Routes,
		DestinationPolicies: k.DestinationPolicies || o.DestinationPolicies, AuthzPolicies: k.AuthzPolicies || o.AuthzPolicies}
}

// Empty reports whether nothing changed.
func (c Change) Empty() bool {
	return !c.Full && len(c.Services) == 0 && len(c.Nodes) == 0 && !c.Kinds.Any()
}

// Identity returns the SPIFFE ID of a service account:
// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
func Identity(trustDomain, namespace, serviceAccount string) string {
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}

// Workload returns the workload (pod) "namespace/name", or nil.
func (m *Model) Workload(key string) *Workload {
	ns, name, _ := strings.Cut(key, "/")
	i, ok := slices.BinarySearchFunc(m.Workloads, [2]string{ns, name}, func(w *Workload, k [2]string) int {
		return cmp.Or(strings.Compare(w.Namespace, k[0]), strings.Compare(w.Name, k[1]))
	})
	if !ok {
		return nil
	}
	return m.Workloads[i]
}

// OutsideMeshHostNetwork is Workload.OutsideMeshBy for a pod with
// spec.hostNetwork: true.
const OutsideMeshHostNetwork = "hostNetwork"

// EndpointMTLSMode returns the mTLS mode of an endpoint of svc on a
// target port: its pod's (Workload.MTLSMode) when the model knows the
// pod. An endpoint with no known pod (an EndpointSlice endpoint without
// a targetRef, such as the kubernetes Service's API server addresses, a
// VM) is outside the mesh, so DISABLE, except an endpoint of a
// ServiceEntry with location MESH_INTERNAL, which the user says is in
// the mesh: it takes its namespace's mode, else the mesh's.
func (m *Model) EndpointMTLSMode(svc *Service, ep *Endpoint, port uint32) Mode {
	if ep.Workload != "" {
		return m.MTLSMode(ep.Workload, port)
	}
	if svc.ServiceEntry && svc.Location == "MESH_INTERNAL" {
		return m.MTLSMode(svc.Namespace+"/", port)
	}
	return ModeDisable
}

// MTLSMode returns the mTLS mode of a port of workload "namespace/name".
// For a workload the model does not know (a pod not yet seen) it is the
// mode of its namespace (DISABLE for a namespace outside the mesh), else
// the mesh's: what such a pod gets until a workload-selecting policy
// says otherwise.
func (m *Model) MTLSMode(workload string, port uint32) Mode {
	if w := m.Workload(workload); w != nil {
		return w.MTLSMode(port)
	}
	ns, _, _ := strings.Cut(workload, "/")
	if _, out := slices.BinarySearch(m.NamespacesOutsideMesh, ns); out {
		return ModeDisable
	}
	if mode, ok := m.NamespaceMTLS[ns]; ok {
		return mode
	}
	return cmp.Or(m.MeshMTLS, ModePermissive)
}

// ServicesFor returns the services with a hostname: a Kubernetes Service
// first, then ServiceEntries by namespace. A hostname can have several
// where ServiceEntries in different namespaces declare it.
func (m *Model) ServicesFor(hostname string) []*Service {
	i, _ := slices.BinarySearchFunc(m.Services, hostname, func(s *Service, h string) int { return strings.Compare(s.Hostname, h) })
	j := i
	for j < len(m.Services) && m.Services[j].Hostname == hostname {
		j++
	}
	return m.Services[i:j]
}

// RoutesFor returns the routes (VirtualServices) for a fully qualified
// host, by namespace and name. Istio applies the first; analyze reports
// more than one.
func (m *Model) RoutesFor(host string) []*Route {
	var out []*Route
	for _, r := range m.Routes {
		if slices.Contains(r.Hosts, host) {
			out = append(out, r)
		}
	}
	return out
}

// DestinationPoliciesFor returns the destination policies
// (DestinationRules) for a fully qualified host, by namespace and name.
func (m *Model) DestinationPoliciesFor(host string) []*DestinationPolicy {
	var out []*DestinationPolicy
	for _, d := range m.DestinationPolicies {
		if d.Host == host {
			out = append(out, d)
		}
	}
	return out
}

// AuthzFor returns the authorization policies that apply to workload
// "namespace/name", by namespace and name.
func (m *Model) AuthzFor(workload string) []*AuthzPolicy {
	var out []*AuthzPolicy
	for _, a := range m.AuthzPolicies {
		if _, ok := slices.BinarySearch(a.Workloads, workload); ok {
			out = append(out, a)
		}
	}
	return out
}
