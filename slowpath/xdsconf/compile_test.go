package xdsconf

import (
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func hcmFilter(t testing.TB, h *hcmv3.HttpConnectionManager) *listenerv3.Filter {
	h.HttpFilters = append(h.HttpFilters, &hcmv3.HttpFilter{Name: "envoy.filters.http.router",
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}})
	return filter(t, "envoy.filters.network.http_connection_manager", h)
}

func routeTo(match *routev3.RouteMatch, cluster string) *routev3.Route {
	return &routev3.Route{Match: match, Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}}}
}

func prefixMatch(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}

// Listener shapes beyond the controller's current output: weighted
// tcp_proxy (VirtualService tcp routes), SNI chains (tls routes),
// source prefixes, idle timeouts, inline routes.
func TestCompileListener(t *testing.T) {
	chains := []*listenerv3.FilterChain{
		{Name: "weighted", FilterChainMatch: &listenerv3.FilterChainMatch{
			PrefixRanges: []*corev3.CidrRange{cidrRange("10.96.0.20", 32)}, DestinationPort: wrapperspb.UInt32(3306)},
			Filters: []*listenerv3.Filter{filter(t, "tcp", &tcpproxyv3.TcpProxy{StatPrefix: "db",
				ClusterSpecifier: &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{
					Clusters: []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{{Name: "a", Weight: 80}, {Name: "b", Weight: 20}}}},
				IdleTimeout: durationpb.New(0)})}},
		{Name: "sni", FilterChainMatch: &listenerv3.FilterChainMatch{
			PrefixRanges: []*corev3.CidrRange{cidrRange("0.0.0.0", 0)}, DestinationPort: wrapperspb.UInt32(443),
			ServerNames: []string{"*.Example.com", "example.com."}, TransportProtocol: "tls"},
			Filters: []*listenerv3.Filter{filter(t, "tcp", &tcpproxyv3.TcpProxy{StatPrefix: "sni",
				ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "outbound|443||example.com"}, IdleTimeout: durationpb.New(30 * time.Second)})}},
		{Name: "src", FilterChainMatch: &listenerv3.FilterChainMatch{
			SourcePrefixRanges: []*corev3.CidrRange{cidrRange("192.168.0.0", 16), cidrRange("::ffff:192.168.0.0", 112)}},
			Filters: []*listenerv3.Filter{tcpProxyFilter(t, "x")}},
		{Name: "http-inline", FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(8080)},
			Filters: []*listenerv3.Filter{hcmFilter(t, &hcmv3.HttpConnectionManager{StatPrefix: "in",
				RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
					VirtualHosts: []*routev3.VirtualHost{
						{Name: "other", Domains: []string{"other"}, Routes: []*routev3.Route{routeTo(prefixMatch("/"), "wrong")}},
						{Name: "all", Domains: []string{"*"}, Routes: []*routev3.Route{
							routeTo(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
								Headers: []*routev3.HeaderMatcher{{Name: "x"}}}, "by-header"),
							routeTo(prefixMatch("/api"), "api"),
							routeTo(prefixMatch("/"), "catch-all"),
						}},
					}}}})}},
		{Name: "http-no-catch-all", FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(8081)},
			Filters: []*listenerv3.Filter{hcmFilter(t, &hcmv3.HttpConnectionManager{StatPrefix: "in",
				RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
					VirtualHosts: []*routev3.VirtualHost{{Domains: []string{"*"}, Routes: []*routev3.Route{routeTo(prefixMatch("/api"), "api")}}}}}})}},
	}
	l := &listenerv3.Listener{Name: OutboundListener, FilterChains: chains,
		DefaultFilterChain: &listenerv3.FilterChain{Name: "passthrough", Filters: []*listenerv3.Filter{tcpProxyFilter(t, "outbound-passthrough")}}}
	got, err := compileListener(l, "listener")
	if err != nil {
		t.Fatal(err)
	}
	want := &Listener{Name: OutboundListener, Chains: []*FilterChain{
		{Name: "weighted", Prefixes: pfx("10.96.0.20/32"), Port: 3306, StatPrefix: "db",
			TCP: &TCPProxy{Clusters: []WeightedCluster{{"a", 80}, {"b", 20}}, IdleTimeout: NoIdleTimeout}},
		{Name: "sni", Prefixes: pfx("0.0.0.0/0"), Port: 443, ServerNames: []string{"*.example.com", "example.com"}, StatPrefix: "sni",
			TCP: &TCPProxy{Clusters: []WeightedCluster{{"outbound|443||example.com", 1}}, IdleTimeout: 30 * time.Second}},
		{Name: "src", SourcePrefixes: pfx("192.168.0.0/16"), StatPrefix: "x",
			TCP: &TCPProxy{Clusters: []WeightedCluster{{"x", 1}}, IdleTimeout: time.Hour}},
		{Name: "http-inline", Port: 8080, StatPrefix: "in", HTTP: &HTTPChain{DefaultCluster: "catch-all", Clusters: []WeightedCluster{{"catch-all", 1}}}},
		{Name: "http-no-catch-all", Port: 8081, StatPrefix: "in", HTTP: &HTTPChain{}},
	}, Default: &FilterChain{Name: "passthrough", StatPrefix: "outbound-passthrough",
		TCP: &TCPProxy{Clusters: []WeightedCluster{{"outbound-passthrough", 1}}, IdleTimeout: time.Hour}}}
	opts := cmp.Options{cmpopts.IgnoreUnexported(Listener{}, TCPProxy{}, HTTPChain{}), cmpopts.EquateComparable(netip.Prefix{})}
	if diff := cmp.Diff(want, got, opts); diff != "" {
		t.Errorf("compiled (-want +got):\n%s", diff)
	}
	for _, tc := range []struct{ dst, sni, src, want string }{
		{dst: "10.96.0.20:3306", want: "weighted"},
		{dst: "1.2.3.4:443", sni: "www.example.com", want: "sni"},
		{dst: "1.2.3.4:443", sni: "example.com", want: "sni"},
		{dst: "1.2.3.4:443", sni: "example.org", want: "passthrough"},
		{dst: "1.2.3.4:22", src: "192.168.3.4:5", want: "src"},
		{dst: "1.2.3.4:22", src: "[::ffff:192.168.3.4]:5", want: "src"},
		{dst: "1.2.3.4:22", src: "10.0.0.1:5", want: "passthrough"},
	} {
		src := tc.src
		if src == "" {
			src = "10.0.0.1:1"
		}
		if c := got.Match(MatchInput{Destination: ap(tc.dst), ServerName: tc.sni, Source: ap(src)}); c == nil || c.Name != tc.want {
			t.Errorf("Match(%s %q %s) = %v, want %s", tc.dst, tc.sni, src, c, tc.want)
		}
	}
}

