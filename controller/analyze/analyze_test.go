package analyze

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"istio.io/api/networking/v1alpha3"
	securityv1beta1 "istio.io/api/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/fibmesh/fibmesh/controller/config"
)

type analyzerCase struct {
	name string
	snap *config.Snapshot
	want []Finding
}

func runCases(t *testing.T, a func(*index) []Finding, cases []analyzerCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := sortFindings(a(newIndex(tc.snap)))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
		})
	}
}

var (
	reviews  = svc("default", "reviews", labelsOf("app", "reviews"), port("http", 9080))
	reviewsR = dr("default", "reviews", &v1alpha3.DestinationRule{
		Host: "reviews",
		Subsets: []*v1alpha3.Subset{
			{Name: "v1", Labels: labelsOf("version", "v1")},
			{Name: "v2", Labels: labelsOf("version", "v2")},
		},
	})
)

func TestRouteDestinations(t *testing.T) {
	unknownHost := vs("default", "r", &v1alpha3.VirtualService{Hosts: []string{"reviews"}, Http: []*v1alpha3.HTTPRoute{{
		Route: []*v1alpha3.HTTPRouteDestination{dest("ratings", "", 0)},
	}}})
	unknownSubset := vs("default", "r", &v1alpha3.VirtualService{Hosts: []string{"reviews"}, Http: []*v1alpha3.HTTPRoute{{
		Route: []*v1alpha3.HTTPRouteDestination{dest("reviews", "v1", 50), dest("reviews.default.svc.cluster.local", "v3", 50)},
	}}})
	external := vs("default", "ext", &v1alpha3.VirtualService{Hosts: []string{"api.example.com"}, Http: []*v1alpha3.HTTPRoute{{
		Route: []*v1alpha3.HTTPRouteDestination{dest("api.example.com", "", 0)},
	}}})
	runCases(t, routeDestinations, []analyzerCase{
		{name: "known host and subsets", snap: snap(reviews, reviewsR, vs("default", "r", &v1alpha3.VirtualService{
			Hosts: []string{"reviews"},
			Http:  []*v1alpha3.HTTPRoute{{Route: []*v1alpha3.HTTPRouteDestination{dest("reviews", "v1", 90), dest("reviews", "v2", 10)}}},
		}))},
		{name: "unknown host", snap: snap(reviews, unknownHost), want: []Finding{
			want(ReferencedResourceNotFound, unknownHost, `Referenced host not found: "ratings" (spec.http[0].route[0].destination.host); no Service or ServiceEntry has host ratings.default.svc.cluster.local: fix the host or add the Service`),
		}},
		{name: "unknown subset", snap: snap(reviews, reviewsR, unknownSubset), want: []Finding{
			want(ReferencedResourceNotFound, unknownSubset, `Referenced host+subset in destinationrule not found: "reviews.default.svc.cluster.local+v3" (spec.http[0].route[1].destination.subset); no DestinationRule for host reviews.default.svc.cluster.local defines subset "v3": add it to the DestinationRule's subsets or fix the name`),
		}},
		{name: "ServiceEntry wildcard host", snap: snap(external, se("default", "ext", &v1alpha3.ServiceEntry{Hosts: []string{"*.example.com"}}))},
	})
}

func TestRouteWeights(t *testing.T) {
	bad := vs("default", "r", &v1alpha3.VirtualService{Hosts: []string{"reviews"}, Http: []*v1alpha3.HTTPRoute{
		{Route: []*v1alpha3.HTTPRouteDestination{dest("reviews", "v1", 90), dest("reviews", "v2", 10)}},
		{Route: []*v1alpha3.HTTPRouteDestination{dest("reviews", "v1", 80), dest("reviews", "v2", 10)}},
		{Route: []*v1alpha3.HTTPRouteDestination{dest("reviews", "v1", 0)}},
		{Route: []*v1alpha3.HTTPRouteDestination{dest("reviews", "v1", 50)}},
		{Route: []*v1alpha3.HTTPRouteDestination{dest("reviews", "v1", 0), dest("reviews", "v2", 0)}},
	}})
	tcp := vs("default", "t", &v1alpha3.VirtualService{Hosts: []string{"db"}, Tcp: []*v1alpha3.TCPRoute{{Route: []*v1alpha3.RouteDestination{
		{Destination: &v1alpha3.Destination{Host: "db"}, Weight: 30}, {Destination: &v1alpha3.Destination{Host: "db2"}, Weight: 30},
	}}}})
	runCases(t, routeWeights, []analyzerCase{
		// Istio accepts any total above 0 (and a sole destination's
		// weight, whatever it is); only 0 is a schema error.
		{name: "good and bad routes", snap: snap(bad), want: []Finding{
			want(SchemaValidationError, bad, "Schema validation error: spec.http[4].route: total destination weight = 0 (0+0): give the destinations weights, e.g. adding up to 100"),
			want(RouteWeightsNotHundred, bad, "spec.http[1].route weights add up to 90 (80+10), not 100: traffic is split in proportion to them; set weights that add up to 100 to say what you mean"),
		}},
		{name: "tcp", snap: snap(tcp), want: []Finding{
			want(RouteWeightsNotHundred, tcp, "spec.tcp[0].route weights add up to 60 (30+30), not 100: traffic is split in proportion to them; set weights that add up to 100 to say what you mean"),
		}},
	})
}

