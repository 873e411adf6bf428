package envoy

import (
	"math"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const (
	reviews  = "reviews.production.svc.cluster.local"
	ratings  = "ratings.production.svc.cluster.local"
	frontend = "frontend.production.svc.cluster.local"
)

func secs(s float64) *durationpb.Duration {
	return durationpb.New(time.Duration(s * float64(time.Second)))
}

func u32(v uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(v) }

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func wantRetry(t *testing.T, on string, n uint32, perTry *durationpb.Duration, codes ...uint32) *routev3.RetryPolicy {
	return &routev3.RetryPolicy{
		RetryOn: on, NumRetries: u32(n), PerTryTimeout: perTry, RetriableStatusCodes: codes,
		RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts",
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(t, &previoushostsv3.PreviousHostsPredicate{})}}},
		HostSelectionRetryMaxAttempts: 5,
	}
}

func prefixAll() *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
}

// The canary VirtualService and the reviews DestinationRule as one
// RouteConfiguration.
func TestExamplesCanaryRoute(t *testing.T) {
	mesh := buildMesh(t, loadModel(t, nil))
	retries := func() *routev3.RetryPolicy { return wantRetry(t, "5xx,reset,connect-failure", 3, secs(2)) }
	want := &routev3.RouteConfiguration{
		Name:             reviews + ":9080",
		ValidateClusters: wrapperspb.Bool(false),
		VirtualHosts: []*routev3.VirtualHost{{
			Name: reviews + ":9080",
			Domains: []string{"10.96.0.11", "10.96.0.11:9080", "reviews", "reviews.production", "reviews.production.svc",
				"reviews.production.svc.cluster.local", "reviews.production.svc.cluster.local:9080",
				"reviews.production.svc:9080", "reviews.production:9080", "reviews:9080"},
			Routes: []*routev3.Route{{
				Name: "canary-testers",
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{{
					Name: "x-canary-user", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("true")},
				}}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "outbound|9080|v2|" + reviews},
					Timeout:          secs(10), RetryPolicy: retries(),
				}},
			}, {
				Name:  "canary-split",
				Match: prefixAll(),
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
						{Name: "outbound|9080|v1|" + reviews, Weight: u32(90)},
						{Name: "outbound|9080|v2|" + reviews, Weight: u32(10)},
					}}},
					Timeout: secs(10), RetryPolicy: retries(),
				}},
				TypedPerFilterConfig: map[string]*anypb.Any{"envoy.filters.http.fault": mustAny(t, &faultv3.HTTPFault{
					Delay: &faultcommonv3.FaultDelay{
						FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: secs(5)},
						Percentage:         &typev3.FractionalPercent{Numerator: 10000, Denominator: typev3.FractionalPercent_MILLION},
					},
				})},
			}},
		}},
	}
	if d := cmp.Diff(want, findRoute(t, mesh, reviews+":9080"), protocmp.Transform()); d != "" {
		t.Errorf("reviews routes (-want +got):\n%s", d)
	}

	// ratings: one route, 3 s timeout, Istio's default retries.
	got := findRoute(t, mesh, ratings+":9080").VirtualHosts[0].Routes
	wantRatings := []*routev3.Route{{Match: prefixAll(), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "outbound|9080||" + ratings},
		Timeout:          secs(3),
		RetryPolicy:      wantRetry(t, "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", 2, nil, 503),
	}}}}
	if d := cmp.Diff(wantRatings, got, protocmp.Transform()); d != "" {
		t.Errorf("ratings routes (-want +got):\n%s", d)
	}
	// One route configuration per HTTP port with a VIP; books-api is
	// HTTPS without an address: none.
	var names []string
	for _, r := range mesh.Routes {
		names = append(names, r.Name)
	}
	if d := cmp.Diff([]string{frontend + ":8080", ratings + ":9080", reviews + ":9080"}, names); d != "" {
		t.Errorf("route names (-want +got):\n%s", d)
	}
}

