package envoy

import (
	"net/netip"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	xdsapi "github.com/fibmesh/fibmesh/api/xds"
)

// Listener names and the ports they listen on (see ARCHITECTURE.md,
// "Ports"). The listeners live in every pod's network namespace; the
// agent owns their sockets.
const (
	// OutboundListener captures the pod's outbound connections.
	OutboundListener = "outbound"
	OutboundPort     = 15001
	// InboundListener terminates mTLS for the node's workloads.
	InboundListener = "inbound"
	InboundPort     = 15008
	// InboundPlaintextListener accepts plaintext for the ports whose
	// mTLS mode is PERMISSIVE or DISABLE, and for no other.
	InboundPlaintextListener = "inbound-plaintext"
	InboundPlaintextPort     = 15006
)

// ChainMetadataKey is the filter_metadata key under which every
// outbound filter chain names the service host it belongs to:
// metadata.filter_metadata["fibmesh"].host. Readers (the slow path's DNS
// table) use it rather than guess the host from where the chain routes,
// which a VirtualService tcp or tls rule may make another host's
// cluster.
const (
	ChainMetadataKey  = "fibmesh"
	ChainMetadataHost = "host"
)

// Shared cluster names: ORIGINAL_DST clusters that forward to a
// connection's original destination.
const (
	// InboundPassthroughCluster is where inbound listeners forward, once
	// a connection is authenticated and authorized: to the local
	// application at the original destination. One cluster for every
	// workload, so no cluster is per node.
	InboundPassthroughCluster = "inbound-passthrough"
	// OutboundPassthroughCluster carries outbound connections to
	// destinations the mesh does not know (Istio's PassthroughCluster,
	// outboundTrafficPolicy ALLOW_ANY), in plaintext.
	OutboundPassthroughCluster = "outbound-passthrough"
)

// SDS secret names: the agent↔controller contract in api/xds.
const (
	RootCASecret = xdsapi.RootCASecret
	ClientSecret = xdsapi.ClientSecret
)

// WorkloadSecret returns the name of the SDS secret holding the SVID of
// a workload identity (xdsapi.WorkloadSecret).
func WorkloadSecret(identity string) string { return xdsapi.WorkloadSecret(identity) }

// ClusterName returns Istio's outbound cluster name for a service port,
// or for one subset of it: outbound|<port>|<subset>|<host> (subset empty
// for the whole service).
func ClusterName(host string, port uint32, subset string) string {
	return "outbound|" + strconv.FormatUint(uint64(port), 10) + "|" + subset + "|" + host
}

// RouteName returns the name of the RouteConfiguration of an HTTP
// service port: <host>:<port>.
func RouteName(host string, port uint32) string {
	return host + ":" + strconv.FormatUint(uint64(port), 10)
}

// Well-known Envoy extension names.
const (
	wkHCM           = "envoy.filters.network.http_connection_manager"
	wkTCPProxy      = "envoy.filters.network.tcp_proxy"
	wkNetworkRBAC   = "envoy.filters.network.rbac"
	wkHTTPRBAC      = "envoy.filters.http.rbac"
	wkFault         = "envoy.filters.http.fault"
	wkRouter        = "envoy.filters.http.router"
	wkOriginalDst   = "envoy.filters.listener.original_dst"
	wkTLSInspector  = "envoy.filters.listener.tls_inspector"
	wkTLS           = "envoy.transport_sockets.tls"
	wkRawBuffer     = "envoy.transport_sockets.raw_buffer"
	wkHTTPProtocol  = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	wkPreviousHosts = "envoy.retry_host_predicates.previous_hosts"
)

// ads is the config source of every xDS reference: the ADS stream.
func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

// deterministic marshals Any payloads with sorted map keys: RBAC
// policies are a map, and anypb.New would make the same model give
// different bytes (proto.Equal compares an Any's bytes).
var deterministic = proto.MarshalOptions{Deterministic: true}

// builder carries the first error of a translation, so that helpers
// can be composed as expressions.
type builder struct {
	err error
}

// any packs m into an Any; a failure is kept in b.err.
func (b *builder) any(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, deterministic); err != nil && b.err == nil {
		b.err = err
	}
	return a
}

// socketAddress is a TCP address.
func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// cidr parses an address (a host CIDR, /32 or /128) or a CIDR; false
// when it is neither.
func cidr(s string) (*corev3.CidrRange, bool) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return nil, false
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, false
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}, true
}

// port formats a port number.
func port(p uint32) string { return strconv.FormatUint(uint64(p), 10) }
