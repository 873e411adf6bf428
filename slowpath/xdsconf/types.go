// Package xdsconf turns the Envoy v3 resources the agent holds (LDS, CDS,
// EDS, RDS) into the compiled,
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
// metadata, filter state or CEL, regular expressions RE2 does not
// compile, and an endpoint's workload metadata (Istio's
// filter_metadata "istio" workload: Endpoint.Workload) that is not a
// bounded value of names and label values. DNS tuning is accepted and
// left to the resolver.
//
// L7 (route_l7.go): every route configuration, RDS or inline, is also
// compiled whole (Snapshot.Routes, HTTPChain.Routes, Snapshot.RoutesFor):
// virtual hosts chosen by authority in Envoy's order
// (RouteConfig.VirtualHost), routes in order with path and header
// matchers (VirtualHost.Route), weighted clusters (Route.PickCluster),
// timeouts, retry policies and fault injection; clusters carry their
// circuit breaker thresholds, HTTP/2, requests per connection and
// outlier detection (Cluster.HTTP). What docs/xds.md does not list is
// refused there too. None of the per-request calls allocates.
//
// Consistent hashing (hash.go): a route's hash_policy (Route.Hash)
// gives a request its key (Route.HashKey: header, cookie, source IP,
// query parameter, combined and terminal as in Envoy; Route.SetCookie
// for a cookie the proxy generates), and Cluster.PickRequest balances a
// RING_HASH or MAGLEV cluster by it (ring_hash_lb_config and
// maglev_lb_config size the tables); the other policies pick as
// Cluster.Pick.
//
// Authorization at L4: network RBAC filters follow Envoy's network
// filter (a header matcher sees a missing header, url_path never
// matches). HTTP RBAC filters are enforced per connection too, before
// any request is read, so a matcher on the request (header, url_path)
// cannot be decided; it is decided as docs/xds.md's fail-closed rule
// says: an ALLOW policy matches less (never more than it says), a DENY
// policy more, whatever not_id/not_rule enclose it. The fixture's
// "GET /api/reviews/* from frontend" therefore allows no connection
// at L4 (FilterChain.RBAC).
//
// Authorization at L7 (HTTPChain.RBAC): the same filters compiled for
// requests. RBAC.Evaluate with AuthzInput.Request set decides every
// matcher as Envoy's HTTP RBAC filter does: headers by lower-case name
// (":method", ":path", ":authority", ":scheme" from the request's
// fields), url_path on the path without query and fragment, principals
// and addresses as at L4. The proxy evaluates it per request on HCM
// chains, and not FilterChain.RBAC.
package xdsconf

import (
	"net/netip"
	"regexp"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	xdsapi "github.com/fibmesh/fibmesh/api/xds"
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
	// Routes are the RDS route configurations by name, compiled for L7
	// (RoutesFor finds an HTTP chain's, inline or by name).
	Routes map[string]*RouteConfig
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
	// HTTP is set when the chain is an HTTP connection manager: the
	// proxy serves its connections per request (routes, HTTPChain.RBAC).
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

	// RBAC is the chain's authorization per request: the network RBAC
	// filters (as FilterChain.RBAC has them) and the HTTP RBAC filters
	// compiled for requests, so that RBAC.Evaluate with
	// AuthzInput.Request set decides every matcher (header, url_path,
	// :method, :authority). nil when the chain has no RBAC filter
	// (everything allowed). Without a Request it decides as
	// FilterChain.RBAC does (request matchers fail closed).
	RBAC *RBAC

	total uint32 // sum of the Clusters' weights
	// routes is the compiled inline route_config (Routes); nil for RDS.
	routes *RouteConfig
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
	// MinRingSize and MaxRingSize are a RingHash cluster's
	// ring_hash_lb_config minimum_ring_size and maximum_ring_size (0:
	// 256 entries per endpoint and unit of weight; Envoy's 8M).
	MinRingSize, MaxRingSize uint64
	// MaglevTableSize is a Maglev cluster's maglev_lb_config table_size,
	// a prime (0: the smallest of a few primes with 100 entries per
	// endpoint).
	MaglevTableSize uint64

	// http are the L7 settings (HTTP); nil: Envoy's defaults.
	http *ClusterHTTP

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
	// Workload is the endpoint's workload as EDS says it (Istio's
	// filter_metadata "istio" workload); nil when it says none. The
	// client side's telemetry names the destination workload by it
	// when the other side does not.
	Workload *xdsapi.EndpointWorkload
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
	// Request is the HTTP request being authorized (HTTPChain.RBAC);
	// nil at L4, where a matcher on the request cannot be decided and
	// fails closed (docs/xds.md).
	Request *HTTPRequest
}