func wantUpstreamTLS(t *testing.T, sans ...string) *corev3.TransportSocket {
	vc := &tlsv3.CertificateValidationContext{}
	for _, s := range sans {
		vc.MatchTypedSubjectAltNames = append(vc.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: exact(s)})
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.UpstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default", SdsConfig: ads()}},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         vc,
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA", SdsConfig: ads()},
			}},
		},
	})}}
}

func edsConfig() *clusterv3.Cluster_EdsClusterConfig {
	return &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3,
	}}
}

func unlimited() *clusterv3.CircuitBreakers {
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections: u32(math.MaxUint32), MaxPendingRequests: u32(math.MaxUint32), MaxRequests: u32(math.MaxUint32),
		MaxRetries: u32(math.MaxUint32), TrackRemaining: true,
	}}}
}

// The reviews DestinationRule: a cluster per subset and for the whole
// service, all with its policy and mTLS to reviews' identity.
func TestExamplesReviewsClusters(t *testing.T) {
	mesh := buildMesh(t, loadModel(t, nil))
	for _, subset := range []string{"", "v1", "v2"} {
		name := "outbound|9080|" + subset + "|" + reviews
		want := &clusterv3.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     edsConfig(),
			ConnectTimeout:       secs(10),
			LbPolicy:             clusterv3.Cluster_LEAST_REQUEST,
			CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
				MaxConnections: u32(100), MaxPendingRequests: u32(100), MaxRequests: u32(1000),
				MaxRetries: u32(math.MaxUint32), TrackRemaining: true,
			}}},
			OutlierDetection: &clusterv3.OutlierDetection{
				Consecutive_5Xx: u32(5), EnforcingConsecutive_5Xx: u32(100), EnforcingSuccessRate: u32(0),
				Interval: secs(10), BaseEjectionTime: secs(30), MaxEjectionPercent: u32(50),
			},
			TransportSocket: wantUpstreamTLS(t, "spiffe://cluster.local/ns/production/sa/reviews"),
		}
		if d := cmp.Diff(want, findCluster(t, mesh, name), protocmp.Transform()); d != "" {
			t.Errorf("%s (-want +got):\n%s", name, d)
		}
	}
	// ratings: ROUND_ROBIN from its DestinationRule, no other policy.
	want := &clusterv3.Cluster{
		Name:                 "outbound|9080||" + ratings,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     edsConfig(),
		ConnectTimeout:       secs(10),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		CircuitBreakers:      unlimited(),
		TransportSocket:      wantUpstreamTLS(t, "spiffe://cluster.local/ns/production/sa/ratings"),
	}
	if d := cmp.Diff(want, findCluster(t, mesh, want.Name), protocmp.Transform()); d != "" {
		t.Errorf("ratings (-want +got):\n%s", d)
	}
	var names []string
	for _, c := range mesh.Clusters {
		names = append(names, c.Name)
	}
	wantNames := []string{"inbound-passthrough", "outbound-passthrough", "outbound|443||api.books.example.com",
		"outbound|8080||" + frontend, "outbound|9080|v1|" + reviews, "outbound|9080|v2|" + reviews,
		"outbound|9080||" + ratings, "outbound|9080||" + reviews}
	if d := cmp.Diff(wantNames, names); d != "" {
		t.Errorf("cluster names (-want +got):\n%s", d)
	}
}

// The external ServiceEntry: DNS, plaintext (the app speaks TLS itself).
func TestExamplesServiceEntryCluster(t *testing.T) {
	mesh := buildMesh(t, loadModel(t, nil))
	want := &clusterv3.Cluster{
		Name:                 "outbound|443||api.books.example.com",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
		DnsLookupFamily:      clusterv3.Cluster_V4_PREFERRED,
		ConnectTimeout:       secs(10),
		LbPolicy:             clusterv3.Cluster_LEAST_REQUEST,
		CircuitBreakers:      unlimited(),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: "outbound|443||api.books.example.com", Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{wantLB("api.books.example.com", 443, corev3.HealthStatus_HEALTHY)},
		}}},
	}
	if d := cmp.Diff(want, findCluster(t, mesh, want.Name), protocmp.Transform()); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	for _, e := range mesh.Endpoints {
		if e.ClusterName == want.Name {
			t.Error("a DNS cluster has an EDS assignment")
		}
	}
}

