package envoy

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fibmesh/fibmesh/controller/model"
)

// defaultConnectTimeout is Istio's connect timeout where no
// DestinationRule sets one.
const defaultConnectTimeout = 10 * time.Second

// Transport socket match of endpoints that take plaintext (their port is
// DISABLE) in a cluster that otherwise speaks mTLS: Istio's key.
const (
	tlsModeKey       = "tlsMode"
	tlsModePlaintext = "disabled"
	socketMatchKey   = "envoy.transport_socket_match"
)

// portPlan is what the clusters of one service port share: the
// endpoints Envoy can use, their mTLS modes, and how the client talks to
// them.
type portPlan struct {
	svc  *model.Service
	port model.Port
	dp   *model.DestinationPolicy
	// eps are the endpoints with a usable address; plaintext[i] is true
	// where eps[i]'s workload port is DISABLE.
	eps       []*model.Endpoint
	plaintext []bool
	// tls is the upstream transport socket (nil for plaintext); mixed
	// is true when some endpoints are DISABLE, which then get raw
	// buffer through transport_socket_matches.
	tls   *corev3.TransportSocket
	mixed bool
	kind  clusterv3.Cluster_DiscoveryType
}

// clusters builds every cluster and the assignments of the EDS ones.
func (b *builder) clusters(ix *index) ([]*clusterv3.Cluster, []*endpointv3.ClusterLoadAssignment, error) {
	clusters := []*clusterv3.Cluster{passthroughCluster(InboundPassthroughCluster), passthroughCluster(OutboundPassthroughCluster)}
	var cla []*endpointv3.ClusterLoadAssignment
	for _, svc := range ix.services {
		dp := ix.policies[svc.Hostname]
		for _, p := range svc.Ports {
			if p.Protocol == model.ProtocolUDP {
				continue // UDP is balanced by XDP (FDS), not by a proxy
			}
			plan := b.plan(ix, svc, p, dp)
			c, l, err := b.cluster(plan, "", nil)
			if err != nil {
				return nil, nil, err
			}
			clusters, cla = append(clusters, c), appendNonNil(cla, l)
			if dp == nil {
				continue
			}
			for _, ss := range dp.Subsets {
				c, l, err := b.cluster(plan, ss.Name, ss.Labels)
				if err != nil {
					return nil, nil, err
				}
				clusters, cla = append(clusters, c), appendNonNil(cla, l)
			}
		}
	}
	slices.SortFunc(clusters, func(a, b *clusterv3.Cluster) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(cla, func(a, b *endpointv3.ClusterLoadAssignment) int { return strings.Compare(a.ClusterName, b.ClusterName) })
	return clusters, cla, nil
}

func appendNonNil[T any](s []*T, v *T) []*T {
	if v == nil {
		return s
	}
	return append(s, v)
}

// passthroughCluster is an ORIGINAL_DST cluster: connections go where
// they were headed.
func passthroughCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(defaultConnectTimeout),
		CircuitBreakers:      circuitBreakers(nil),
	}
}