// HTTPRequest is what authorization and hashing see of a request.
type HTTPRequest struct {
	// Method, Path (the :path as sent, with its query), Authority (Host
	// or :authority, as sent, with its port if any) and Scheme answer
	// the pseudo-headers ":method", ":path", ":authority" and ":scheme";
	// Header is never asked for those.
	Method, Path, Authority, Scheme string
	// Header returns a request header by lower-case name, several
	// values joined by "," (as Envoy joins them); ok is false when the
	// request has none. nil: the request has no headers.
	Header func(name string) (value string, ok bool)
}

// Decision is RBAC's verdict.
type Decision struct {
	Allowed bool
	// Policy names the policy that decided: the DENY policy that
	// matched, the ALLOW policy that matched, or "" when no ALLOW policy
	// matched (default deny) or no RBAC applies.
	Policy string
}

// RouteConfig is a compiled route configuration: an RDS resource
// (Snapshot.Routes) or an HTTP connection manager's inline route_config
// (HTTPChain.Routes). It is immutable. VirtualHost chooses a virtual
// host by authority and VirtualHost.Route a route by the request; the
// proxy calls both per request, and neither allocates nor compiles
// anything.
type RouteConfig struct {
	Name         string
	VirtualHosts []*VirtualHost

	// The domain index (route_l7.go): exact domains (lower case),
	// "*.suffix" and "prefix.*" wildcards longest first, and "*".
	exact    map[string]*VirtualHost
	suffixes []wildDomain
	prefixes []wildDomain
	star     *VirtualHost
}

// VirtualHost is one virtual host of a route configuration.
type VirtualHost struct {
	Name string
	// Domains as written, lower case: exact names (with ":port" where
	// the controller adds one), "*.suffix", "prefix.*" or "*".
	Domains []string
	// Routes in order: the first whose match holds decides.
	Routes []*Route
}

// Route is one compiled route: a match and where the request goes.
type Route struct {
	Name  string
	Match RouteMatch
	// Clusters: one with weight 1 (route.cluster), or the weighted
	// clusters (weight 0 left out); PickCluster chooses.
	Clusters []WeightedCluster
	// Timeout is route.timeout: NoRouteTimeout when 0s (none), Envoy's
	// 15s (DefaultRouteTimeout) when unset.
	Timeout time.Duration
	// Retry is the retry policy; nil: no retries.
	Retry *RetryPolicy
	// Fault is the route's envoy.filters.http.fault override; nil: none.
	Fault *Fault
	// Hash is the route's hash_policy in order: the key a RingHash or
	// Maglev cluster balances the request by (Route.HashKey,
	// Cluster.PickRequest); nil: none.
	Hash []HashPolicy

	total uint32 // sum of the Clusters' weights
}

// HashPolicyKind is what one hash policy of a route hashes.
type HashPolicyKind int

// Hash policy kinds (route.hash_policy's policy_specifier).
const (
	HashHeader         HashPolicyKind = iota // header: a request header's value
	HashCookie                               // cookie: a cookie's value
	HashSourceIP                             // connection_properties.source_ip: the downstream address
	HashQueryParameter                       // query_parameter: a query parameter's value
)

// HashPolicy is one entry of a route's hash_policy.
type HashPolicy struct {
	Kind HashPolicyKind
	// Name is the header's (lower case), the cookie's or the query
	// parameter's name.
	Name string
	// CookiePath and CookieTTL are cookie.path and cookie.ttl; with
	// CookieGenerate (ttl set) a request without the cookie gets one
	// (Route.SetCookie), a session cookie when CookieTTL is 0.
	CookiePath     string
	CookieTTL      time.Duration
	CookieGenerate bool
	// Terminal: when this policy yields a hash, the later ones are not
	// evaluated.
	Terminal bool
}

// Route timeouts.
const (
	// DefaultRouteTimeout is route.timeout when unset (Envoy's default).
	DefaultRouteTimeout = 15 * time.Second
	// NoRouteTimeout is Route.Timeout for route.timeout 0s: no timeout.
	NoRouteTimeout time.Duration = -1
)

// PathMatchKind is how a route matches the path.
type PathMatchKind int

// Path match kinds.
const (
	PathPrefix PathMatchKind = iota // match.prefix (the whole :path)
	PathExact                       // match.path (the path without its query)
	PathRegex                       // match.safe_regex (the path without its query, whole)
)

// RouteMatch is a route's match: the path, then every header matcher.
type RouteMatch struct {
	PathKind PathMatchKind
	// Path is the prefix or exact path; "" for a regex.
	Path string
	// Regex is the compiled safe_regex (anchored at both ends).
	Regex *regexp.Regexp
	// Headers must all match; ":method" is the request's method.
	Headers []HeaderMatch
}

// HeaderMatchKind is how a header matcher matches.
type HeaderMatchKind int