func wantLB(addr string, port uint32, h corev3.HealthStatus) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{HealthStatus: h, HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
		}}},
	}}}
}

func locality(node string, eps ...*endpointv3.LbEndpoint) *endpointv3.LocalityLbEndpoints {
	return &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{SubZone: node}, LbEndpoints: eps}
}

// EDS per subset: the subset's endpoints by node, with health.
func TestExamplesEndpoints(t *testing.T) {
	m := loadModel(t, nil)
	// reviews-v2 not ready: UNHEALTHY, still listed.
	for _, s := range m.Services {
		for _, e := range s.Endpoints {
			if e.Workload == "production/reviews-v2" {
				e.Ready = false
			}
		}
	}
	mesh := buildMesh(t, m)
	v1 := withWorkload(wantLB("10.200.1.11", 9080, corev3.HealthStatus_HEALTHY), "reviews-v1;production;reviews;v1;")
	v2 := withWorkload(wantLB("10.200.2.11", 9080, corev3.HealthStatus_UNHEALTHY), "reviews-v2;production;reviews;v2;")
	for _, tc := range []struct {
		subset string
		want   []*endpointv3.LocalityLbEndpoints
	}{
		{"", []*endpointv3.LocalityLbEndpoints{locality("node1", v1), locality("node2", v2)}},
		{"v1", []*endpointv3.LocalityLbEndpoints{locality("node1", v1)}},
		{"v2", []*endpointv3.LocalityLbEndpoints{locality("node2", v2)}},
	} {
		name := "outbound|9080|" + tc.subset + "|" + reviews
		want := &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: tc.want}
		if d := cmp.Diff(want, findCLA(t, mesh, name), protocmp.Transform()); d != "" {
			t.Errorf("%s (-want +got):\n%s", name, d)
		}
	}
	// One assignment per EDS cluster, same names, same order.
	var eds, cla []string
	for _, c := range mesh.Clusters {
		if c.GetType() == clusterv3.Cluster_EDS {
			eds = append(eds, c.Name)
		}
	}
	for _, e := range mesh.Endpoints {
		cla = append(cla, e.ClusterName)
	}
	if d := cmp.Diff(eds, cla); d != "" {
		t.Errorf("assignments vs EDS clusters (-eds +assignments):\n%s", d)
	}
}

// The outbound listener: a chain per VIP and port, HTTP over RDS.
func TestExamplesOutbound(t *testing.T) {
	mesh := buildMesh(t, loadModel(t, nil))
	l := mesh.Outbound
	if l.Name != "outbound" || l.GetAddress().GetSocketAddress().GetPortValue() != 15001 {
		t.Errorf("listener %s at %v", l.Name, l.GetAddress())
	}
	if len(l.ListenerFilters) != 1 || l.ListenerFilters[0].Name != "envoy.filters.listener.original_dst" {
		t.Errorf("listener filters %v; want original_dst", l.ListenerFilters)
	}
	fc := findChain(t, l, "10.96.0.11_9080")
	wantMatch := &listenerv3.FilterChainMatch{
		PrefixRanges:    []*corev3.CidrRange{{AddressPrefix: "10.96.0.11", PrefixLen: u32(32)}},
		DestinationPort: u32(9080),
	}
	if d := cmp.Diff(wantMatch, fc.FilterChainMatch, protocmp.Transform()); d != "" {
		t.Errorf("match (-want +got):\n%s", d)
	}
	h := unpack[*hcmv3.HttpConnectionManager](t, fc.Filters[0].GetTypedConfig())
	if got := h.GetRds().GetRouteConfigName(); got != reviews+":9080" {
		t.Errorf("rds %q; want %s:9080", got, reviews)
	}
	var filters []string
	for _, f := range h.HttpFilters {
		filters = append(filters, f.Name)
	}
	if d := cmp.Diff([]string{"envoy.filters.http.fault", "envoy.filters.http.router"}, filters); d != "" {
		t.Errorf("http filters (-want +got):\n%s", d)
	}
	if len(l.FilterChains) != 3 {
		t.Errorf("%d chains; want 3 (frontend, ratings, reviews; books-api has no VIP)", len(l.FilterChains))
	}
	tp := unpack[*tcpproxyv3.TcpProxy](t, l.DefaultFilterChain.Filters[0].GetTypedConfig())
	if tp.GetCluster() != "outbound-passthrough" {
		t.Errorf("default chain to %s; want outbound-passthrough", tp.GetCluster())
	}
}

