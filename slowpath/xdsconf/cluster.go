package xdsconf

import (
	"fmt"
	"math"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/structpb"

	xdsapi "github.com/fibmesh/fibmesh/api/xds"
)

// Envoy's defaults where a cluster leaves a field unset.
const (
	// DefaultConnectTimeout is connect_timeout's default.
	DefaultConnectTimeout = 5 * time.Second
	// DefaultMaxConnections is the circuit breakers' max_connections
	// when none is given.
	DefaultMaxConnections = 1024
)

// Transport socket match of endpoints dialled in plaintext in an mTLS
// cluster (Istio's key and value, docs/xds.md).
const (
	socketMatchKey   = "envoy.transport_socket_match"
	tlsModeKey       = "tlsMode"
	tlsModePlaintext = "disabled"
)

// httpProtocolOptions is the only typed_extension_protocol_options key
// the slow path accepts (L7 reads it; L4 ignores it).
const httpProtocolOptions = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// compileCluster validates and converts a Cluster. An EDS cluster's
// Endpoints are joined by the Store from its ClusterLoadAssignment.
func compileCluster(c *clusterv3.Cluster, path string) (*Cluster, error) {
	if err := onlyFields(c, path, "name", "type", "eds_cluster_config", "connect_timeout", "lb_policy",
		"circuit_breakers", "transport_socket", "transport_socket_matches", "load_assignment",
		"ring_hash_lb_config", "maglev_lb_config", "least_request_lb_config",
		// Outlier detection and HTTP options are L7's (compileClusterHTTP);
		// DNS tuning is the resolver's; the rest is Envoy bookkeeping.
		"outlier_detection", "typed_extension_protocol_options", "dns_lookup_family", "dns_refresh_rate",
		"respect_dns_ttl", "cleanup_interval", "per_connection_buffer_limit_bytes", "alt_stat_name",
		"metadata", "common_lb_config", "upstream_connection_options"); err != nil {
		return nil, err
	}
	out := &Cluster{Name: c.GetName(), ConnectTimeout: DefaultConnectTimeout, MaxConnections: DefaultMaxConnections, edsName: c.GetName()}
	if c.ConnectTimeout != nil {
		if err := c.GetConnectTimeout().CheckValid(); err != nil || c.GetConnectTimeout().AsDuration() <= 0 {
			return nil, errorf(path+".connect_timeout", "must be a positive duration")
		}
		out.ConnectTimeout = c.GetConnectTimeout().AsDuration()
	}
	switch t := c.GetClusterDiscoveryType().(type) {
	case *clusterv3.Cluster_Type:
		switch t.Type {
		case clusterv3.Cluster_EDS:
			out.Type = ClusterEDS
		case clusterv3.Cluster_ORIGINAL_DST:
			out.Type = ClusterOriginalDst
		case clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
			out.Type = ClusterDNS
		case clusterv3.Cluster_STATIC:
			out.Type = ClusterStatic
		default:
			return nil, errorf(path+".type", "%s is not supported", t.Type)
		}
	case nil: // proto3 default: STATIC
		out.Type = ClusterStatic
	default:
		return nil, errorf(path+".cluster_type", "custom cluster types are not supported")
	}
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		out.LB = RoundRobin
	case clusterv3.Cluster_LEAST_REQUEST:
		out.LB = LeastRequest
	case clusterv3.Cluster_RANDOM:
		out.LB = Random
	case clusterv3.Cluster_RING_HASH:
		out.LB = RingHash
	case clusterv3.Cluster_MAGLEV:
		out.LB = Maglev
	case clusterv3.Cluster_CLUSTER_PROVIDED:
		out.LB = ClusterProvided
	default:
		return nil, errorf(path+".lb_policy", "%s is not supported", c.GetLbPolicy())
	}
	if (out.Type == ClusterOriginalDst) != (out.LB == ClusterProvided) {
		return nil, errorf(path+".lb_policy", "CLUSTER_PROVIDED goes with type ORIGINAL_DST and only with it (as in Envoy)")
	}
	if lr := c.GetLeastRequestLbConfig(); lr != nil {
		if err := onlyFields(lr, path+".least_request_lb_config", "choice_count"); err != nil {
			return nil, err
		}
		if lr.ChoiceCount != nil && lr.GetChoiceCount().GetValue() != 2 {
			return nil, errorf(path+".least_request_lb_config.choice_count", "%d: the slow path makes two choices", lr.GetChoiceCount().GetValue())
		}
	}
	if err := hashLBConfig(c, out, path); err != nil {
		return nil, err
	}
	for k := range c.GetTypedExtensionProtocolOptions() {
		if k != httpProtocolOptions {
			return nil, errorf(fmt.Sprintf("%s.typed_extension_protocol_options[%q]", path, k), "not supported (only %s)", httpProtocolOptions)
		}
		// Decode it, so that a bad one is refused here and not by L7.
		if _, err := unpack(c.GetTypedExtensionProtocolOptions()[k], fmt.Sprintf("%s.typed_extension_protocol_options[%q]", path, k)); err != nil {
			return nil, err
		}
	}
	var err error
	if out.http, err = compileClusterHTTP(c, path); err != nil {
		return nil, err
	}
	if out.MaxConnections, err = maxConnections(c.GetCircuitBreakers(), path+".circuit_breakers"); err != nil {
		return nil, err
	}
	if ts := c.GetTransportSocket(); ts != nil {
		if out.TLS, err = upstreamTLS(ts, path+".transport_socket"); err != nil {
			return nil, err
		}
	}
	for i, m := range c.GetTransportSocketMatches() {
		if err := plaintextMatch(m, fmt.Sprintf("%s.transport_socket_matches[%d]", path, i)); err != nil {
			return nil, err
		}
		if out.TLS != nil {
			out.TLS.PlaintextMatch = true
		}
	}
	la := c.GetLoadAssignment()
	switch out.Type {
	case ClusterEDS:
		ec := c.GetEdsClusterConfig()
		if ec == nil {
			return nil, errorf(path+".eds_cluster_config", "missing: an EDS cluster needs eds_config {ads: {}}")
		}
		if err := onlyFields(ec, path+".eds_cluster_config", "eds_config", "service_name"); err != nil {
			return nil, err
		}
		if ec.GetEdsConfig().GetAds() == nil {
			return nil, errorf(path+".eds_cluster_config.eds_config", "the agent reads endpoints only over ADS")
		}
		if ec.GetServiceName() != "" {
			out.edsName = ec.GetServiceName()
		}
		if la != nil {
			return nil, errorf(path+".load_assignment", "an EDS cluster takes its endpoints from EDS")
		}
	case ClusterStatic:
		if la == nil {
			return nil, errorf(path+".load_assignment", "missing: a STATIC cluster lists its endpoints")
		}
		if out.Endpoints, err = compileAssignment(la, path+".load_assignment"); err != nil {
			return nil, err
		}
		out.Endpoints.prepare(out)
	case ClusterDNS:
		if la == nil {
			return nil, errorf(path+".load_assignment", "missing: a DNS cluster lists its hosts")
		}
		if out.DNSHosts, err = dnsHosts(la, path+".load_assignment"); err != nil {
			return nil, err
		}
	case ClusterOriginalDst:
		if la != nil {
			return nil, errorf(path+".load_assignment", "an ORIGINAL_DST cluster has no endpoints")
		}
	}
	return out, nil
}