func TestIneffectiveMatches(t *testing.T) {
	route := []*v1alpha3.HTTPRouteDestination{dest("reviews", "", 0)}
	canary := &v1alpha3.HTTPMatchRequest{Headers: map[string]*v1alpha3.StringMatch{"x-canary-user": exact("true")}}
	good := vs("default", "good", &v1alpha3.VirtualService{Hosts: []string{"reviews"}, Http: []*v1alpha3.HTTPRoute{
		{Match: []*v1alpha3.HTTPMatchRequest{canary}, Route: route},
		{Match: []*v1alpha3.HTTPMatchRequest{{Uri: prefix("/api/v2")}}, Route: route},
		{Match: []*v1alpha3.HTTPMatchRequest{{Uri: prefix("/api")}}, Route: route},
		{Route: route},
	}})
	afterCatchAll := vs("default", "catchall", &v1alpha3.VirtualService{Hosts: []string{"reviews"}, Http: []*v1alpha3.HTTPRoute{
		{Route: route},
		{Name: "canary", Match: []*v1alpha3.HTTPMatchRequest{canary}, Route: route},
	}})
	shadowed := vs("default", "shadowed", &v1alpha3.VirtualService{Hosts: []string{"reviews"}, Http: []*v1alpha3.HTTPRoute{
		{Match: []*v1alpha3.HTTPMatchRequest{{Uri: prefix("/api")}}, Route: route},
		{Match: []*v1alpha3.HTTPMatchRequest{{Uri: exact("/api/reviews"), Method: exact("GET")}, {Uri: prefix("/static")}}, Route: route},
		{Match: []*v1alpha3.HTTPMatchRequest{{Uri: prefix("/api/v1")}, {Uri: prefix("/static/img")}}, Route: route},
	}})
	twoCatchAlls := vs("default", "two", &v1alpha3.VirtualService{Hosts: []string{"reviews"}, Http: []*v1alpha3.HTTPRoute{{Route: route}, {Route: route}}})
	dupNamed := vs("default", "dup", &v1alpha3.VirtualService{Hosts: []string{"reviews"}, Http: []*v1alpha3.HTTPRoute{
		{Name: "a", Match: []*v1alpha3.HTTPMatchRequest{canary}, Route: route},
		{Name: "b", Match: []*v1alpha3.HTTPMatchRequest{{Name: "canary", Headers: canary.Headers}}, Route: route},
	}})
	l4route := []*v1alpha3.RouteDestination{{Destination: &v1alpha3.Destination{Host: "db"}}}
	l4 := vs("default", "l4", &v1alpha3.VirtualService{Hosts: []string{"db"},
		Tcp: []*v1alpha3.TCPRoute{
			{Match: []*v1alpha3.L4MatchAttributes{{Port: 5432}}, Route: l4route},
			{Match: []*v1alpha3.L4MatchAttributes{{Port: 5432}}, Route: l4route},
			{Match: []*v1alpha3.L4MatchAttributes{{Port: 5433}}, Route: l4route},
		},
		Tls: []*v1alpha3.TLSRoute{
			{Route: l4route},
			{Match: []*v1alpha3.TLSMatchAttributes{{SniHosts: []string{"db"}}}, Route: l4route},
		},
	})
	// Matches of one rule: a later match that an earlier one of the
	// same rule covers is never what routes a request (Istio: IST0131
	// alone, the rule itself is used).
	inRule := vs("shop", "cart", &v1alpha3.VirtualService{Hosts: []string{"cart"}, Http: []*v1alpha3.HTTPRoute{
		{Name: "carts", Match: []*v1alpha3.HTTPMatchRequest{
			{Uri: prefix("/cart")},
			{Uri: prefix("/cart/items"), Method: exact("DELETE")},
			{Uri: prefix("/checkout")},
		}, Route: route},
	}})
	inRuleL4 := vs("shop", "pg", &v1alpha3.VirtualService{Hosts: []string{"pg"},
		Tcp: []*v1alpha3.TCPRoute{{Match: []*v1alpha3.L4MatchAttributes{{Port: 5432}, {Port: 5433}, {Port: 5432}}, Route: l4route}},
	})
	// The first match of a rule is covered by an earlier rule, its second
	// by its first: the whole rule is unreachable.
	chained := vs("shop", "chained", &v1alpha3.VirtualService{Hosts: []string{"cart"}, Http: []*v1alpha3.HTTPRoute{
		{Match: []*v1alpha3.HTTPMatchRequest{{Uri: prefix("/cart")}}, Route: route},
		{Match: []*v1alpha3.HTTPMatchRequest{{Uri: prefix("/cart/v2")}, {Uri: exact("/cart/v2/list")}}, Route: route},
	}})
	runCases(t, ineffectiveMatches, []analyzerCase{
		{name: "specific before general", snap: snap(good)},
		{name: "overlap within a rule", snap: snap(inRule, inRuleL4), want: []Finding{
			want(VirtualServiceIneffectiveMatch, inRule, `VirtualService rule #0 ("carts") match #1 is not used (duplicate/overlapping match #0 of the same rule catches every request it matches first): remove the match`),
			want(VirtualServiceIneffectiveMatch, inRuleL4, "VirtualService tcp rule #0 match #2 is not used (duplicate/overlapping match #0 of the same rule catches every request it matches first): remove the match"),
		}},
		{name: "covered by an earlier rule and within", snap: snap(chained), want: []Finding{
			want(VirtualServiceUnreachableRule, chained, "VirtualService rule #1 not used (all matches used by prior rules: rule #0 catches every request it matches): move it earlier, or remove it"),
			want(VirtualServiceIneffectiveMatch, chained, "VirtualService rule #1 match #0 is not used (duplicate/overlapping match in rule #0): remove the match, or move the rule before rule #0"),
			want(VirtualServiceIneffectiveMatch, chained, "VirtualService rule #1 match #1 is not used (duplicate/overlapping match in rule #0): remove the match, or move the rule before rule #0"),
		}},
		// Istio: "route without matches defined before", IST0130 only.
		{name: "rule after catch-all", snap: snap(afterCatchAll), want: []Finding{
			want(VirtualServiceUnreachableRule, afterCatchAll, `VirtualService rule #1 ("canary") not used (route without matches defined before: rule #0 has no match and catches everything first): move it before rule #0, or remove it`),
		}},
		{name: "two catch-alls", snap: snap(twoCatchAlls), want: []Finding{
			want(VirtualServiceUnreachableRule, twoCatchAlls, "VirtualService rule #1 not used (only the last rule can have no matches: rule #0 has none and catches everything first): add a match, or remove it"),
		}},
		// An unreachable rule's matches are each ineffective too: Istio
		// reports IST0130 with an IST0131 per match.
		{name: "shadowed matches", snap: snap(shadowed), want: []Finding{
			want(VirtualServiceUnreachableRule, shadowed, "VirtualService rule #2 not used (all matches used by prior rules: rules #0, #1 catch every request it matches): move it earlier, or remove it"),
			want(VirtualServiceIneffectiveMatch, shadowed, "VirtualService rule #1 match #0 is not used (duplicate/overlapping match in rule #0): remove the match, or move the rule before rule #0"),
			want(VirtualServiceIneffectiveMatch, shadowed, "VirtualService rule #2 match #0 is not used (duplicate/overlapping match in rule #0): remove the match, or move the rule before rule #0"),
			want(VirtualServiceIneffectiveMatch, shadowed, "VirtualService rule #2 match #1 is not used (duplicate/overlapping match in rule #1): remove the match, or move the rule before rule #1"),
		}},
		{name: "duplicate named match", snap: snap(dupNamed), want: []Finding{
			want(VirtualServiceUnreachableRule, dupNamed, `VirtualService rule #1 ("b") not used (all matches used by prior rules: rule #0 ("a") catches every request it matches): move it earlier, or remove it`),
			want(VirtualServiceIneffectiveMatch, dupNamed, `VirtualService rule #1 ("b") match #0 ("canary") is not used (duplicate/overlapping match in rule #0 ("a")): remove the match, or move the rule before rule #0 ("a")`),
		}},
		{name: "tcp and tls duplicates", snap: snap(l4), want: []Finding{
			want(VirtualServiceUnreachableRule, l4, "VirtualService tcp rule #1 not used (all matches used by prior rules: rule #0 catches every request it matches): move it earlier, or remove it"),
			want(VirtualServiceUnreachableRule, l4, "VirtualService tls rule #1 not used (route without matches defined before: rule #0 has no match and catches everything first): move it before rule #0, or remove it"),
			want(VirtualServiceIneffectiveMatch, l4, "VirtualService tcp rule #1 match #0 is not used (duplicate/overlapping match in rule #0): remove the match, or move the rule before rule #0"),
		}},
	})
}

