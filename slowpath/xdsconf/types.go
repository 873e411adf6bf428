// Package xdsconf turns the Envoy v3 resources the agent holds (LDS, CDS,
// EDS; RDS for the cluster an HTTP port defaults to) into the compiled,
// immutable form the slow path reads per connection: filter chains with
// their match, TLS and RBAC, clusters with their upstream TLS and load
// balancing, endpoints. Each resource is validated and converted once,
// when it arrives (validate-then-convert, as grpc-go's xdsresource does);
// a resource the slow path cannot honour is refused with an error that
// names it, the field and why (the agent NACKs with it). Store swaps a new
// Snapshot in atomically; connections read it without a lock and without
// touching protobuf.
//
// The agent's xDS validator calls Store.Update with every resource of a
// type; the proxy calls Store.Snapshot once per connection, then
// Listener.Match, RBAC.Evaluate, TCPProxy.PickCluster (or
// HTTPChain.PickCluster) and Cluster.Pick on it, none of which allocates.
//
// What is refused: fields the slow path does not handle (each message is
// checked field by field, and fields unknown to this build are refused,
// not dropped), filters other than network RBAC, tcp_proxy and the HTTP
// connection manager (with HTTP RBAC, fault and router), transport
// sockets other than tls and raw_buffer, TLS contexts whose certificate
// or validation context is not the agent's (a workload SVID named by its
// SPIFFE ID downstream, SDS "default" upstream, SDS "ROOTCA" for peers),
// upstream SAN matchers other than exact SPIFFE IDs, RBAC matchers on
// metadata, filter state or CEL, and regular expressions RE2 does not
// compile. Fields that change nothing at L4 (outlier detection, HTTP
// protocol options, faults, DNS tuning) are accepted and left to L7.
//
// Authorization at L4: network RBAC filters follow Envoy's network
// filter (a header matcher sees a missing header, url_path never
// matches). HTTP RBAC filters are enforced per connection too, before
// any request is read, so a matcher on the request (header, url_path)
// cannot be decided; it is decided as docs/xds.md's fail-closed rule
// says: an ALLOW policy matches less (never more than it says), a DENY
// policy more, whatever not_id/not_rule enclose it. The fixture's
// "GET /api/reviews/* from frontend" therefore allows no connection
// until L7 evaluates requests.
package xdsconf