// plan decides the endpoints, discovery type and transport of a
// service port.
func (b *builder) plan(ix *index, svc *model.Service, p model.Port, dp *model.DestinationPolicy) *portPlan {
	plan := &portPlan{svc: svc, port: p, dp: dp, kind: clusterv3.Cluster_EDS}
	if svc.ServiceEntry {
		switch svc.Resolution {
		case "DNS":
			plan.kind = clusterv3.Cluster_STRICT_DNS
		case "DNS_ROUND_ROBIN":
			plan.kind = clusterv3.Cluster_LOGICAL_DNS
		case "NONE":
			plan.kind = clusterv3.Cluster_ORIGINAL_DST
		}
	}
	if dp != nil && dp.LoadBalancer == "PASSTHROUGH" {
		plan.kind = clusterv3.Cluster_ORIGINAL_DST
	}
	external := svc.ServiceEntry && svc.Location != "MESH_INTERNAL" // MESH_EXTERNAL is Istio's default
	var ids []string
	disabled := 0
	for _, ep := range svc.Endpoints {
		if plan.kind == clusterv3.Cluster_EDS {
			if _, err := netip.ParseAddr(ep.Address); err != nil {
				continue // Envoy rejects a hostname in EDS; analyze reports it
			}
		}
		off := ix.m.EndpointMTLSMode(svc, ep, uint32(ep.PortFor(p))) == model.ModeDisable
		if off {
			disabled++
		} else if ep.Identity != "" {
			ids = append(ids, ep.Identity)
		}
		plan.eps, plan.plaintext = append(plan.eps, ep), append(plan.plaintext, off)
	}
	if external || (disabled > 0 && disabled == len(plan.eps)) {
		return plan
	}
	plan.mixed = disabled > 0
	slices.Sort(ids)
	plan.tls = b.upstreamTLS(slices.Compact(ids))
	return plan
}

// upstreamTLS is the client side of mesh mTLS: the calling workload's
// SVID (ClientSecret), and the peer verified against the trust bundle
// and, when the service's identities are known, one of them.
func (b *builder) upstreamTLS(ids []string) *corev3.TransportSocket {
	vc := &tlsv3.CertificateValidationContext{}
	for _, id := range ids {
		vc.MatchTypedSubjectAltNames = append(vc.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{
			SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id}},
		})
	}
	ctx := &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: ClientSecret, SdsConfig: ads()}},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         vc,
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: RootCASecret, SdsConfig: ads()},
			},
		},
	}}
	return &corev3.TransportSocket{Name: wkTLS, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: b.any(ctx)}}
}

// cluster builds the cluster of a service port, or of one subset of it
// (subset non-empty), and its assignment when it is an EDS cluster.
func (b *builder) cluster(plan *portPlan, subset string, labels map[string]string) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, error) {
	host, pn := plan.svc.Hostname, uint32(plan.port.Port)
	name := ClusterName(host, pn, subset)
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: plan.kind},
		ConnectTimeout:       durationpb.New(defaultConnectTimeout),
		LbPolicy:             clusterv3.Cluster_LEAST_REQUEST, // Istio's default since 1.14
		CircuitBreakers:      circuitBreakers(plan.dp),
		TransportSocket:      plan.tls,
	}
	if plan.tls != nil && plan.mixed {
		c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{{
			Name:            "tlsMode-" + tlsModePlaintext,
			Match:           &structpb.Struct{Fields: map[string]*structpb.Value{tlsModeKey: structpb.NewStringValue(tlsModePlaintext)}},
			TransportSocket: &corev3.TransportSocket{Name: wkRawBuffer, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: b.any(&rawbufferv3.RawBuffer{})}},
		}}
	}
	if dp := plan.dp; dp != nil {
		where := func(field string) string {
			return fmt.Sprintf("cluster %s: destination rule %s/%s %s", name, dp.Namespace, dp.Name, field)
		}
		switch dp.LoadBalancer {
		case "ROUND_ROBIN":
			c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
		case "RANDOM":
			c.LbPolicy = clusterv3.Cluster_RANDOM
		case "CONSISTENT_HASH":
			consistentHashLB(c, dp.ConsistentHash)
		}
		if dp.ConnectTimeout != "" {
			d, err := time.ParseDuration(dp.ConnectTimeout)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", where("connectionPool.tcp.connectTimeout"), err)
			}
			c.ConnectTimeout = durationpb.New(d)
		}
		od, err := outlier(dp.Outlier)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", where("outlierDetection"), err)
		}
		c.OutlierDetection = od
	}
	if opts := b.httpOptions(plan); opts != nil {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{wkHTTPProtocol: b.any(opts)}
	}
	switch plan.kind {
	case clusterv3.Cluster_ORIGINAL_DST:
		c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
		return c, nil, nil
	case clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
		c.LoadAssignment = dnsAssignment(plan, name, labels)
		c.DnsLookupFamily = clusterv3.Cluster_V4_PREFERRED // Istio's choice: most clusters are IPv4
		return c, nil, nil
	}
	c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads()}
	return c, assignment(plan, name, labels), nil
}