func TestConflictingVirtualServices(t *testing.T) {
	a := vs("default", "a", &v1alpha3.VirtualService{Hosts: []string{"reviews"}})
	b := vs("default", "b", &v1alpha3.VirtualService{Hosts: []string{"reviews.default.svc.cluster.local"}, Gateways: []string{"mesh"}})
	gw := vs("default", "gw", &v1alpha3.VirtualService{Hosts: []string{"reviews"}, Gateways: []string{"istio-system/ingress"}})
	msg := "The VirtualServices default/a,default/b associated with mesh gateway define the same host reviews.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource."
	runCases(t, conflictingVirtualServices, []analyzerCase{
		{name: "one per host", snap: snap(a, gw)},
		{name: "short and long name collide", snap: snap(a, b, gw), want: []Finding{
			want(ConflictingMeshGatewayVirtualServiceHosts, a, msg),
			want(ConflictingMeshGatewayVirtualServiceHosts, b, msg),
		}},
	})
}

func TestPortProtocols(t *testing.T) {
	unnamed := svc("default", "reviews", labelsOf("app", "reviews"), port("web", 9080), port("http-admin", 9090))
	route := vs("default", "r", &v1alpha3.VirtualService{Hosts: []string{"reviews"}, Http: []*v1alpha3.HTTPRoute{{
		Route: []*v1alpha3.HTTPRouteDestination{dest("reviews", "", 0)},
	}}})
	authz := ap("default", "get-only", &securityv1beta1.AuthorizationPolicy{
		Selector: selector("app", "reviews"),
		Rules:    []*securityv1beta1.Rule{{To: []*securityv1beta1.Rule_To{{Operation: &securityv1beta1.Operation{Methods: []string{"GET"}}}}}},
	})
	l4 := ap("default", "l4", &securityv1beta1.AuthorizationPolicy{
		Rules: []*securityv1beta1.Rule{{From: []*securityv1beta1.Rule_From{{Source: &securityv1beta1.Source{Namespaces: []string{"default"}}}}}},
	})
	appProto := port("web", 8080)
	appProto.AppProtocol = ptr("HTTP")
	badAppProto := port("http", 8081) // appProtocol wins over the name, as in Istio
	badAppProto.AppProtocol = ptr("kafka")
	dnsPort, udp, grpcWeb := port("dns", 53), port("stats", 8125), port("GRPC-Web-ui", 8443)
	udp.Protocol = corev1.ProtocolUDP
	declared := svc("default", "declared", nil, appProto, dnsPort, udp, grpcWeb, port("tcp", 5432), port("mysql-main", 3307))
	// Kubernetes' standard appProtocol names and an ambient waypoint's
	// tunnel port declare their protocol too.
	h2c, wss, tunnel := port("api", 8080), port("live", 8443), port("mesh", 15008)
	h2c.AppProtocol, wss.AppProtocol, tunnel.AppProtocol = ptr("kubernetes.io/h2c"), ptr("kubernetes.io/wss"), ptr("hbone")
	kubeNamed := svc("ambient", "gateway", nil, h2c, wss, tunnel)
	others := svc("default", "others", nil, badAppProto, port("", 80), port("postgres", 5432))
	system := svc("kube-system", "dns", nil, port("metrics", 9153))
	own := svc("fibmesh-system", "fibmesh-controller", nil, port("monitoring", 15014))
	istiod := svc("istio-system", "istiod", nil, port("monitoring", 15014))
	istiod.Object.(*corev1.Service).Labels = map[string]string{"istio": "pilot"}
	external := svc("default", "ext", nil, port("tcp", 443), port("web", 80), port("https", 8443))
	external.Object.(*corev1.Service).Spec.Type = corev1.ServiceTypeExternalName
	msg := func(name string, port int32, note string) string {
		return fmt.Sprintf(`Port name %q (port: %d, targetPort: %d) doesn't follow the naming convention of Istio port, so its protocol is detected per connection%s: name it <protocol>-<suffix> (http-…, grpc-…, tcp-…) or set appProtocol`, name, port, port, note)
	}
	runCases(t, portProtocols, []analyzerCase{
		// Istio reports every such port, with or without L7 policy,
		// with or without pods.
		{name: "no L7 policy", snap: snap(unnamed, l4), want: []Finding{want(PortNameIsNotUnderNamingConvention, unnamed, msg("web", 9080, ""))}},
		{name: "VirtualService", snap: snap(unnamed, route), want: []Finding{
			want(PortNameIsNotUnderNamingConvention, unnamed, msg("web", 9080, "; L7 policy applies to it (VirtualService default/r) and depends on that detection")),
		}},
		{name: "AuthorizationPolicy with methods", snap: snap(unnamed, authz), want: []Finding{
			want(PortNameIsNotUnderNamingConvention, unnamed, msg("web", 9080, "; L7 policy applies to it (AuthorizationPolicy default/get-only) and depends on that detection")),
		}},
		{name: "appProtocol, well-known port, UDP, grpc-web, tcp", snap: snap(declared)},
		{name: "Kubernetes and HBONE appProtocols", snap: snap(kubeNamed)},
		{name: "undeclared", snap: snap(others), want: []Finding{
			want(PortNameIsNotUnderNamingConvention, others, msg("", 80, "")),
			want(PortNameIsNotUnderNamingConvention, others, msg("http", 8081, "")),
			want(PortNameIsNotUnderNamingConvention, others, msg("postgres", 5432, "")),
		}},
		{name: "system namespaces and control planes", snap: snap(system, own, istiod)},
		{name: "ExternalName", snap: snap(external), want: []Finding{
			want(ExternalNameServiceTypeInvalidPortName, external, `Port name for ExternalName service is invalid. Proxy may prevent tcp named ports and unmatched traffic for ports serving TCP protocol from being forwarded correctly (port "tcp", 443): name it <protocol>-<suffix> with a protocol other than tcp (http-…, tls-…), or set appProtocol`),
			want(ExternalNameServiceTypeInvalidPortName, external, `Port name for ExternalName service is invalid. Proxy may prevent tcp named ports and unmatched traffic for ports serving TCP protocol from being forwarded correctly (port "web", 80): name it <protocol>-<suffix> with a protocol other than tcp (http-…, tls-…), or set appProtocol`),
		}},
	})
}