// Header match kinds.
const (
	HeaderPresent HeaderMatchKind = iota // present_match (or no specifier)
	HeaderExact                          // exact_match, string_match.exact
	HeaderPrefix                         // prefix_match, string_match.prefix
	HeaderSuffix                         // suffix_match, string_match.suffix
	HeaderRegex                          // safe_regex_match, string_match.safe_regex
)

// HeaderMatch is one header matcher of a route.
type HeaderMatch struct {
	// Name is the header's name, lower case (":method" for the method).
	Name string
	Kind HeaderMatchKind
	// Value is the exact value, prefix or suffix.
	Value string
	// Regex is the compiled regular expression (HeaderRegex).
	Regex *regexp.Regexp
	// Present is present_match's value (HeaderPresent): true matches a
	// request with the header, false one without.
	Present bool
	// Invert is invert_match.
	Invert bool
}

// RetryOn is a set of Envoy's retry_on conditions.
type RetryOn uint32

// Envoy's retry conditions (x-envoy-retry-on and x-envoy-retry-grpc-on).
const (
	Retry5xx                     RetryOn = 1 << iota // 5xx
	RetryGatewayError                                // gateway-error: 502, 503, 504
	RetryReset                                       // reset
	RetryResetBeforeRequest                          // reset-before-request
	RetryConnectFailure                              // connect-failure
	RetryEnvoyRateLimited                            // envoy-ratelimited
	RetryRetriable4xx                                // retriable-4xx: 409
	RetryRefusedStream                               // refused-stream
	RetryRetriableStatusCodes                        // retriable-status-codes
	RetryRetriableHeaders                            // retriable-headers
	RetryHTTP3PostConnectFailure                     // http3-post-connect-failure
	RetryCancelled                                   // cancelled (gRPC)
	RetryDeadlineExceeded                            // deadline-exceeded (gRPC)
	RetryInternal                                    // internal (gRPC)
	RetryResourceExhausted                           // resource-exhausted (gRPC)
	RetryUnavailable                                 // unavailable (gRPC)
)

// RetryPolicy is a route's compiled retry_policy.
type RetryPolicy struct {
	On RetryOn
	// NumRetries is num_retries (Envoy's default 1 when unset).
	NumRetries uint32
	// PerTryTimeout is per_try_timeout; 0: the route's timeout bounds
	// every try.
	PerTryTimeout time.Duration
	// RetriableStatusCodes are the codes retriable-status-codes retries.
	RetriableStatusCodes []uint32
	// PreviousHosts is the previous_hosts retry host predicate: a retry
	// avoids the hosts already tried.
	PreviousHosts bool
	// HostSelectionMaxAttempts is host_selection_retry_max_attempts:
	// how many times a retry picks again to avoid a previous host.
	HostSelectionMaxAttempts int64
}

// Fault is a route's HTTP fault injection.
type Fault struct {
	// Delay is delay.fixed_delay (0: no delay), applied to the share of
	// requests DelayPercent says.
	Delay        time.Duration
	DelayPercent Fraction
	// AbortHTTPStatus is abort.http_status (0: none); AbortGRPCStatus
	// abort.grpc_status (-1: none); AbortPercent the share aborted.
	AbortHTTPStatus int
	AbortGRPCStatus int
	AbortPercent    Fraction
}

// Fraction is a FractionalPercent in parts per million (denominators
// HUNDRED, TEN_THOUSAND and MILLION scaled; above 100% is 100%).
type Fraction uint32

// ClusterHTTP are a cluster's L7 settings (Cluster.HTTP).
type ClusterHTTP struct {
	// Circuit breaker thresholds of the DEFAULT priority: 0 is no limit
	// (Istio's 2³²−1); unset is Envoy's default (1024, 1024, 3).
	MaxPendingRequests, MaxRequests, MaxRetries uint32
	// MaxRequestsPerConnection is common_http_protocol_options'
	// max_requests_per_connection (0: no limit).
	MaxRequestsPerConnection uint32
	// HTTP2 is explicit_http_config.http2_protocol_options: the upstream
	// speaks HTTP/2 (else HTTP/1.1, or the downstream's protocol).
	HTTP2 bool
	// Outlier is outlier_detection; nil: none.
	Outlier *OutlierDetection
}

// OutlierDetection is a cluster's consecutive-5xx outlier detection
// (success-rate ejection is not supported).
type OutlierDetection struct {
	// Consecutive5xx (Envoy's default 5) and EnforcingConsecutive5xx, the
	// percentage of detections enforced (default 100).
	Consecutive5xx          uint32
	EnforcingConsecutive5xx uint32
	// Interval between sweeps (default 10s); BaseEjectionTime (default
	// 30s), times the number of ejections; MaxEjectionPercent of the
	// hosts ejected at once (default 10).
	Interval           time.Duration
	BaseEjectionTime   time.Duration
	MaxEjectionPercent uint32
}