// maxMaglevTableSize is Envoy's bound on maglev_lb_config.table_size.
const maxMaglevTableSize = 5000011

// hashLBConfig reads ring_hash_lb_config and maglev_lb_config. The hash
// function is the slow path's own either way (one proxy hashes the keys
// and owns the ring, so Envoy's xxHash/MurmurHash choice changes
// nothing a client can see).
func hashLBConfig(c *clusterv3.Cluster, out *Cluster, path string) error {
	if rh := c.GetRingHashLbConfig(); rh != nil {
		p := path + ".ring_hash_lb_config"
		if err := onlyFields(rh, p, "minimum_ring_size", "maximum_ring_size", "hash_function"); err != nil {
			return err
		}
		out.MinRingSize, out.MaxRingSize = rh.GetMinimumRingSize().GetValue(), rh.GetMaximumRingSize().GetValue()
		if out.MinRingSize > maxRingSize {
			return errorf(p+".minimum_ring_size", "%d is above %d (Envoy's bound)", out.MinRingSize, maxRingSize)
		}
		if out.MaxRingSize > maxRingSize {
			return errorf(p+".maximum_ring_size", "%d is above %d (Envoy's bound)", out.MaxRingSize, maxRingSize)
		}
		if out.MaxRingSize != 0 && out.MinRingSize > out.MaxRingSize {
			return errorf(p+".minimum_ring_size", "%d is above maximum_ring_size %d", out.MinRingSize, out.MaxRingSize)
		}
	}
	if ml := c.GetMaglevLbConfig(); ml != nil {
		p := path + ".maglev_lb_config"
		if err := onlyFields(ml, p, "table_size"); err != nil {
			return err
		}
		if ml.TableSize != nil {
			n := ml.GetTableSize().GetValue()
			if n > maxMaglevTableSize || !big.NewInt(int64(n)).ProbablyPrime(0) {
				return errorf(p+".table_size", "%d: must be a prime up to %d (as in Envoy), e.g. 65537", n, maxMaglevTableSize)
			}
			out.MaglevTableSize = n
		}
	}
	return nil
}