func ptr[T any](v T) *T { return &v }

func TestPeerAuthenticationConflicts(t *testing.T) {
	strict := &securityv1beta1.PeerAuthentication{Mtls: &securityv1beta1.PeerAuthentication_MutualTLS{Mode: securityv1beta1.PeerAuthentication_MutualTLS_STRICT}}
	permissive := &securityv1beta1.PeerAuthentication{Mtls: &securityv1beta1.PeerAuthentication_MutualTLS{Mode: securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE}}
	mesh1, mesh2 := pa(RootNamespace, "default", strict), pa(RootNamespace, "other", permissive)
	ns1, ns2 := pa("prod", "a", strict), pa("prod", "b", permissive)
	w1 := pa("prod", "w1", &securityv1beta1.PeerAuthentication{Selector: selector("app", "x")})
	w2 := pa("prod", "w2", &securityv1beta1.PeerAuthentication{Selector: selector("app", "x")})
	runCases(t, peerAuthenticationConflicts, []analyzerCase{
		{name: "mesh, namespace and workload levels", snap: snap(mesh1, pa("prod", "a", permissive), w1)},
		{name: "two mesh-wide", snap: snap(mesh1, mesh2), want: []Finding{
			want(ConflictingPeerAuthentications, mesh1, "PeerAuthentications istio-system/default, istio-system/other are all mesh-wide (namespace istio-system, no selector); only the oldest applies (then the first by name), the others are ignored: merge them into one"),
			want(ConflictingPeerAuthentications, mesh2, "PeerAuthentications istio-system/default, istio-system/other are all mesh-wide (namespace istio-system, no selector); only the oldest applies (then the first by name), the others are ignored: merge them into one"),
		}},
		{name: "two namespace-wide", snap: snap(ns1, ns2), want: []Finding{
			want(ConflictingPeerAuthentications, ns1, "PeerAuthentications prod/a, prod/b are all namespace-wide in namespace prod (no selector); only the oldest applies (then the first by name), the others are ignored: merge them into one"),
			want(ConflictingPeerAuthentications, ns2, "PeerAuthentications prod/a, prod/b are all namespace-wide in namespace prod (no selector); only the oldest applies (then the first by name), the others are ignored: merge them into one"),
		}},
		{name: "same selector", snap: snap(w1, w2), want: []Finding{
			want(ConflictingPeerAuthentications, w1, "PeerAuthentications prod/w1, prod/w2 select the same workloads (app=x) in namespace prod; only the oldest applies (then the first by name), the others are ignored: merge them into one"),
			want(ConflictingPeerAuthentications, w2, "PeerAuthentications prod/w1, prod/w2 select the same workloads (app=x) in namespace prod; only the oldest applies (then the first by name), the others are ignored: merge them into one"),
		}},
	})
}

