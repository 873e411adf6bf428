// Package model is the controller's validated, versioned model of the
// mesh, built from a config.Snapshot: services with their ports,
// protocols, VIPs and endpoints; workloads with their SPIFFE identities;
// nodes; and the mTLS mode of every workload port, resolved from
// PeerAuthentications with Istio's precedence.
//
// Build is pure and deterministic: the same snapshot gives the same
// model, byte for byte in Dump. Each Build numbers its model one past the
// previous one and says what changed (which services, which nodes), so
// that pushes can be incremental.
package model

import "fmt"

// RootNamespace is the mesh's root namespace: a PeerAuthentication there
// without a selector applies mesh-wide.
const RootNamespace = "istio-system"

// Options configure Build.
type Options struct {
	TrustDomain  string // default "cluster.local"
	DomainSuffix string // default "cluster.local"
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
	// Change says what differs from the previous version.
	Change Change `json:"-"`
}

// Service is a Kubernetes Service, or a host of a ServiceEntry.
type Service struct {
	Hostname  string `json:"hostname"` // name.namespace.svc.<suffix>, or the ServiceEntry host
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// ServiceEntry is true for hosts declared by a ServiceEntry.
	ServiceEntry bool        `json:"serviceEntry,omitempty"`
	VIPs         []string    `json:"vips,omitempty"`
	Ports        []Port      `json:"ports"`
	Endpoints    []*Endpoint `json:"endpoints"`
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

// Endpoint is one address serving a service.
type Endpoint struct {
	Address  string            `json:"address"`
	Ready    bool              `json:"ready"`
	Node     string            `json:"node,omitempty"`
	Workload string            `json:"workload,omitempty"` // namespace/name of the pod
	Identity string            `json:"identity,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
}

// Workload is a pod.
type Workload struct {
	Namespace      string            `json:"namespace"`
	Name           string            `json:"name"`
	IP             string            `json:"ip,omitempty"`
	Node           string            `json:"node,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	ServiceAccount string            `json:"serviceAccount"`
	Identity       string            `json:"identity"` // spiffe://<td>/ns/<ns>/sa/<sa>
	// MTLS is the mode of the workload: DefaultMode for every port,
	// PortModes where a port-level setting differs.
	DefaultMode Mode            `json:"mtls"`
	PortModes   map[uint32]Mode `json:"portMtls,omitempty"`
}

// MTLSMode returns the mode of one of the workload's ports.
func (w *Workload) MTLSMode(port uint32) Mode {
	if m, ok := w.PortModes[port]; ok {
		return m
	}
	return w.DefaultMode
}

// Node is a cluster node.
type Node struct {
	Name       string   `json:"name"`
	InternalIP string   `json:"internalIP,omitempty"`
	PodCIDRs   []string `json:"podCIDRs,omitempty"`
}

// Change is what one version changed against the previous one.
type Change struct {
	// Services are hostnames added, removed or changed.
	Services []string
	// Nodes are the nodes affected: those running a changed workload
	// or an endpoint of a changed service, and changed nodes.
	Nodes []string
	// Full is true for the first version: everything is new.
	Full bool
}

// Identity returns the SPIFFE ID of a service account.
func Identity(trustDomain, namespace, serviceAccount string) string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", trustDomain, namespace, serviceAccount)
}