func TestCompileListenerRefuses(t *testing.T) {
	tcp := []*listenerv3.Filter{tcpProxyFilter(t, "x")}
	tlsSocket := func(secret string) *corev3.TransportSocket {
		return &corev3.TransportSocket{Name: "tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.DownstreamTlsContext{
			RequireClientCertificate: wrapperspb.Bool(true),
			CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: secret}},
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
					ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA"}}}})}}
	}
	for _, tc := range []struct {
		name  string
		chain *listenerv3.FilterChain
		want  string
	}{
		{"raw_buffer transport protocol", &listenerv3.FilterChain{FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"}, Filters: tcp},
			`filter_chain_match.transport_protocol: "raw_buffer" is not supported`},
		{"tls without server names", &listenerv3.FilterChain{FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "tls"}, Filters: tcp},
			`transport_protocol: "tls" is honoured only with server_names`},
		{"bad wildcard", &listenerv3.FilterChain{FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: []string{"a*.example.com"}}, Filters: tcp},
			`server_names[0]: "a*.example.com" is not a server name`},
		{"application protocols", &listenerv3.FilterChain{FilterChainMatch: &listenerv3.FilterChainMatch{ApplicationProtocols: []string{"h2"}}, Filters: tcp},
			`filter_chain_match.application_protocols: not supported`},
		{"prefix too long", &listenerv3.FilterChain{FilterChainMatch: &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidrRange("10.0.0.1", 33)}}, Filters: tcp},
			`prefix_ranges[0].prefix_len: 33 is longer than the 32 bits`},
		{"workload secret not a SPIFFE ID", &listenerv3.FilterChain{TransportSocket: tlsSocket("default"), Filters: tcp},
			`tls_certificate_sds_secret_configs[0].name: "default" is not a workload's SPIFFE ID`},
		{"zero weight", &listenerv3.FilterChain{Filters: []*listenerv3.Filter{filter(t, "tcp", &tcpproxyv3.TcpProxy{StatPrefix: "x",
			ClusterSpecifier: &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{
				Clusters: []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{{Name: "a", Weight: 0}}}}})}},
			`weighted_clusters.clusters[0].weight: must be at least 1`},
		{"filter after the terminal one", &listenerv3.FilterChain{Filters: append(tcp, tcpProxyFilter(t, "y"))},
			`filters[1] envoy.filters.network.tcp_proxy.typed_config: follows the terminal filter`},
		{"rds not over ADS", &listenerv3.FilterChain{Filters: []*listenerv3.Filter{hcmFilter(t, &hcmv3.HttpConnectionManager{StatPrefix: "x",
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "r", ConfigSource: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Path{Path: "/etc/routes"}}}}})}},
			`rds.config_source: the agent reads routes only over ADS`},
		{"HCM without router", &listenerv3.FilterChain{Filters: []*listenerv3.Filter{filter(t, "hcm", &hcmv3.HttpConnectionManager{StatPrefix: "x",
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "r"}}})}},
			`http_filters: must end with envoy.filters.http.router`},
		{"per-route RBAC", &listenerv3.FilterChain{Filters: []*listenerv3.Filter{hcmFilter(t, &hcmv3.HttpConnectionManager{StatPrefix: "x",
			RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{{
				Routes: []*routev3.Route{{Match: prefixMatch("/"), TypedPerFilterConfig: map[string]*anypb.Any{"envoy.filters.http.rbac": mustAny(t, &routerv3.Router{})}}}}}}}})}},
			`routes[0].typed_per_filter_config["envoy.filters.http.rbac"]: per-route RBAC is not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.chain.Name = "c"
			_, err := compileListener(&listenerv3.Listener{Name: InboundListener, FilterChains: []*listenerv3.FilterChain{tc.chain}}, `listener "inbound"`)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), `listener "inbound".filter_chains[0] "c"`) {
				t.Errorf("error %v\nwant %q", err, tc.want)
			}
		})
	}
	// Two chains with the same match.
	_, err := compileListener(&listenerv3.Listener{Name: InboundListener, FilterChains: []*listenerv3.FilterChain{
		{Name: "a", FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(80)}, Filters: tcp},
		{Name: "b", FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(80)}, Filters: tcp},
	}}, "l")
	if err == nil || !strings.Contains(err.Error(), `l.filter_chains: filter chains "a" and "b" have the same match`) {
		t.Errorf("duplicate chains: %v", err)
	}
}

// Cluster shapes: STATIC and DNS clusters, EDS service_name, circuit
// breaker defaults, transport socket matches and plaintext endpoints,
// health statuses.
func TestCompileClusters(t *testing.T) {
	lbEP := func(addr string, port uint32, health corev3.HealthStatus, weight uint32, plaintext bool) *endpointv3.LbEndpoint {
		e := &endpointv3.LbEndpoint{HealthStatus: health, HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: addr,
				PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}}}}
		if weight != 0 {
			e.LoadBalancingWeight = wrapperspb.UInt32(weight)
		}
		if plaintext {
			e.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.transport_socket_match": {
				Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("disabled")}}}}
		}
		return e
	}
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	upstream := &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default", SdsConfig: ads}},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA", SdsConfig: ads}}}}
	clusters := map[string]proto.Message{
		"static": &clusterv3.Cluster{Name: "static", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			LbPolicy: clusterv3.Cluster_RING_HASH,
			LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: "static", Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{lbEP("10.0.0.1", 80, corev3.HealthStatus_UNKNOWN, 0, false), lbEP("10.0.0.2", 80, corev3.HealthStatus_DEGRADED, 5, false)}}}}},
		"dns": &clusterv3.Cluster{Name: "dns", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS},
			ConnectTimeout: durationpb.New(time.Second),
			CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{
				{Priority: corev3.RoutingPriority_HIGH, MaxConnections: wrapperspb.UInt32(1)},
				{MaxConnections: wrapperspb.UInt32(math.MaxUint32)}}},
			LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: "dns", Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{lbEP("API.example.com", 443, 0, 0, false)}}}}},
		"eds": &clusterv3.Cluster{Name: "eds", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads, ServiceName: "eds-assignment"},
			LbPolicy:         clusterv3.Cluster_MAGLEV,
			TransportSocket:  &corev3.TransportSocket{Name: "tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, upstream)}},
			TransportSocketMatches: []*clusterv3.Cluster_TransportSocketMatch{{Name: "plain",
				Match:           &structpb.Struct{Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("disabled")}},
				TransportSocket: &corev3.TransportSocket{Name: "raw", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &rawbufferv3.RawBuffer{})}}}}},
	}
	assignments := map[string]proto.Message{
		"eds-assignment": &endpointv3.ClusterLoadAssignment{ClusterName: "eds-assignment", Endpoints: []*endpointv3.LocalityLbEndpoints{
			{Locality: &corev3.Locality{SubZone: "node1"}, LbEndpoints: []*endpointv3.LbEndpoint{
				lbEP("10.0.1.1", 8080, corev3.HealthStatus_HEALTHY, 0, false), lbEP("10.0.1.2", 8080, corev3.HealthStatus_HEALTHY, 0, true)}},
			{Locality: &corev3.Locality{SubZone: "node2"}, LbEndpoints: []*endpointv3.LbEndpoint{
				lbEP("::ffff:10.0.2.1", 8080, corev3.HealthStatus_UNHEALTHY, 0, false), lbEP("fd00::1", 8080, corev3.HealthStatus_DRAINING, 0, false)}}}},
	}
	s := NewStore()
	if err := s.Update(resource.ClusterType, clusters, "1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(resource.EndpointType, assignments, "1"); err != nil {
		t.Fatal(err)
	}
	snap := s.Snapshot()
	ep := func(addr string, healthy, plaintext bool, node string, weight uint32) *Endpoint {
		return &Endpoint{Addr: ap(addr), Healthy: healthy, Plaintext: plaintext, Node: node, Weight: weight}
	}
	e1, e2 := ep("10.0.0.1:80", true, false, "", 1), ep("10.0.0.2:80", false, false, "", 5)
	f1, f2 := ep("10.0.1.1:8080", true, false, "node1", 1), ep("10.0.1.2:8080", true, true, "node1", 1)
	f3, f4 := ep("10.0.2.1:8080", false, false, "node2", 1), ep("[fd00::1]:8080", false, false, "node2", 1)
	want := map[string]*Cluster{
		"static": {Name: "static", Type: ClusterStatic, LB: RingHash, ConnectTimeout: DefaultConnectTimeout, MaxConnections: DefaultMaxConnections,
			Endpoints: &Endpoints{Hosts: []*Endpoint{e1, e2}, Healthy: []*Endpoint{e1}}},
		"dns": {Name: "dns", Type: ClusterDNS, LB: RoundRobin, ConnectTimeout: time.Second, DNSHosts: []string{"api.example.com:443"}},
		"eds": {Name: "eds", Type: ClusterEDS, LB: Maglev, ConnectTimeout: DefaultConnectTimeout, MaxConnections: DefaultMaxConnections,
			TLS:       &UpstreamTLS{PlaintextMatch: true},
			Endpoints: &Endpoints{Hosts: []*Endpoint{f1, f2, f3, f4}, Healthy: []*Endpoint{f1, f2}}},
	}
	opts := cmp.Options{cmpopts.IgnoreUnexported(Cluster{}, Endpoints{}), cmpopts.IgnoreFields(Endpoints{}, "RR"),
		cmp.Comparer(func(a, b *Endpoint) bool {
			return a.Addr == b.Addr && a.Healthy == b.Healthy && a.Plaintext == b.Plaintext && a.Node == b.Node && a.Weight == b.Weight
		})}
	if diff := cmp.Diff(want, snap.Clusters, opts); diff != "" {
		t.Errorf("clusters (-want +got):\n%s", diff)
	}
	// Only the mTLS endpoint is tunnelled when called by IP.
	if len(snap.Endpoints) != 3 || snap.Endpoints[netip.MustParseAddr("10.0.1.1")] == nil || snap.Endpoints[netip.MustParseAddr("10.0.1.2")] != nil {
		t.Errorf("Endpoints %v", snap.Endpoints)
	}
	if e, err := snap.Clusters["static"].Pick(ap("1.1.1.1:1"), nil); err != nil || e.Addr != ap("10.0.0.1:80") {
		t.Errorf("static Pick: %v, %v", e, err)
	}
}