func TestSelectorsWithoutWorkloads(t *testing.T) {
	p := pod("prod", "reviews-1", labelsOf("app", "reviews", "version", "v1"))
	outside := pod("legacy", "old", labelsOf("app", "old", "fibmesh.io/capture", "disabled"))
	hit := ap("prod", "hit", &securityv1beta1.AuthorizationPolicy{Selector: selector("app", "reviews")})
	miss := pa("prod", "miss", &securityv1beta1.PeerAuthentication{Selector: selector("app", "ratings")})
	meshWide := ap(RootNamespace, "mesh", &securityv1beta1.AuthorizationPolicy{Selector: selector("version", "v1")})
	meshMiss := ap(RootNamespace, "mesh-miss", &securityv1beta1.AuthorizationPolicy{Selector: selector("version", "v9")})
	meshAll := ap(RootNamespace, "all", &securityv1beta1.AuthorizationPolicy{})
	otherNS := ap("dev", "other", &securityv1beta1.AuthorizationPolicy{Selector: selector("app", "reviews")})
	nsWide := ap("prod", "ns-wide", &securityv1beta1.AuthorizationPolicy{})
	emptyNS := ap("empty", "ns-wide", &securityv1beta1.AuthorizationPolicy{})
	emptyPA := pa("empty", "default", &securityv1beta1.PeerAuthentication{})
	legacy := ap("legacy", "deny-all", &securityv1beta1.AuthorizationPolicy{})
	legacySel := ap("legacy", "old", &securityv1beta1.AuthorizationPolicy{Selector: selector("app", "old")})
	const none = "No matching workloads for this resource with the following labels: (none: the policy has no selector and applies to the whole namespace, where no pod in the mesh runs); deploy the workloads, or remove the policy"
	runCases(t, selectorsWithoutWorkloads, []analyzerCase{
		// Istio checks whether or not the input has pods.
		{name: "no pods in the input", snap: snap(miss), want: []Finding{
			want(NoMatchingWorkloadsFound, miss, "No matching workloads for this resource with the following labels: app=ratings (no pod in the mesh in namespace prod has them); fix the selector or deploy the workload"),
		}},
		{name: "matches", snap: snap(p, hit, meshWide, meshAll, nsWide)},
		{name: "matches nothing", snap: snap(p, miss, otherNS, meshMiss), want: []Finding{
			want(NoMatchingWorkloadsFound, otherNS, "No matching workloads for this resource with the following labels: app=reviews (no pod in the mesh in namespace dev has them); fix the selector or deploy the workload"),
			want(NoMatchingWorkloadsFound, meshMiss, "No matching workloads for this resource with the following labels: version=v9 (no pod in the mesh in any namespace has them); fix the selector or deploy the workload"),
			want(NoMatchingWorkloadsFound, miss, "No matching workloads for this resource with the following labels: app=ratings (no pod in the mesh in namespace prod has them); fix the selector or deploy the workload"),
		}},
		{name: "namespace-wide in a namespace without workloads", snap: snap(p, emptyNS, emptyPA), want: []Finding{
			want(NoMatchingWorkloadsFound, emptyNS, none),
			want(NoMatchingWorkloadsFound, emptyPA, none),
		}},
		// Istio counts only pods in the mesh.
		{name: "pods outside the mesh", snap: snap(outside, legacy, legacySel), want: []Finding{
			want(NoMatchingWorkloadsFound, legacy, none),
			want(NoMatchingWorkloadsFound, legacySel, "No matching workloads for this resource with the following labels: app=old (no pod in the mesh in namespace legacy has them); fix the selector or deploy the workload"),
		}},
	})
}