// wantReviewsPolicy is the AuthorizationPolicy as Envoy RBAC.
func wantReviewsPolicy() *rbacv3.Policy {
	return &rbacv3.Policy{
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("GET")}}}},
			{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/api/reviews/"}}}}}},
		}}}}},
		Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
			{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: exact("spiffe://cluster.local/ns/production/sa/frontend")}}},
			{Identifier: &rbacv3.Principal_NotId{NotId: &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: &routev3.HeaderMatcher{
				Name: "x-request-id", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("")}, TreatMissingHeaderAsEmpty: true,
			}}}}},
		}}}}},
	}
}

// Node 1 of the demo: everything STRICT, so only the mTLS listener;
// reviews-v1 gets the AuthorizationPolicy, frontend none.
func TestExamplesInboundStrict(t *testing.T) {
	m := loadModel(t, nil)
	ls := nodeListeners(t, m, "node1")
	if len(ls) != 1 || ls[0].Name != "inbound" {
		t.Fatalf("listeners %v; want only inbound (all STRICT: no plaintext listener)", names(ls))
	}
	l := ls[0]
	if l.GetAddress().GetSocketAddress().GetPortValue() != 15008 {
		t.Errorf("inbound at %v; want 15008", l.GetAddress())
	}
	var chains []string
	for _, fc := range l.FilterChains {
		chains = append(chains, fc.Name)
	}
	// Each pod also gets a chain for the port the other serves: the
	// listener matches the port before the address (docs/xds.md).
	if d := cmp.Diff([]string{"production/frontend|8080", "production/frontend|9080", "production/frontend|*",
		"production/reviews-v1|9080", "production/reviews-v1|8080", "production/reviews-v1|*"}, chains); d != "" {
		t.Errorf("chains (-want +got):\n%s", d)
	}
	fc := findChain(t, l, "production/reviews-v1|9080")
	wantMatch := &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{{AddressPrefix: "10.200.1.11", PrefixLen: u32(32)}}, DestinationPort: u32(9080)}
	if d := cmp.Diff(wantMatch, fc.FilterChainMatch, protocmp.Transform()); d != "" {
		t.Errorf("match (-want +got):\n%s", d)
	}
	tls := unpack[*tlsv3.DownstreamTlsContext](t, fc.GetTransportSocket().GetTypedConfig())
	wantTLS := &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "spiffe://cluster.local/ns/production/sa/reviews", SdsConfig: ads()}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA", SdsConfig: ads()}},
		},
	}
	if d := cmp.Diff(wantTLS, tls, protocmp.Transform()); d != "" {
		t.Errorf("tls (-want +got):\n%s", d)
	}
	h := unpack[*hcmv3.HttpConnectionManager](t, fc.Filters[0].GetTypedConfig())
	if len(h.HttpFilters) != 2 || h.HttpFilters[0].Name != "envoy.filters.http.rbac" || h.HttpFilters[1].Name != "envoy.filters.http.router" {
		t.Fatalf("http filters %v; want rbac, router", h.HttpFilters)
	}
	wantRBAC := &httprbacv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
		"ns[production]-policy[reviews-allow-frontend]-rule[0]": wantReviewsPolicy(),
	}}}
	if d := cmp.Diff(wantRBAC, unpack[*httprbacv3.RBAC](t, h.HttpFilters[0].GetTypedConfig()), protocmp.Transform()); d != "" {
		t.Errorf("rbac (-want +got):\n%s", d)
	}
	if got := h.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster(); got != "inbound-passthrough" {
		t.Errorf("inbound route to %q; want inbound-passthrough", got)
	}
	// Other ports of reviews-v1 are TCP: the HTTP-only rule allows
	// nothing there (ALLOW with methods/paths/headers on TCP), so the
	// network RBAC denies every connection.
	other := findChain(t, l, "production/reviews-v1|*")
	nr := unpack[*netrbacv3.RBAC](t, other.Filters[0].GetTypedConfig())
	wantNet := &rbacv3.Policy{
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_NotRule{NotRule: &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}}}},
		Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_NotId{NotId: &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}}}},
	}
	if d := cmp.Diff(wantNet, nr.GetRules().GetPolicies()["ns[production]-policy[reviews-allow-frontend]-rule[0]"], protocmp.Transform()); d != "" {
		t.Errorf("network rbac (-want +got):\n%s", d)
	}
	// frontend has no policy: no RBAC filter.
	fh := unpack[*hcmv3.HttpConnectionManager](t, findChain(t, l, "production/frontend|8080").Filters[0].GetTypedConfig())
	if len(fh.HttpFilters) != 1 {
		t.Errorf("frontend http filters %v; want router only", fh.HttpFilters)
	}
	// A node without workloads has no inbound listener.
	if ls := nodeListeners(t, m, "node9"); len(ls) != 0 {
		t.Errorf("node9: %v; want none", names(ls))
	}
}