// keep the HTTP options' type registered for unpack.
var _ = (*httpv3.HttpProtocolOptions)(nil)

// maxConnections reads the DEFAULT priority's max_connections: unset is
// Envoy's 1024, 2³²−1 (Istio's "unlimited") is 0, no limit.
func maxConnections(cb *clusterv3.CircuitBreakers, path string) (uint32, error) {
	if cb == nil {
		return DefaultMaxConnections, nil
	}
	if err := onlyFields(cb, path, "thresholds"); err != nil {
		return 0, err
	}
	for i, t := range cb.GetThresholds() {
		p := fmt.Sprintf("%s.thresholds[%d]", path, i)
		if err := onlyFields(t, p, "priority", "max_connections", "max_pending_requests", "max_requests",
			"max_retries", "track_remaining", "retry_budget", "max_connection_pools"); err != nil {
			return 0, err
		}
		if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
			continue // the slow path has no high-priority traffic
		}
		if t.MaxConnections == nil {
			return DefaultMaxConnections, nil
		}
		switch v := t.GetMaxConnections().GetValue(); v {
		case math.MaxUint32:
			return 0, nil
		case 0:
			return 0, errorf(p+".max_connections", "0 would refuse every connection; omit the threshold or set 4294967295 for no limit")
		default:
			return v, nil
		}
	}
	return DefaultMaxConnections, nil
}

// upstreamTLS converts a cluster transport socket: raw_buffer (nil) or
// an UpstreamTlsContext presenting the calling workload's SVID (SDS
// "default") and verifying the server against the trust bundle and, if
// given, its SPIFFE IDs (URI SAN exact matchers).
func upstreamTLS(ts *corev3.TransportSocket, path string) (*UpstreamTLS, error) {
	if err := onlyFields(ts, path, "name", "typed_config"); err != nil {
		return nil, err
	}
	m, err := unpack(ts.GetTypedConfig(), path+".typed_config")
	if err != nil {
		return nil, err
	}
	switch ctx := m.(type) {
	case *rawbufferv3.RawBuffer:
		return nil, nil
	case *tlsv3.UpstreamTlsContext:
		p := path + ".typed_config"
		// sni is accepted and not sent: the tunnel's server is chosen by
		// address, not by name.
		if err := onlyFields(ctx, p, "common_tls_context", "sni"); err != nil {
			return nil, err
		}
		cc := ctx.GetCommonTlsContext()
		if cc == nil {
			return nil, errorf(p+".common_tls_context", "missing")
		}
		p += ".common_tls_context"
		if err := onlyFields(cc, p, "tls_certificate_sds_secret_configs", "validation_context_sds_secret_config", "combined_validation_context"); err != nil {
			return nil, err
		}
		certs := cc.GetTlsCertificateSdsSecretConfigs()
		if len(certs) != 1 || certs[0].GetName() != xdsapi.ClientSecret {
			return nil, errorf(p+".tls_certificate_sds_secret_configs", "want one SDS secret %q (the calling workload's SVID)", xdsapi.ClientSecret)
		}
		if err := onlyFields(certs[0], p+".tls_certificate_sds_secret_configs[0]", "name", "sds_config"); err != nil {
			return nil, err
		}
		if err := rootCAValidation(cc, p, true); err != nil {
			return nil, err
		}
		out := &UpstreamTLS{}
		dv := cc.GetCombinedValidationContext().GetDefaultValidationContext()
		vp := p + ".combined_validation_context.default_validation_context"
		for i, san := range dv.GetMatchTypedSubjectAltNames() {
			sp := fmt.Sprintf("%s.match_typed_subject_alt_names[%d]", vp, i)
			if err := onlyFields(san, sp, "san_type", "matcher", "oid"); err != nil {
				return nil, err
			}
			if san.GetSanType() != tlsv3.SubjectAltNameMatcher_URI {
				return nil, errorf(sp+".san_type", "%s: mesh peers are named by URI SANs (SPIFFE IDs)", san.GetSanType())
			}
			id, err := spiffeSAN(san.GetMatcher(), sp+".matcher")
			if err != nil {
				return nil, err
			}
			out.SANs = append(out.SANs, id)
		}
		for i, sm := range dv.GetMatchSubjectAltNames() {
			id, err := spiffeSAN(sm, fmt.Sprintf("%s.match_subject_alt_names[%d]", vp, i))
			if err != nil {
				return nil, err
			}
			out.SANs = append(out.SANs, id)
		}
		return out, nil
	}
	return nil, errorf(path, "transport socket %s is not supported (the slow path knows tls and raw_buffer)", m.ProtoReflect().Descriptor().FullName())
}