func TestUnsupportedFields(t *testing.T) {
	v := vs("default", "r", &v1alpha3.VirtualService{
		Hosts:    []string{"reviews"},
		Gateways: []string{"mesh", "istio-system/ingress"},
		Http: []*v1alpha3.HTTPRoute{{
			Match:      []*v1alpha3.HTTPMatchRequest{{Uri: prefix("/"), QueryParams: map[string]*v1alpha3.StringMatch{"a": exact("b")}, SourceLabels: map[string]string{"app": "web"}}},
			Route:      []*v1alpha3.HTTPRouteDestination{dest("reviews", "v1", 0)},
			Mirror:     &v1alpha3.Destination{Host: "reviews", Subset: "v2"},
			CorsPolicy: &v1alpha3.CorsPolicy{AllowOrigins: []*v1alpha3.StringMatch{exact("x")}},
			Timeout:    durationpb.New(10e9),
			Retries:    &v1alpha3.HTTPRetry{Attempts: 3, PerTryTimeout: durationpb.New(2e9), RetryOn: "5xx", Backoff: durationpb.New(1e9)},
		}},
		Tcp: []*v1alpha3.TCPRoute{{Match: []*v1alpha3.L4MatchAttributes{{SourceSubnet: "10.0.0.0/8", Port: 3306}}}},
		Tls: []*v1alpha3.TLSRoute{{Match: []*v1alpha3.TLSMatchAttributes{{SniHosts: []string{"a.example"}, Gateways: []string{"ingress"}}}}},
	})
	d := dr("default", "reviews", &v1alpha3.DestinationRule{
		Host: "reviews",
		TrafficPolicy: &v1alpha3.TrafficPolicy{
			LoadBalancer: &v1alpha3.LoadBalancerSettings{LbPolicy: &v1alpha3.LoadBalancerSettings_Simple{Simple: v1alpha3.LoadBalancerSettings_LEAST_REQUEST}},
			Tls:          &v1alpha3.ClientTLSSettings{Mode: v1alpha3.ClientTLSSettings_ISTIO_MUTUAL},
		},
		Subsets: []*v1alpha3.Subset{{Name: "v1", TrafficPolicy: &v1alpha3.TrafficPolicy{Tls: &v1alpha3.ClientTLSSettings{Mode: v1alpha3.ClientTLSSettings_DISABLE}}}},
	})
	a := ap("default", "ext", &securityv1beta1.AuthorizationPolicy{
		Action:       securityv1beta1.AuthorizationPolicy_CUSTOM,
		ActionDetail: &securityv1beta1.AuthorizationPolicy_Provider{Provider: &securityv1beta1.AuthorizationPolicy_ExtensionProvider{Name: "opa"}},
		Rules: []*securityv1beta1.Rule{{From: []*securityv1beta1.Rule_From{{Source: &securityv1beta1.Source{
			Principals: []string{"cluster.local/ns/a/sa/b"}, RequestPrincipals: []string{"*"},
		}}}}},
	})
	p := pa("default", "p", &securityv1beta1.PeerAuthentication{PortLevelMtls: map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{
		8080: {Mode: securityv1beta1.PeerAuthentication_MutualTLS_DISABLE},
	}})
	hashed := dr("default", "ratings", &v1alpha3.DestinationRule{Host: "ratings", TrafficPolicy: &v1alpha3.TrafficPolicy{
		LoadBalancer: &v1alpha3.LoadBalancerSettings{LbPolicy: &v1alpha3.LoadBalancerSettings_ConsistentHash{ConsistentHash: &v1alpha3.LoadBalancerSettings_ConsistentHashLB{
			HashKey:         &v1alpha3.LoadBalancerSettings_ConsistentHashLB_HttpCookie{HttpCookie: &v1alpha3.LoadBalancerSettings_ConsistentHashLB_HTTPCookie{Name: "s", Path: "/", Ttl: durationpb.New(0)}},
			HashAlgorithm:   &v1alpha3.LoadBalancerSettings_ConsistentHashLB_Maglev{Maglev: &v1alpha3.LoadBalancerSettings_ConsistentHashLB_MagLev{TableSize: 65537}},
			MinimumRingSize: 1024,
		}}}}})
	hashedMore := dr("default", "details", &v1alpha3.DestinationRule{Host: "details", TrafficPolicy: &v1alpha3.TrafficPolicy{
		LoadBalancer: &v1alpha3.LoadBalancerSettings{LbPolicy: &v1alpha3.LoadBalancerSettings_ConsistentHash{ConsistentHash: &v1alpha3.LoadBalancerSettings_ConsistentHashLB{
			HashKey: &v1alpha3.LoadBalancerSettings_ConsistentHashLB_HttpCookie{HttpCookie: &v1alpha3.LoadBalancerSettings_ConsistentHashLB_HTTPCookie{Name: "s",
				Attributes: []*v1alpha3.LoadBalancerSettings_ConsistentHashLB_HTTPCookie_Attribute{{Name: "SameSite", Value: "Lax"}}}},
			HashAlgorithm: &v1alpha3.LoadBalancerSettings_ConsistentHashLB_RingHash_{RingHash: &v1alpha3.LoadBalancerSettings_ConsistentHashLB_RingHash{MinimumRingSize: 2048}},
		}}},
		PortLevelSettings: []*v1alpha3.TrafficPolicy_PortTrafficPolicy{{Port: &v1alpha3.PortSelector{Number: 9080}}},
	}})
	runCases(t, unsupportedFields, []analyzerCase{
		{name: "supported only", snap: snap(reviewsR, p, hashed)},
		{name: "consistent hash: cookie attributes, port level", snap: snap(hashedMore), want: []Finding{
			want(UnsupportedField, hashedMore, "field spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes is not supported by fibmesh yet and has no effect"),
			want(UnsupportedField, hashedMore, "field spec.trafficPolicy.portLevelSettings is not supported by fibmesh yet and has no effect"),
		}},
		{name: "unsupported", snap: snap(v, d, a, p), want: []Finding{
			want(UnsupportedField, a, "field spec.action: action CUSTOM (external authorization) is not supported yet and has no effect"),
			want(UnsupportedField, a, "field spec.provider is not supported by fibmesh yet and has no effect"),
			want(UnsupportedField, a, "field spec.rules[0].from[0].source.requestPrincipals is not supported by fibmesh yet and has no effect"),
			want(UnsupportedField, d, "field spec.subsets[0].trafficPolicy is not supported by fibmesh yet and has no effect"),
			want(UnsupportedField, d, "field spec.trafficPolicy.tls is not supported by fibmesh yet and has no effect"),
			want(UnsupportedField, v, `field spec.gateways: gateway "istio-system/ingress" is not supported (only "mesh") yet and has no effect`),
			want(UnsupportedField, v, "field spec.http[0].corsPolicy is not supported by fibmesh yet and has no effect"),
			want(UnsupportedField, v, "field spec.http[0].match[0].queryParams is not supported by fibmesh yet and has no effect"),
			want(UnsupportedField, v, "field spec.http[0].match[0].sourceLabels is not supported by fibmesh yet and has no effect"),
			want(UnsupportedField, v, "field spec.http[0].mirror is not supported by fibmesh yet and has no effect"),
			want(UnsupportedField, v, "field spec.http[0].retries.backoff is not supported by fibmesh yet and has no effect"),
			want(UnsupportedField, v, "field spec.tcp[0].match[0].sourceSubnet is not supported by fibmesh yet and has no effect"),
			want(UnsupportedField, v, `field spec.tls[0].match[0].gateways: gateway "ingress" is not supported (only "mesh") yet and has no effect`),
		}},
	})
}