import (
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Listener names (docs/xds.md).
const (
	OutboundListener         = "outbound"          // 15001
	InboundListener          = "inbound"           // 15008, mTLS
	InboundPlaintextListener = "inbound-plaintext" // 15006
)

// Snapshot is one consistent view of the config. It is immutable: the
// Store replaces it, never modifies it.
type Snapshot struct {
	// Outbound, Inbound and InboundPlaintext are the listeners; nil when
	// the controller sent none (a node without workloads has no inbound
	// listener; a node whose ports are all STRICT has no
	// inbound-plaintext: its connections are refused).
	Outbound, Inbound, InboundPlaintext *Listener
	// Clusters by name, each with its endpoints (from EDS, or inline).
	Clusters map[string]*Cluster
	// Hosts maps each mesh hostname (Services, ServiceEntry hosts: the
	// FQDN, lower case, no trailing dot) to its VIPs, for the DNS proxy.
	Hosts map[string][]netip.Addr
	// Endpoints maps an endpoint IP that a mesh cluster reaches over mTLS
	// to that cluster: a pod called by its IP (a headless Service, a
	// StatefulSet member) is tunnelled like one called by VIP.
	Endpoints map[netip.Addr]*Cluster
	// Versions are the xDS versions this snapshot was built from.
	Versions map[string]string
}

// Listener is a compiled listener.
type Listener struct {
	Name   string
	Chains []*FilterChain
	// Default is the chain for what no chain matches (nil: refuse).
	Default *FilterChain

	// idx is the filter chain match tree (match.go), built when the
	// listener is compiled, or on first Match for one made by hand.
	idx atomic.Pointer[chainIndex]
}

// MatchInput is what a filter chain is chosen by.
type MatchInput struct {
	// Destination is the original destination (outbound: VIP:port or
	// IP:port; inbound: pod IP:port from the PROXY header or
	// SO_ORIGINAL_DST).
	Destination netip.AddrPort
	// ServerName is the SNI of a TLS ClientHello the app sent, if
	// sniffed ("" otherwise).
	ServerName string
	// Source is the connection's source.
	Source netip.AddrPort
}

// FilterChain is one compiled filter chain.
type FilterChain struct {
	// Name is Envoy's filter chain name (docs/xds.md naming).
	Name string
	// Match: destination prefixes (empty: any), port (0: any), server
	// names (empty: any; "*.example.com" wildcards), source prefixes
	// (empty: any).
	Prefixes       []netip.Prefix
	Port           uint32
	ServerNames    []string
	SourcePrefixes []netip.Prefix
	// TLS is set on inbound mTLS chains: which workload's SVID to present
	// and that a client certificate is required.
	TLS *DownstreamTLS
	// RBAC is the network (or, for HTTP chains, HTTP) authorization; nil
	// when the chain has none (everything allowed).
	RBAC *RBAC
	// HTTP is set when the chain is an HTTP connection manager; at L4
	// the connection is proxied as bytes to DefaultCluster.
	HTTP *HTTPChain
	// TCP is set when the chain is a tcp_proxy.
	TCP *TCPProxy
	// StatPrefix is the filter's stat_prefix.
	StatPrefix string
}

// DownstreamTLS is an inbound chain's TLS context.
type DownstreamTLS struct {
	// Identity is the SPIFFE ID whose SVID the listener presents
	// (the SDS secret name of the workload).
	Identity spiffeid.ID
	// RequireClientCert is require_client_certificate.
	RequireClientCert bool
}

// HTTPChain is an HCM chain as seen at L4.
type HTTPChain struct {
	// RouteConfig is the RDS route configuration name ("" when inline).
	RouteConfig string
	// DefaultCluster is the cluster plain byte proxying goes to: the
	// route configuration's `outbound|<port>||<host>` (outbound) or the
	// inline route's cluster (inbound). Precisely: the cluster of the
	// route configuration's catch-all route (the first that matches
	// every request); when that route splits traffic over weighted
	// clusters, the service cluster outbound|<port>||<host> named by the
	// route configuration's <host>:<port> (it has the endpoints of every
	// subset). "" when the route configuration has not arrived (RDS
	// follows LDS) or has no catch-all route: refuse the connection.
	DefaultCluster string
	// Clusters is the catch-all route's split: one cluster with weight
	// 1, or its weighted clusters; PickCluster chooses among them, so
	// that a canary's weights hold per connection at L4. Empty when
	// DefaultCluster is.
	Clusters []WeightedCluster

	total uint32 // sum of the Clusters' weights
}

// TCPProxy is a tcp_proxy filter.
type TCPProxy struct {
	// Clusters: one with weight 1, or weighted_clusters.
	Clusters []WeightedCluster
	// IdleTimeout (0: Envoy's default of 1h, DefaultIdleTimeout, which
	// compiled filters carry explicitly; NoIdleTimeout: none, Envoy's
	// idle_timeout 0s).
	IdleTimeout time.Duration

	total uint32 // sum of the Clusters' weights
}

// NoIdleTimeout is TCPProxy.IdleTimeout when tcp_proxy's idle_timeout is
// 0s: the connection never times out for idleness.
const NoIdleTimeout time.Duration = -1

// WeightedCluster is a tcp_proxy destination.
type WeightedCluster struct {
	Name   string
	Weight uint32
}

// ClusterType is how a cluster finds its endpoints.
type ClusterType int

// Cluster types.
const (
	ClusterEDS         ClusterType = iota // endpoints from EDS
	ClusterOriginalDst                    // the connection's original destination
	ClusterDNS                            // STRICT_DNS / LOGICAL_DNS: inline hostnames, resolved at connect
	ClusterStatic                         // inline addresses
)

// String names the cluster type as Envoy does.
func (t ClusterType) String() string {
	switch t {
	case ClusterEDS:
		return "EDS"
	case ClusterOriginalDst:
		return "ORIGINAL_DST"
	case ClusterDNS:
		return "DNS"
	case ClusterStatic:
		return "STATIC"
	}
	return "ClusterType(" + strconv.Itoa(int(t)) + ")"
}

// LBPolicy is a cluster's load balancing policy.
type LBPolicy int

// Load balancing policies.
const (
	LeastRequest LBPolicy = iota // power of two choices over active requests
	RoundRobin
	Random
	RingHash // with the source IP as key at L4
	Maglev   // likewise
	ClusterProvided
)

// String names the policy as Envoy's lb_policy does.
func (p LBPolicy) String() string {
	switch p {
	case LeastRequest:
		return "LEAST_REQUEST"
	case RoundRobin:
		return "ROUND_ROBIN"
	case Random:
		return "RANDOM"
	case RingHash:
		return "RING_HASH"
	case Maglev:
		return "MAGLEV"
	case ClusterProvided:
		return "CLUSTER_PROVIDED"
	}
	return "LBPolicy(" + strconv.Itoa(int(p)) + ")"
}

// Cluster is a compiled cluster.
type Cluster struct {
	Name           string
	Type           ClusterType
	LB             LBPolicy
	ConnectTimeout time.Duration
	// TLS is the upstream mTLS context; nil for plaintext clusters.
	TLS *UpstreamTLS
	// MaxConnections is the circuit breaker's max_connections (0: no
	// limit).
	MaxConnections uint32
	// Endpoints are the cluster's (healthy and not); nil until EDS sent
	// its assignment.
	Endpoints *Endpoints
	// DNSHosts are the host:port pairs of a DNS cluster.
	DNSHosts []string

	// edsName is the EDS resource the cluster reads: eds_cluster_config
	// service_name, else the cluster's name.
	edsName string
}

// UpstreamTLS is an upstream cluster's mTLS context.
type UpstreamTLS struct {
	// SANs are the SPIFFE IDs the server may present; empty: any the
	// trust bundle signs.
	SANs []spiffeid.ID
	// PlaintextMatch: endpoints whose metadata says tlsMode "disabled"
	// (transport_socket_matches) are dialled in plaintext.
	PlaintextMatch bool
}

// Endpoints is a cluster's load assignment.
type Endpoints struct {
	Hosts []*Endpoint
	// Healthy are the hosts with HEALTHY (or UNKNOWN) health status, the
	// ones load balancing picks from.
	Healthy []*Endpoint
	// RR is the round-robin cursor: the only mutable field, advanced
	// atomically by pickers.
	RR atomic.Uint64

	// lb are the load balancer's tables over Healthy (lb.go), built
	// once per assignment and then only read.
	lb lbTables
}

// Endpoint is one endpoint.
type Endpoint struct {
	Addr    netip.AddrPort
	Healthy bool
	// Plaintext is set for an endpoint with tlsMode "disabled".
	Plaintext bool
	// Node is the locality's sub_zone (the node name).
	Node   string
	Weight uint32
	// Active counts connections in flight to it (least request); updated
	// atomically by the proxy.
	Active atomic.Int64
}

// RBAC is the authorization of a chain: Istio's DENY then ALLOW filters.
type RBAC struct {
	// Deny is the DENY filter, nil when absent.
	Deny *RBACFilter
	// Allow is the ALLOW filter, nil when absent (then what Deny does not
	// match is allowed); present with no policies it denies everything.
	Allow *RBACFilter
}

// RBACFilter is one RBAC filter: named policies, each a principal and a
// permission matcher.
type RBACFilter struct {
	Policies []*Policy
}

// Policy is one compiled RBAC policy (Envoy's Policy: any permission and
// any principal must match).
type Policy struct {
	Name string
	// Match reports whether the policy matches a connection.
	Match func(AuthzInput) bool
}

// AuthzInput is what authorization sees of a connection.
type AuthzInput struct {
	// Principal is the peer's verified SPIFFE ID ("" when plaintext).
	Principal string
	// Source is the peer's address (direct remote = remote at L4);
	// Destination the original destination.
	Source, Destination netip.AddrPort
	// ServerName is the SNI the peer asked for.
	ServerName string
}

// Decision is RBAC's verdict.
type Decision struct {
	Allowed bool
	// Policy names the policy that decided: the DENY policy that
	// matched, the ALLOW policy that matched, or "" when no ALLOW policy
	// matched (default deny) or no RBAC applies.
	Policy string
}