// spiffeSAN reads an exact SPIFFE ID out of a SAN matcher.
func spiffeSAN(sm *matcherv3.StringMatcher, path string) (spiffeid.ID, error) {
	if sm == nil {
		return spiffeid.ID{}, errorf(path, "missing")
	}
	if _, ok := sm.GetMatchPattern().(*matcherv3.StringMatcher_Exact); !ok || sm.GetIgnoreCase() {
		return spiffeid.ID{}, errorf(path, "%s: only exact SPIFFE IDs are supported", oneofName(sm, "match_pattern"))
	}
	id, err := spiffeid.FromString(sm.GetExact())
	if err != nil {
		return spiffeid.ID{}, errorf(path+".exact", "%q is not a SPIFFE ID: %v", sm.GetExact(), err)
	}
	return id, nil
}

// plaintextMatch accepts Istio's transport socket match for plaintext
// endpoints: match {tlsMode: disabled} → raw_buffer.
func plaintextMatch(m *clusterv3.Cluster_TransportSocketMatch, path string) error {
	if err := onlyFields(m, path, "name", "match", "transport_socket"); err != nil {
		return err
	}
	f := m.GetMatch().GetFields()
	if len(f) != 1 || f[tlsModeKey].GetStringValue() != tlsModePlaintext {
		return errorf(path+".match", "only {%s: %s} is supported", tlsModeKey, tlsModePlaintext)
	}
	ts := m.GetTransportSocket()
	if ts == nil {
		return errorf(path+".transport_socket", "missing: want raw_buffer")
	}
	tls, err := upstreamTLS(ts, path+".transport_socket")
	if err != nil {
		return err
	}
	if tls != nil {
		return errorf(path+".transport_socket", "want raw_buffer for tlsMode %s", tlsModePlaintext)
	}
	return nil
}

// compileAssignment converts a ClusterLoadAssignment.
func compileAssignment(cla *endpointv3.ClusterLoadAssignment, path string) (*Endpoints, error) {
	if err := onlyFields(cla, path, "cluster_name", "endpoints", "policy"); err != nil {
		return nil, err
	}
	if p := cla.GetPolicy(); p != nil {
		if err := onlyFields(p, path+".policy", "overprovisioning_factor", "endpoint_stale_after", "weighted_priority_health"); err != nil {
			return nil, err
		}
	}
	out := &Endpoints{}
	for i, loc := range cla.GetEndpoints() {
		lp := fmt.Sprintf("%s.endpoints[%d]", path, i)
		// load_balancing_weight of a locality is accepted and not used:
		// the slow path has no locality-weighted balancing.
		if err := onlyFields(loc, lp, "locality", "lb_endpoints", "load_balancing_weight", "priority", "metadata"); err != nil {
			return nil, err
		}
		if loc.GetPriority() != 0 {
			return nil, errorf(lp+".priority", "%d: the slow path has one priority (0)", loc.GetPriority())
		}
		node := loc.GetLocality().GetSubZone()
		for j, lb := range loc.GetLbEndpoints() {
			ep, err := lbEndpoint(lb, fmt.Sprintf("%s.lb_endpoints[%d]", lp, j), true)
			if err != nil {
				return nil, err
			}
			ep.Node = node
			out.Hosts = append(out.Hosts, ep)
			if ep.Healthy {
				out.Healthy = append(out.Healthy, ep)
			}
		}
	}
	return out, nil
}