// TestSupportedFieldsTable keeps the table honest: every entry names a
// real message and field.
func TestSupportedFieldsTable(t *testing.T) {
	for msg, fields := range supportedFields {
		d, err := protoregistryFind(msg)
		if err != nil {
			t.Errorf("supportedFields: %v", err)
			continue
		}
		for _, f := range fields {
			if d.Fields().ByJSONName(f) == nil {
				t.Errorf("supportedFields: %s has no field %q", msg, f)
			}
		}
	}
	for name := range partlySupported {
		if _, err := protoregistryFindField(name); err != nil {
			t.Errorf("partlySupported: %v", err)
		}
	}
}

func TestSkippedKinds(t *testing.T) {
	dep := config.Resource{GVK: schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, Namespace: "default", Name: "x", Source: config.Source{File: "d.yaml", Doc: 2}}
	gw := config.Resource{GVK: schema.GroupVersionKind{Group: "networking.istio.io", Version: "v1", Kind: "Gateway"}, Namespace: "istio-system", Name: "ingress"}
	runCases(t, skippedKinds, []analyzerCase{
		{name: "deployment and gateway", snap: &config.Snapshot{Skipped: []config.Resource{dep, gw}}, want: []Finding{
			want(KindNotConsumed, dep, "apps/v1 Deployment default/x is not consumed by fibmesh"),
			want(KindNotConsumed, gw, "networking.istio.io/v1 Gateway istio-system/ingress is not consumed by fibmesh"),
		}},
	})
}