const stagingYAML = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: staging}
spec:
  clusterIP: 10.96.1.10
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: staging, labels: {app: web}}
spec:
  serviceAccountName: web
  nodeName: node1
  containers: [{name: web, image: web}]
status: {podIP: 10.200.1.20}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: staging, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.200.1.20]
  nodeName: node1
  targetRef: {kind: Pod, namespace: staging, name: web}
`

// staging is PERMISSIVE: its workload has an mTLS and a plaintext chain
// for the same port, while node1's production workloads (STRICT) have
// only mTLS ones.
func TestExamplesInboundPermissive(t *testing.T) {
	m := loadModel(t, map[string]string{"30-staging.yaml": stagingYAML})
	ls := nodeListeners(t, m, "node1")
	mtls, plain := findListener(ls, "inbound"), findListener(ls, "inbound-plaintext")
	if mtls == nil || plain == nil {
		t.Fatalf("listeners %v; want inbound and inbound-plaintext", names(ls))
	}
	if plain.GetAddress().GetSocketAddress().GetPortValue() != 15006 {
		t.Errorf("plaintext at %v; want 15006", plain.GetAddress())
	}
	findChain(t, mtls, "staging/web|8080")
	pc := findChain(t, plain, "staging/web|8080")
	if pc.TransportSocket != nil {
		t.Error("plaintext chain has a transport socket")
	}
	var chains []string
	for _, fc := range plain.FilterChains {
		chains = append(chains, fc.Name)
	}
	if d := cmp.Diff([]string{"staging/web|8080", "staging/web|*"}, chains); d != "" {
		t.Errorf("plaintext chains (-want +got): STRICT ports must have none\n%s", d)
	}
	// The client side: mTLS to the PERMISSIVE workload too.
	mesh := buildMesh(t, m)
	if findCluster(t, mesh, "outbound|80||web.staging.svc.cluster.local").TransportSocket == nil {
		t.Error("cluster of a PERMISSIVE service is plaintext; want mTLS")
	}
	if got := findCLA(t, mesh, "outbound|80||web.staging.svc.cluster.local").Endpoints[0].LbEndpoints[0]; got.GetEndpoint().GetAddress().GetSocketAddress().GetPortValue() != 8080 {
		t.Errorf("endpoint %v; want the target port 8080", got)
	}
}

func names(ls []*listenerv3.Listener) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Name)
	}
	return out
}