// lbEndpoint converts one endpoint; ip requires an IP address (EDS,
// STATIC), else the address may be a hostname (DNS: Addr stays zero and
// the caller reads the address itself).
func lbEndpoint(lb *endpointv3.LbEndpoint, path string, ip bool) (*Endpoint, error) {
	if err := onlyFields(lb, path, "endpoint", "health_status", "metadata", "load_balancing_weight"); err != nil {
		return nil, err
	}
	e := lb.GetEndpoint()
	if e == nil {
		return nil, errorf(path, "missing endpoint (endpoint_name is not supported)")
	}
	if err := onlyFields(e, path+".endpoint", "address", "health_check_config", "hostname"); err != nil {
		return nil, err
	}
	host, port, err := socketAddress(e.GetAddress(), path+".endpoint.address")
	if err != nil {
		return nil, err
	}
	out := &Endpoint{Weight: 1}
	if ip {
		a, err := netip.ParseAddr(host)
		if err != nil {
			return nil, errorf(path+".endpoint.address.socket_address.address", "%q is not an IP address", host)
		}
		out.Addr = netip.AddrPortFrom(a.Unmap(), port)
	}
	if lb.LoadBalancingWeight != nil {
		if lb.GetLoadBalancingWeight().GetValue() == 0 {
			return nil, errorf(path+".load_balancing_weight", "an endpoint with zero weight (at least 1)")
		}
		out.Weight = lb.GetLoadBalancingWeight().GetValue()
	}
	switch lb.GetHealthStatus() {
	case corev3.HealthStatus_UNKNOWN, corev3.HealthStatus_HEALTHY:
		out.Healthy = true
	}
	if md := lb.GetMetadata().GetFilterMetadata()[socketMatchKey]; md != nil {
		out.Plaintext = md.GetFields()[tlsModeKey].GetStringValue() == tlsModePlaintext
	}
	w, err := endpointWorkload(lb.GetMetadata(), path+".metadata")
	if err != nil {
		return nil, err
	}
	out.Workload = w
	return out, nil
}

// endpointWorkload reads an endpoint's workload from its metadata
// (filter_metadata "istio" workload, as Istio's EDS writes it:
// xdsapi.ParseEndpointWorkload); nil when it has none. A value that is
// not a string, too long, or not made of names and label values is
// refused: it would become metric labels. Other keys of the "istio"
// struct are not read, as Envoy ignores metadata no filter reads.
func endpointWorkload(md *corev3.Metadata, path string) (*xdsapi.EndpointWorkload, error) {
	v, ok := md.GetFilterMetadata()[xdsapi.EndpointMetadataKey].GetFields()[xdsapi.EndpointWorkloadField]
	if !ok {
		return nil, nil
	}
	path = fmt.Sprintf("%s.filter_metadata[%q].%s", path, xdsapi.EndpointMetadataKey, xdsapi.EndpointWorkloadField)
	s, isString := v.GetKind().(*structpb.Value_StringValue)
	if !isString {
		return nil, errorf(path, "want a string (name;namespace;canonical service;canonical revision;cluster[;app;version])")
	}
	w, err := xdsapi.ParseEndpointWorkload(s.StringValue)
	if err != nil {
		return nil, errorf(path, "%.64q: %v", s.StringValue, err)
	}
	return &w, nil
}

// socketAddress reads a TCP socket address with a numeric port.
func socketAddress(a *corev3.Address, path string) (string, uint16, error) {
	sa := a.GetSocketAddress()
	if sa == nil {
		return "", 0, errorf(path, "want a socket_address")
	}
	path += ".socket_address"
	if err := onlyFields(sa, path, "address", "port_value", "protocol", "ipv4_compat"); err != nil {
		return "", 0, err
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return "", 0, errorf(path+".protocol", "%s: the slow path proxies TCP", sa.GetProtocol())
	}
	if sa.GetAddress() == "" {
		return "", 0, errorf(path+".address", "must not be empty")
	}
	p := sa.GetPortValue()
	if p == 0 || p > 65535 {
		return "", 0, errorf(path+".port_value", "%d is not a port", p)
	}
	return sa.GetAddress(), uint16(p), nil
}

// dnsHosts reads a DNS cluster's host:port pairs.
func dnsHosts(la *endpointv3.ClusterLoadAssignment, path string) ([]string, error) {
	if err := onlyFields(la, path, "cluster_name", "endpoints", "policy"); err != nil {
		return nil, err
	}
	var out []string
	for i, loc := range la.GetEndpoints() {
		lp := fmt.Sprintf("%s.endpoints[%d]", path, i)
		if err := onlyFields(loc, lp, "locality", "lb_endpoints", "load_balancing_weight", "priority"); err != nil {
			return nil, err
		}
		for j, lb := range loc.GetLbEndpoints() {
			p := fmt.Sprintf("%s.lb_endpoints[%d]", lp, j)
			if _, err := lbEndpoint(lb, p, false); err != nil {
				return nil, err
			}
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, net.JoinHostPort(strings.ToLower(sa.GetAddress()), fmt.Sprint(sa.GetPortValue())))
		}
	}
	return out, nil // none: a subset that selects no host; connections fail
}