func TestConsistentHashes(t *testing.T) {
	hashDR := func(name, host string, ch *v1alpha3.LoadBalancerSettings_ConsistentHashLB) config.Resource {
		return dr("default", name, &v1alpha3.DestinationRule{Host: host, TrafficPolicy: &v1alpha3.TrafficPolicy{
			LoadBalancer: &v1alpha3.LoadBalancerSettings{LbPolicy: &v1alpha3.LoadBalancerSettings_ConsistentHash{ConsistentHash: ch}}}})
	}
	header := func(h string) *v1alpha3.LoadBalancerSettings_ConsistentHashLB {
		return &v1alpha3.LoadBalancerSettings_ConsistentHashLB{HashKey: &v1alpha3.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName{HttpHeaderName: h}}
	}
	noKey := hashDR("reviews", "reviews", &v1alpha3.LoadBalancerSettings_ConsistentHashLB{MinimumRingSize: 1024})
	noName := hashDR("reviews", "reviews", &v1alpha3.LoadBalancerSettings_ConsistentHashLB{HashKey: &v1alpha3.LoadBalancerSettings_ConsistentHashLB_HttpCookie{
		HttpCookie: &v1alpha3.LoadBalancerSettings_ConsistentHashLB_HTTPCookie{Path: "/"}}})
	split := func(a, b string) config.Resource {
		return vs("default", "r", &v1alpha3.VirtualService{Hosts: []string{"reviews"}, Http: []*v1alpha3.HTTPRoute{{
			Route: []*v1alpha3.HTTPRouteDestination{dest(a, "", 50), dest(b, "", 50)}}}})
	}
	differ := split("reviews", "ratings")
	runCases(t, consistentHashes, []analyzerCase{
		{name: "a key", snap: snap(hashDR("reviews", "reviews", header("x-user")), split("reviews", "reviews"))},
		{name: "no key", snap: snap(noKey), want: []Finding{want(ConsistentHashNotApplied, noKey,
			"spec.trafficPolicy.loadBalancer.consistentHash sets no key (httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName): requests to reviews.default.svc.cluster.local are balanced at random, not by a key; set one")}},
		{name: "cookie without a name", snap: snap(noName), want: []Finding{want(ConsistentHashNotApplied, noName,
			"spec.trafficPolicy.loadBalancer.consistentHash has an httpCookie without a name: requests to reviews.default.svc.cluster.local are balanced at random, not by a key; set one")}},
		{name: "only the rule in force", snap: snap(hashDR("a", "reviews", header("x")), noKey)},
		{name: "same key, other case", snap: snap(hashDR("reviews", "reviews", header("X-User")), hashDR("ratings", "ratings", header("x-user")), split("reviews", "ratings"))},
		{name: "one host without a key", snap: snap(hashDR("reviews", "reviews", header("x")), split("reviews", "ratings"))},
		{name: "keys differ", snap: snap(hashDR("reviews", "reviews", header("x")), hashDR("ratings", "ratings", &v1alpha3.LoadBalancerSettings_ConsistentHashLB{
			HashKey: &v1alpha3.LoadBalancerSettings_ConsistentHashLB_UseSourceIp{UseSourceIp: true}}), differ), want: []Finding{want(ConsistentHashNotApplied, differ,
			`spec.http[0].route: reviews.default.svc.cluster.local hashes by header "x", ratings.default.svc.cluster.local by source IP; the route hashes every request by header "x" (the first destination's key): give the hosts the same key, or route them in separate rules`)}},
	})
}