// consistentHashLB sets a cluster's consistent-hash balancing as Istio
// does: MAGLEV (with table_size when set) or RING_HASH (with
// minimum_ring_size when set). The key is the routes' hash_policy
// (hashPolicy).
func consistentHashLB(c *clusterv3.Cluster, ch *model.ConsistentHash) {
	if ch == nil {
		ch = &model.ConsistentHash{}
	}
	if ch.Maglev {
		c.LbPolicy = clusterv3.Cluster_MAGLEV
		if ch.MaglevTableSize > 0 {
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(ch.MaglevTableSize)}}
		}
		return
	}
	c.LbPolicy = clusterv3.Cluster_RING_HASH
	if ch.MinimumRingSize > 0 {
		c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(ch.MinimumRingSize)}}
	}
}

// circuitBreakers are Istio's: every threshold unlimited (Envoy's
// defaults of 1024 are a surprise at scale) but those the connection
// pool sets.
func circuitBreakers(dp *model.DestinationPolicy) *clusterv3.CircuitBreakers {
	limit := func(v int32) *wrapperspb.UInt32Value {
		if v > 0 {
			return wrapperspb.UInt32(uint32(v))
		}
		return wrapperspb.UInt32(math.MaxUint32)
	}
	if dp == nil {
		dp = &model.DestinationPolicy{}
	}
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections:     limit(dp.MaxConnections),
		MaxPendingRequests: limit(dp.HTTP1MaxPending),
		MaxRequests:        limit(dp.HTTP2MaxRequests),
		MaxRetries:         limit(dp.MaxRetries),
		TrackRemaining:     true,
	}}}
}

// outlier translates outlier detection as Istio does: consecutive 5xx
// enforced, success-rate ejection off.
func outlier(o *model.Outlier) (*clusterv3.OutlierDetection, error) {
	if o == nil {
		return nil, nil
	}
	od := &clusterv3.OutlierDetection{EnforcingSuccessRate: wrapperspb.UInt32(0)}
	if o.Consecutive5xx > 0 {
		od.Consecutive_5Xx = wrapperspb.UInt32(o.Consecutive5xx)
		od.EnforcingConsecutive_5Xx = wrapperspb.UInt32(100)
	}
	for _, f := range []struct {
		s   string
		dst **durationpb.Duration
		n   string
	}{{o.Interval, &od.Interval, "interval"}, {o.BaseEjectionTime, &od.BaseEjectionTime, "baseEjectionTime"}} {
		if f.s == "" {
			continue
		}
		d, err := time.ParseDuration(f.s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.n, err)
		}
		*f.dst = durationpb.New(d)
	}
	if o.MaxEjectionPercent > 0 {
		od.MaxEjectionPercent = wrapperspb.UInt32(uint32(min(o.MaxEjectionPercent, 100)))
	}
	return od, nil
}

// httpOptions are the upstream HTTP options of an HTTP-family port: the
// codec (HTTP/2 for HTTP2 and GRPC) and maxRequestsPerConnection; nil
// where Envoy's defaults do.
func (b *builder) httpOptions(plan *portPlan) *httpv3.HttpProtocolOptions {
	if !httpFamily(plan.port.Protocol) {
		return nil
	}
	perConn := int32(0)
	if plan.dp != nil {
		perConn = plan.dp.MaxRequestsPerConnection
	}
	h2 := plan.port.Protocol != model.ProtocolHTTP
	if !h2 && perConn <= 0 {
		return nil
	}
	opts := &httpv3.HttpProtocolOptions{}
	if h2 {
		opts.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}}
	} else {
		opts.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
		}}
	}
	if perConn > 0 {
		opts.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(uint32(perConn))}
	}
	return opts
}
