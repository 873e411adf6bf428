package xdsconf

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func filter(t testing.TB, name string, m proto.Message) *listenerv3.Filter {
	return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, m)}}
}

func tcpProxyFilter(t testing.TB, cluster string) *listenerv3.Filter {
	return filter(t, "envoy.filters.network.tcp_proxy", &tcpproxyv3.TcpProxy{StatPrefix: cluster,
		ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster}})
}

func rbacFilter(t testing.TB, action rbacv3.RBAC_Action, policies map[string]*rbacv3.Policy) *listenerv3.Filter {
	return filter(t, "envoy.filters.network.rbac", &netrbacv3.RBAC{StatPrefix: "tcp.", Rules: &rbacv3.RBAC{Action: action, Policies: policies}})
}

func exactSM(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func regexSM(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: s}}}
}

func principalName(sm *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: sm}}}
}

func anyPermission() *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
}

// Resources the slow path cannot honour are refused with an error that
// names the resource and the field, and the snapshot in force stays.
func TestStoreRefuses(t *testing.T) {
	good := meshResources(t, loadModel(t, nil), "node1")
	const reviewsCluster = "outbound|9080||" + reviews
	// editListener changes the inbound listener's first chain.
	editChain := func(f func(*listenerv3.FilterChain)) func(map[string]map[string]proto.Message) string {
		return func(res map[string]map[string]proto.Message) string {
			l := proto.Clone(res[resource.ListenerType][InboundListener]).(*listenerv3.Listener)
			f(l.FilterChains[0])
			res[resource.ListenerType][InboundListener] = l
			return resource.ListenerType
		}
	}
	editCluster := func(f func(*clusterv3.Cluster)) func(map[string]map[string]proto.Message) string {
		return func(res map[string]map[string]proto.Message) string {
			c := proto.Clone(res[resource.ClusterType][reviewsCluster]).(*clusterv3.Cluster)
			f(c)
			res[resource.ClusterType][reviewsCluster] = c
			return resource.ClusterType
		}
	}
	sans := func(c *clusterv3.Cluster, m ...*tlsv3.SubjectAltNameMatcher) {
		ctx := &tlsv3.UpstreamTlsContext{}
		if err := c.TransportSocket.GetTypedConfig().UnmarshalTo(ctx); err != nil {
			t.Fatal(err)
		}
		ctx.CommonTlsContext.GetCombinedValidationContext().DefaultValidationContext.MatchTypedSubjectAltNames = m
		c.TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, ctx)}
	}
	// editWorkload sets the workload metadata of reviews' first endpoint.
	editWorkload := func(v *structpb.Value) func(map[string]map[string]proto.Message) string {
		return func(res map[string]map[string]proto.Message) string {
			c := proto.Clone(res[resource.EndpointType][reviewsCluster]).(*endpointv3.ClusterLoadAssignment)
			c.Endpoints[0].LbEndpoints[0].Metadata.FilterMetadata["istio"].Fields["workload"] = v
			res[resource.EndpointType][reviewsCluster] = c
			return resource.EndpointType
		}
	}
	for _, tc := range []struct {
		name string
		edit func(map[string]map[string]proto.Message) string
		want []string // in the error
	}{
		{"unknown network filter", editChain(func(fc *listenerv3.FilterChain) {
			fc.Filters = append([]*listenerv3.Filter{filter(t, "envoy.filters.network.redis_proxy", wrapperspb.String("x"))}, fc.Filters...)
		}), []string{`listener "inbound"`, `filter_chains[0] "production/frontend|8080"`, "filters[0] envoy.filters.network.redis_proxy", "google.protobuf.StringValue is not supported"}},
		{"unknown transport socket", editChain(func(fc *listenerv3.FilterChain) {
			fc.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.alts", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, wrapperspb.String("alts"))}}
		}), []string{`listener "inbound"`, "transport_socket", "is not supported"}},
		{"regex that does not compile", editChain(func(fc *listenerv3.FilterChain) {
			fc.Filters = []*listenerv3.Filter{rbacFilter(t, rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{"p": {
				Permissions: []*rbacv3.Permission{anyPermission()},
				Principals:  []*rbacv3.Principal{principalName(regexSM(`spiffe://(unclosed`))},
			}}), tcpProxyFilter(t, "inbound-passthrough")}
		}), []string{`listener "inbound"`, `policies["p"].principals[0].authenticated.principal_name.safe_regex.regex`, "does not compile as RE2"}},
		{"unknown principal", editChain(func(fc *listenerv3.FilterChain) {
			fc.Filters = []*listenerv3.Filter{rbacFilter(t, rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{"p": {
				Permissions: []*rbacv3.Permission{anyPermission()},
				Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_FilterState{}}},
			}}), tcpProxyFilter(t, "inbound-passthrough")}
		}), []string{`policies["p"].principals[0]`, "principal filter_state is not supported"}},
		{"two ALLOW filters", editChain(func(fc *listenerv3.FilterChain) {
			p := map[string]*rbacv3.Policy{"p": {Permissions: []*rbacv3.Permission{anyPermission()}, Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}}}
			fc.Filters = []*listenerv3.Filter{rbacFilter(t, rbacv3.RBAC_ALLOW, p), rbacFilter(t, rbacv3.RBAC_ALLOW, p), tcpProxyFilter(t, "inbound-passthrough")}
		}), []string{"filters[1]", "a second ALLOW RBAC filter"}},
		{"no terminal filter", editChain(func(fc *listenerv3.FilterChain) {
			fc.Filters = nil
		}), []string{`filter_chains[0] "production/frontend|8080".filters`, "nowhere to send"}},
		{"tcp_proxy hash policy", editChain(func(fc *listenerv3.FilterChain) {
			fc.Filters = []*listenerv3.Filter{filter(t, "envoy.filters.network.tcp_proxy", &tcpproxyv3.TcpProxy{StatPrefix: "x",
				ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "x"}, HashPolicy: []*typev3.HashPolicy{{}}})}
		}), []string{"typed_config.hash_policy", "not supported"}},
		{"unknown listener", func(res map[string]map[string]proto.Message) string {
			res[resource.ListenerType]["gateway"] = &listenerv3.Listener{Name: "gateway"}
			return resource.ListenerType
		}, []string{`listener "gateway".name`, "serves only the listeners"}},
		{"resource under another name", func(res map[string]map[string]proto.Message) string {
			res[resource.ClusterType]["other"] = res[resource.ClusterType][reviewsCluster]
			return resource.ClusterType
		}, []string{`cluster "other"`, "calls itself"}},
		{"DNS SAN", editCluster(func(c *clusterv3.Cluster) {
			sans(c, &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: exactSM("reviews")})
		}), []string{`cluster "` + reviewsCluster + `"`, "match_typed_subject_alt_names[0].san_type", "URI SANs"}},
		{"URI SAN that is not SPIFFE", editCluster(func(c *clusterv3.Cluster) {
			sans(c, &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: exactSM("https://reviews.example.com/")})
		}), []string{`cluster "` + reviewsCluster + `"`, "match_typed_subject_alt_names[0].matcher.exact", "is not a SPIFFE ID"}},
		{"SAN prefix", editCluster(func(c *clusterv3.Cluster) {
			sans(c, &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://cluster.local/"}}})
		}), []string{"match_typed_subject_alt_names[0].matcher", "only exact SPIFFE IDs"}},
		{"health checks", editCluster(func(c *clusterv3.Cluster) {
			c.HealthChecks = []*corev3.HealthCheck{{}}
		}), []string{`cluster "` + reviewsCluster + `".health_checks`, "not supported"}},
		{"cluster provided on EDS", editCluster(func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
		}), []string{".lb_policy", "ORIGINAL_DST"}},
		{"zero endpoint weight", func(res map[string]map[string]proto.Message) string {
			c := proto.Clone(res[resource.EndpointType][reviewsCluster]).(*endpointv3.ClusterLoadAssignment)
			c.Endpoints[0].LbEndpoints[0].LoadBalancingWeight = wrapperspb.UInt32(0)
			res[resource.EndpointType][reviewsCluster] = c
			return resource.EndpointType
		}, []string{`endpoints "` + reviewsCluster + `".endpoints[0].lb_endpoints[0].load_balancing_weight`, "zero weight"}},
		{"hostname in EDS", func(res map[string]map[string]proto.Message) string {
			c := proto.Clone(res[resource.EndpointType][reviewsCluster]).(*endpointv3.ClusterLoadAssignment)
			c.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().Address = "reviews-v1"
			res[resource.EndpointType][reviewsCluster] = c
			return resource.EndpointType
		}, []string{"endpoint.address.socket_address.address", `"reviews-v1" is not an IP address`}},
		{"endpoint workload not a string", editWorkload(structpb.NewNumberValue(7)),
			[]string{`endpoints "` + reviewsCluster + `".endpoints[0].lb_endpoints[0].metadata.filter_metadata["istio"].workload`, "want a string"}},
		{"endpoint workload with a space", editWorkload(structpb.NewStringValue("reviews v1;production;reviews;v1;")),
			[]string{`lb_endpoints[0].metadata.filter_metadata["istio"].workload`, `name "reviews v1"`, "want letters, digits"}},
		{"endpoint workload too long", editWorkload(structpb.NewStringValue(strings.Repeat("x", 4096) + ";production;a;b;")),
			[]string{`filter_metadata["istio"].workload`, "4112 bytes: at most 1777"}},
		{"endpoint workload without a namespace", editWorkload(structpb.NewStringValue("reviews-v1;;reviews;v1;")),
			[]string{`filter_metadata["istio"].workload`, "empty namespace"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore()
			feed(t, s, good, "v1")
			before := s.Snapshot()
			res := map[string]map[string]proto.Message{}
			for typ, m := range good {
				res[typ] = clonedMap(m)
			}
			typ := tc.edit(res)
			err := s.Update(typ, res[typ], "bad")
			if err == nil {
				t.Fatal("accepted")
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
			if s.Snapshot() != before {
				t.Error("a refused update replaced the snapshot")
			}
			// The good config is still accepted, and compiles as before.
			if err := s.Update(typ, good[typ], "v2"); err != nil {
				t.Fatalf("good config after a refusal: %v", err)
			}
			if s.Snapshot().Versions[typ] != "v2" {
				t.Error("good update not applied")
			}
		})
	}
}
