package xdsconf

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// headerMap is a request's headers for VirtualHost.Route.
type headerMap map[string]string

func (h headerMap) get(name string) (string, bool) { v, ok := h[name]; return v, ok }

// A gRPC service with a connection pool, beside the fixture.
const grpcExtra = `
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: production}
spec:
  clusterIP: 10.96.0.50
  selector: {app: hello}
  ports: [{name: grpc, port: 50051, protocol: TCP}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: hello, namespace: production}
spec:
  host: hello
  trafficPolicy:
    connectionPool:
      http: {maxRequestsPerConnection: 7, maxRetries: 4}
`

// The fixture's VirtualServices, as the controller translates them,
// compiled for L7: the reviews canary (header override, 90/10 split,
// retries, timeout, fault) and ratings' timeout with Istio's default
// retries.
func TestExamplesL7Routes(t *testing.T) {
	snap := storeFor(t, nil, "node1")
	rv := snap.Routes[reviews+":9080"]
	if rv == nil {
		t.Fatalf("no route configuration %s:9080; have %v", reviews, snap.Routes)
	}
	chain := snap.Outbound.Match(MatchInput{Destination: ap("10.96.0.11:9080"), Source: ap("10.200.1.12:40000")})
	if got := snap.RoutesFor(chain.HTTP); got != rv {
		t.Errorf("RoutesFor(outbound reviews chain) = %p, want %p", got, rv)
	}
	for _, a := range []string{"reviews", "reviews:9080", "reviews.production", "reviews.production.svc:9080",
		reviews, "Reviews.Production.SVC.cluster.local:9080", "10.96.0.11", "10.96.0.11:9080"} {
		if vh := rv.VirtualHost(a); vh == nil || vh.Name != reviews+":9080" {
			t.Errorf("VirtualHost(%q) = %v", a, vh)
		}
	}
	for _, a := range []string{"ratings", "reviews:9081", "", "10.96.0.12"} {
		if vh := rv.VirtualHost(a); vh != nil {
			t.Errorf("VirtualHost(%q) = %s, want none", a, vh.Name)
		}
	}
	vh := rv.VirtualHost("reviews:9080")
	retry := &RetryPolicy{On: Retry5xx | RetryReset | RetryConnectFailure, NumRetries: 3, PerTryTimeout: 2 * time.Second,
		PreviousHosts: true, HostSelectionMaxAttempts: 5}
	v1, v2 := "outbound|9080|v1|"+reviews, "outbound|9080|v2|"+reviews
	opts := cmp.Options{cmpopts.IgnoreUnexported(Route{}), cmpopts.IgnoreFields(Route{}, "Match"), cmpopts.EquateEmpty()}
	for _, tc := range []struct {
		name    string
		method  string
		path    string
		headers headerMap
		want    *Route
	}{
		{"canary tester", "GET", "/reviews/1", headerMap{"x-canary-user": "true"},
			&Route{Name: "canary-testers", Clusters: []WeightedCluster{{v2, 1}}, Timeout: 10 * time.Second, Retry: retry}},
		{"canary tester, POST", "POST", "/", headerMap{"x-canary-user": "true", "other": "x"},
			&Route{Name: "canary-testers", Clusters: []WeightedCluster{{v2, 1}}, Timeout: 10 * time.Second, Retry: retry}},
		{"not a tester", "GET", "/reviews/1", headerMap{"x-canary-user": "false"},
			&Route{Name: "canary-split", Clusters: []WeightedCluster{{v1, 90}, {v2, 10}}, Timeout: 10 * time.Second, Retry: retry,
				Fault: &Fault{Delay: 5 * time.Second, DelayPercent: 10000, AbortGRPCStatus: -1}}},
		{"header case of the value counts", "GET", "/", headerMap{"x-canary-user": "TRUE"},
			&Route{Name: "canary-split", Clusters: []WeightedCluster{{v1, 90}, {v2, 10}}, Timeout: 10 * time.Second, Retry: retry,
				Fault: &Fault{Delay: 5 * time.Second, DelayPercent: 10000, AbortGRPCStatus: -1}}},
		{"no headers", "GET", "/", nil,
			&Route{Name: "canary-split", Clusters: []WeightedCluster{{v1, 90}, {v2, 10}}, Timeout: 10 * time.Second, Retry: retry,
				Fault: &Fault{Delay: 5 * time.Second, DelayPercent: 10000, AbortGRPCStatus: -1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := vh.Route(tc.method, tc.path, tc.headers.get)
			if diff := cmp.Diff(tc.want, r, opts); diff != "" {
				t.Errorf("route (-want +got):\n%s", diff)
			}
		})
	}
	// The split: exactly 90/10 over every residue, and near it over
	// random draws (within 6 standard deviations of 100,000 draws).
	split := vh.Route("GET", "/", nil)
	got := map[string]int{}
	for r := range uint32(100) {
		got[split.PickCluster(r)]++
	}
	if got[v1] != 90 || got[v2] != 10 {
		t.Errorf("split over 100 residues: %v", got)
	}
	clear(got)
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 100000
	for range n {
		got[split.PickCluster(rng.Uint32())]++
	}
	if d := got[v2] - n/10; d < -570 || d > 570 || got[v1]+got[v2] != n {
		t.Errorf("split over %d random draws: %v, want ~90/10", n, got)
	}
	if !split.Fault.DelayPercent.Hit(9999) || split.Fault.DelayPercent.Hit(10000) {
		t.Error("a 1% delay should hit draws below 10000 per million only")
	}
	if !retry.RetriableStatus(500) || !retry.RetriableStatus(503) || retry.RetriableStatus(404) {
		t.Error("5xx retries 5xx and nothing else")
	}

	// ratings: a 3s timeout, Istio's default retries.
	rt := snap.Routes[ratings+":9080"].VirtualHost("ratings:9080").Route("GET", "/ratings/1", nil)
	want := &Route{Name: "", Clusters: []WeightedCluster{{"outbound|9080||" + ratings, 1}}, Timeout: 3 * time.Second,
		Retry: &RetryPolicy{On: RetryConnectFailure | RetryRefusedStream | RetryUnavailable | RetryCancelled | RetryRetriableStatusCodes,
			NumRetries: 2, RetriableStatusCodes: []uint32{503}, PreviousHosts: true, HostSelectionMaxAttempts: 5}}
	if diff := cmp.Diff(want, rt, opts); diff != "" {
		t.Errorf("ratings route (-want +got):\n%s", diff)
	}
	if !rt.Retry.RetriableStatus(503) || rt.Retry.RetriableStatus(500) {
		t.Error("Istio's default retries 503 only")
	}
	// frontend: no VirtualService, the default route with no timeout.
	ft := snap.Routes[frontend+":8080"].VirtualHost("frontend:8080").Route("GET", "/", nil)
	if ft == nil || ft.Name != "default" || ft.PickCluster(7) != "outbound|8080||"+frontend || ft.Timeout != NoRouteTimeout || ft.Retry == nil {
		t.Errorf("frontend route %+v", ft)
	}

	// Inbound: the inline route to inbound-passthrough, no timeout.
	in := snap.Inbound.Match(MatchInput{Destination: ap("10.200.1.11:9080"), Source: ap("10.200.1.12:40000")})
	if in == nil || in.HTTP == nil || in.HTTP.Routes() == nil {
		t.Fatalf("inbound reviews chain %+v: no inline routes", in)
	}
	if snap.RoutesFor(in.HTTP) != in.HTTP.Routes() {
		t.Error("RoutesFor(inline) is not the inline configuration")
	}
	ir := in.HTTP.Routes().VirtualHost("anything:1").Route("DELETE", "/x", nil)
	if ir == nil || ir.PickCluster(0) != "inbound-passthrough" || ir.Timeout != NoRouteTimeout || ir.Retry != nil || ir.Fault != nil {
		t.Errorf("inbound route %+v", ir)
	}
}

// The fixture's DestinationRules compiled for L7.
func TestExamplesClusterHTTP(t *testing.T) {
	snap := storeFor(t, map[string]string{"40-hello.yaml": grpcExtra}, "node1")
	od := &OutlierDetection{Consecutive5xx: 5, EnforcingConsecutive5xx: 100, Interval: 10 * time.Second,
		BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 50}
	for _, tc := range []struct {
		cluster string
		want    *ClusterHTTP
	}{
		{"outbound|9080||" + reviews, &ClusterHTTP{MaxPendingRequests: 100, MaxRequests: 1000, Outlier: od}},
		{"outbound|9080|v2|" + reviews, &ClusterHTTP{MaxPendingRequests: 100, MaxRequests: 1000, Outlier: od}},
		{"outbound|9080||" + ratings, &ClusterHTTP{}},
		{"outbound|50051||hello.production.svc.cluster.local", &ClusterHTTP{MaxRetries: 4, MaxRequestsPerConnection: 7, HTTP2: true}},
		{"inbound-passthrough", &ClusterHTTP{}},
	} {
		t.Run(tc.cluster, func(t *testing.T) {
			c := snap.Clusters[tc.cluster]
			if c == nil {
				t.Fatal("no cluster")
			}
			if diff := cmp.Diff(tc.want, c.HTTP()); diff != "" {
				t.Errorf("HTTP() (-want +got):\n%s", diff)
			}
		})
	}
	if got := (&Cluster{}).HTTP(); *got != (ClusterHTTP{MaxPendingRequests: 1024, MaxRequests: 1024, MaxRetries: 3}) {
		t.Errorf("a hand-made cluster's HTTP() = %+v, want Envoy's defaults", got)
	}
}

func anyOf(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func rcWith(vhs ...*routev3.VirtualHost) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: "rc", VirtualHosts: vhs}
}

func vhost(name string, domains ...string) *routev3.VirtualHost {
	return &routev3.VirtualHost{Name: name, Domains: domains, Routes: []*routev3.Route{routeTo(prefixMatch("/"), name)}}
}

// Envoy's virtual host selection order.
func TestVirtualHostOrder(t *testing.T) {
	rc, err := compileRouteConfig(rcWith(
		vhost("star", "*"),
		vhost("prefix-short", "api.*"),
		vhost("suffix-short", "*.example.com"),
		vhost("exact", "api.example.com", "API.example.com:8080"),
		vhost("suffix-long", "*.b.example.com"),
		vhost("prefix-long", "api.example.*"),
		vhost("dash", "*-bar.example.org"),
	), "rc")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ authority, want string }{
		{"api.example.com", "exact"},
		{"API.Example.COM", "exact"},
		{"api.example.com:8080", "exact"},
		{"x.b.example.com", "suffix-long"},
		{"b.example.com", "suffix-short"},     // the wildcard matches one character at least
		{".b.example.com", "suffix-short"},    // "*.b.example.com" would match the empty string
		{"api.x.example.com", "suffix-short"}, // suffixes before prefixes
		{"api.example.org", "prefix-long"},
		{"api.example.com:9090", "prefix-long"}, // the port is part of the authority
		{"api.foo", "prefix-short"},
		{"API.FOO", "prefix-short"},
		{"api.", "star"},
		{"example.com", "star"},
		{"baz-bar.example.org", "dash"},
		{"-bar.example.org", "star"},
		{"", "star"},
		{strings.Repeat("A", 300) + ".example.com", "suffix-short"},
	} {
		if vh := rc.VirtualHost(tc.authority); vh == nil || vh.Name != tc.want {
			t.Errorf("VirtualHost(%.40q) = %v, want %s", tc.authority, vh, tc.want)
		}
	}
	noStar, err := compileRouteConfig(rcWith(vhost("exact", "a.example.com")), "rc")
	if err != nil {
		t.Fatal(err)
	}
	if vh := noStar.VirtualHost("b.example.com"); vh != nil {
		t.Errorf("no domain matches: got %s", vh.Name)
	}
	var nilRC *RouteConfig
	if nilRC.VirtualHost("x") != nil || (*VirtualHost)(nil).Route("GET", "/", nil) != nil {
		t.Error("nil configuration or host matched")
	}
}

func hm(name string, set func(*routev3.HeaderMatcher)) *routev3.HeaderMatcher {
	h := &routev3.HeaderMatcher{Name: name}
	if set != nil {
		set(h)
	}
	return h
}

func sm(p any) *routev3.HeaderMatcher_StringMatch {
	m := &matcherv3.StringMatcher{}
	switch v := p.(type) {
	case *matcherv3.StringMatcher_Exact:
		m.MatchPattern = v
	case *matcherv3.StringMatcher_Prefix:
		m.MatchPattern = v
	case *matcherv3.StringMatcher_Suffix:
		m.MatchPattern = v
	case *matcherv3.StringMatcher_SafeRegex:
		m.MatchPattern = v
	}
	return &routev3.HeaderMatcher_StringMatch{StringMatch: m}
}

// Every matcher kind, each alone in a route before a catch-all.
func TestRouteMatchers(t *testing.T) {
	re := func(s string) *matcherv3.RegexMatcher { return &matcherv3.RegexMatcher{Regex: s} }
	for _, tc := range []struct {
		name    string
		match   *routev3.RouteMatch
		method  string
		path    string
		headers headerMap
		want    bool
	}{
		{"prefix", prefixMatch("/api/"), "GET", "/api/x", nil, true},
		{"prefix no", prefixMatch("/api/"), "GET", "/apix", nil, false},
		{"prefix is case sensitive", prefixMatch("/api/"), "GET", "/API/x", nil, false},
		{"exact", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/a"}}, "GET", "/a", nil, true},
		{"exact ignores the query", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/a"}}, "GET", "/a?x=1", nil, true},
		{"exact no", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/a"}}, "GET", "/a/", nil, false},
		{"regex", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: re(`/r/\d+`)}}, "GET", "/r/12?q", nil, true},
		{"regex is anchored", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: re(`/r/\d+`)}}, "GET", "/r/12/x", nil, false},
		{"method", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{
			hm(":method", func(h *routev3.HeaderMatcher) {
				h.HeaderMatchSpecifier = sm(&matcherv3.StringMatcher_Exact{Exact: "GET"})
			})}}, "GET", "/", nil, true},
		{"method no", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{
			hm(":method", func(h *routev3.HeaderMatcher) {
				h.HeaderMatchSpecifier = sm(&matcherv3.StringMatcher_Exact{Exact: "GET"})
			})}}, "POST", "/", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) { checkMatch(t, tc.match, tc.method, tc.path, tc.headers, tc.want) })
	}
	// Header matchers on "x-h", with and without invert_match.
	for _, tc := range []struct {
		name   string
		spec   func(*routev3.HeaderMatcher)
		value  string // "" with absent
		absent bool
		want   bool
	}{
		{"exact_match", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_ExactMatch{ExactMatch: "v"}
		}, "v", false, true},
		{"exact_match other", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_ExactMatch{ExactMatch: "v"}
		}, "w", false, false},
		{"exact_match empty value", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_ExactMatch{ExactMatch: ""}
		}, "", false, true},
		{"exact_match absent", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_ExactMatch{ExactMatch: ""}
		}, "", true, false},
		{"prefix_match", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: "ab"}
		}, "abc", false, true},
		{"suffix_match", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_SuffixMatch{SuffixMatch: "bc"}
		}, "abc", false, true},
		{"suffix_match no", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_SuffixMatch{SuffixMatch: "bc"}
		}, "abd", false, false},
		{"safe_regex_match", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: re("a.c")}
		}, "abc", false, true},
		{"safe_regex_match anchored", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: re("a.c")}
		}, "abcd", false, false},
		{"present_match", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		}, "", false, true},
		{"present_match absent", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		}, "", true, false},
		{"present_match false absent", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}
		}, "", true, true},
		{"no specifier is present", nil, "x", false, true},
		{"no specifier absent", nil, "", true, false},
		{"string_match exact", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = sm(&matcherv3.StringMatcher_Exact{Exact: "v"})
		}, "v", false, true},
		{"string_match prefix", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = sm(&matcherv3.StringMatcher_Prefix{Prefix: "v"})
		}, "vw", false, true},
		{"string_match suffix", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = sm(&matcherv3.StringMatcher_Suffix{Suffix: "w"})
		}, "vw", false, true},
		{"string_match safe_regex", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = sm(&matcherv3.StringMatcher_SafeRegex{SafeRegex: re("[0-9]+")})
		}, "123", false, true},
		{"string_match safe_regex no", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = sm(&matcherv3.StringMatcher_SafeRegex{SafeRegex: re("[0-9]+")})
		}, "12a", false, false},
		{"invert exact", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier, h.InvertMatch = &routev3.HeaderMatcher_ExactMatch{ExactMatch: "v"}, true
		}, "w", false, true},
		{"invert exact same", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier, h.InvertMatch = &routev3.HeaderMatcher_ExactMatch{ExactMatch: "v"}, true
		}, "v", false, false},
		{"invert exact absent", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier, h.InvertMatch = &routev3.HeaderMatcher_ExactMatch{ExactMatch: "v"}, true
		}, "", true, false}, // a missing header matches no value matcher
		{"invert present", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier, h.InvertMatch = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}, true
		}, "", true, true},
		{"invert present present", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier, h.InvertMatch = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}, true
		}, "x", false, false},
	} {
		t.Run("header "+tc.name, func(t *testing.T) {
			var hs headerMap
			if !tc.absent {
				hs = headerMap{"x-h": tc.value}
			}
			checkMatch(t, &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
				Headers: []*routev3.HeaderMatcher{hm("X-H", tc.spec)}}, "GET", "/", hs, tc.want)
		})
	}
}

func checkMatch(t *testing.T, m *routev3.RouteMatch, method, path string, headers headerMap, want bool) {
	t.Helper()
	rc, err := compileRouteConfig(rcWith(&routev3.VirtualHost{Name: "vh", Domains: []string{"*"},
		Routes: []*routev3.Route{routeTo(m, "matched"), routeTo(prefixMatch("/"), "fallback")}}), "rc")
	if err != nil {
		t.Fatal(err)
	}
	r := rc.VirtualHost("h").Route(method, path, headers.get)
	if got := r.PickCluster(0) == "matched"; got != want {
		t.Errorf("%s %s %v: matched %v, want %v", method, path, headers, got, want)
	}
}

// What the controller does not emit is refused, naming the field.
func TestRouteConfigRefused(t *testing.T) {
	ok := func() *routev3.Route { return routeTo(prefixMatch("/"), "c") }
	with := func(f func(r *routev3.Route)) *routev3.RouteConfiguration {
		r := ok()
		f(r)
		return rcWith(&routev3.VirtualHost{Name: "vh", Domains: []string{"*"}, Routes: []*routev3.Route{r}})
	}
	pct := &typev3.FractionalPercent{Numerator: 1, Denominator: typev3.FractionalPercent_HUNDRED}
	for _, tc := range []struct {
		name string
		rc   *routev3.RouteConfiguration
		want string
	}{
		{"validate_clusters", &routev3.RouteConfiguration{Name: "rc", ValidateClusters: wrapperspb.Bool(true)}, `"rc".validate_clusters: true is not supported`},
		{"no domains", rcWith(&routev3.VirtualHost{Name: "vh"}), `virtual_hosts[0].domains: must not be empty`},
		{"domain twice", rcWith(vhost("a", "x.com"), vhost("b", "X.com")), `virtual_hosts[1].domains[0]: "x.com" is also a domain of`},
		{"wildcard in the middle", rcWith(vhost("a", "x.*.com")), `domains[0]: "x.*.com": a wildcard is`},
		{"virtual host option", rcWith(&routev3.VirtualHost{Name: "a", Domains: []string{"*"}, RequireTls: routev3.VirtualHost_ALL}), `virtual_hosts[0].require_tls: not supported`},
		{"redirect", with(func(r *routev3.Route) { r.Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{}} }), `routes[0].redirect: not supported`},
		{"query parameters", with(func(r *routev3.Route) {
			r.Match.QueryParameters = []*routev3.QueryParameterMatcher{{Name: "q"}}
		}), `routes[0].match.query_parameters: not supported`},
		{"no path", with(func(r *routev3.Route) { r.Match = &routev3.RouteMatch{} }), `routes[0].match: no path specifier`},
		{"bad regex", with(func(r *routev3.Route) {
			r.Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "(a"}}}
		}), `match.safe_regex.regex: "(a" does not compile as RE2`},
		{"header range", with(func(r *routev3.Route) {
			r.Match.Headers = []*routev3.HeaderMatcher{{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{}}}}
		}), `match.headers[0].range_match: not supported`},
		{"header ignore_case", with(func(r *routev3.Route) {
			r.Match.Headers = []*routev3.HeaderMatcher{{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "a"}, IgnoreCase: true}}}}
		}), `match.headers[0].string_match.ignore_case: not supported`},
		{"header empty prefix", with(func(r *routev3.Route) {
			r.Match.Headers = []*routev3.HeaderMatcher{{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_PrefixMatch{}}}
		}), `match.headers[0].prefix_match: must not be empty`},
		{"route option", with(func(r *routev3.Route) { r.GetRoute().PrefixRewrite = "/x" }), `routes[0].route.prefix_rewrite: not supported`},
		{"cluster header", with(func(r *routev3.Route) {
			r.GetRoute().ClusterSpecifier = &routev3.RouteAction_ClusterHeader{ClusterHeader: "x"}
		}),
			`routes[0].route.cluster_header: not supported`},
		{"weights all zero", with(func(r *routev3.Route) {
			r.GetRoute().ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
				Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "a", Weight: wrapperspb.UInt32(0)}}}}
		}), `weighted_clusters.clusters: no cluster with a weight above 0`},
		{"negative timeout", with(func(r *routev3.Route) { r.GetRoute().Timeout = durationpb.New(-time.Second) }), `route.timeout: -1s is negative`},
		{"retry_on unknown", with(func(r *routev3.Route) { r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,sometimes"} }),
			`retry_policy.retry_on: "sometimes" is not one of Envoy's retry conditions`},
		{"retry backoff", with(func(r *routev3.Route) {
			r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", RetryBackOff: &routev3.RetryPolicy_RetryBackOff{}}
		}), `retry_policy.retry_back_off: not supported`},
		{"retry host predicate", with(func(r *routev3.Route) {
			r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{
				Name: "x", ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: anyOf(t, &faultv3.HTTPFault{})}}}}
		}), `retry_host_predicate[0].typed_config: retry host predicate envoy.extensions.filters.http.fault.v3.HTTPFault is not supported`},
		{"other per-filter config", with(func(r *routev3.Route) {
			r.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.cors": anyOf(t, &faultv3.HTTPFault{})}
		}), `typed_per_filter_config["envoy.filters.http.cors"]: not supported`},
		{"fault header delay", with(func(r *routev3.Route) {
			r.TypedPerFilterConfig = map[string]*anypb.Any{httpFaultFilter: anyOf(t, &faultv3.HTTPFault{Delay: &faultcommonv3.FaultDelay{
				FaultDelaySecifier: &faultcommonv3.FaultDelay_HeaderDelay_{HeaderDelay: &faultcommonv3.FaultDelay_HeaderDelay{}}}})}
		}), `["envoy.filters.http.fault"].delay.header_delay: not supported`},
		{"fault max active", with(func(r *routev3.Route) {
			r.TypedPerFilterConfig = map[string]*anypb.Any{httpFaultFilter: anyOf(t, &faultv3.HTTPFault{MaxActiveFaults: wrapperspb.UInt32(1)})}
		}), `["envoy.filters.http.fault"].max_active_faults: not supported`},
		{"fault abort status", with(func(r *routev3.Route) {
			r.TypedPerFilterConfig = map[string]*anypb.Any{httpFaultFilter: anyOf(t, &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
				ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 600}, Percentage: pct}})}
		}), `abort.http_status: 600: want 200..599`},
		{"fault abort header", with(func(r *routev3.Route) {
			r.TypedPerFilterConfig = map[string]*anypb.Any{httpFaultFilter: anyOf(t, &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
				ErrorType: &faultv3.FaultAbort_HeaderAbort_{HeaderAbort: &faultv3.FaultAbort_HeaderAbort{}}}})}
		}), `abort.header_abort: not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore()
			err := s.Update(resource.RouteType, map[string]proto.Message{"rc": tc.rc}, "1")
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `route configuration "rc"`) {
				t.Errorf("error %v\nwant %q", err, tc.want)
			}
		})
	}
}

// Fault and retry conversions the controller's translation does not
// show: other denominators, gRPC aborts, explicit values.
func TestRouteFaultRetry(t *testing.T) {
	r := routeTo(prefixMatch("/"), "c")
	r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: " gateway-error , retriable-4xx,retriable-status-codes", RetriableStatusCodes: []uint32{418}}
	r.TypedPerFilterConfig = map[string]*anypb.Any{httpFaultFilter: anyOf(t, &faultv3.HTTPFault{
		Delay: &faultcommonv3.FaultDelay{FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(time.Second)},
			Percentage: &typev3.FractionalPercent{Numerator: 25, Denominator: typev3.FractionalPercent_HUNDRED}},
		Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 14},
			Percentage: &typev3.FractionalPercent{Numerator: 20000, Denominator: typev3.FractionalPercent_TEN_THOUSAND}},
	})}
	rc, err := compileRouteConfig(rcWith(&routev3.VirtualHost{Name: "vh", Domains: []string{"*"}, Routes: []*routev3.Route{r}}), "rc")
	if err != nil {
		t.Fatal(err)
	}
	got := rc.VirtualHosts[0].Routes[0]
	if want := (&RetryPolicy{On: RetryGatewayError | RetryRetriable4xx | RetryRetriableStatusCodes, NumRetries: 1, RetriableStatusCodes: []uint32{418}}); !cmp.Equal(want, got.Retry) {
		t.Errorf("retry %+v, want %+v", got.Retry, want)
	}
	for code, want := range map[int]bool{502: true, 503: true, 504: true, 500: false, 409: true, 418: true, 404: false} {
		if got.Retry.RetriableStatus(code) != want {
			t.Errorf("RetriableStatus(%d) = %v", code, !want)
		}
	}
	if want := (&Fault{Delay: time.Second, DelayPercent: 250000, AbortHTTPStatus: 0, AbortGRPCStatus: 14, AbortPercent: 1_000_000}); *got.Fault != *want {
		t.Errorf("fault %+v, want %+v", got.Fault, want)
	}
	if got.Timeout != DefaultRouteTimeout {
		t.Errorf("unset timeout: %v, want Envoy's %v", got.Timeout, DefaultRouteTimeout)
	}
	// Fractions over many draws.
	hits := 0
	rng := rand.New(rand.NewPCG(3, 4))
	for range 100000 {
		if got.Fault.DelayPercent.Hit(rng.Uint32()) {
			hits++
		}
	}
	if hits < 25000-800 || hits > 25000+800 {
		t.Errorf("25%% fraction hit %d of 100000", hits)
	}
}

// Cluster L7 settings the controller does not emit are refused.
func TestClusterHTTPRefused(t *testing.T) {
	base := func() *clusterv3.Cluster {
		return &clusterv3.Cluster{Name: "c", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
			LbPolicy: clusterv3.Cluster_CLUSTER_PROVIDED}
	}
	for _, tc := range []struct {
		name string
		mod  func(c *clusterv3.Cluster)
		want string
	}{
		{"success rate", func(c *clusterv3.Cluster) { c.OutlierDetection = &clusterv3.OutlierDetection{} },
			`outlier_detection.enforcing_success_rate: success-rate ejection is not supported`},
		{"outlier gateway errors", func(c *clusterv3.Cluster) {
			c.OutlierDetection = &clusterv3.OutlierDetection{EnforcingSuccessRate: wrapperspb.UInt32(0), ConsecutiveGatewayFailure: wrapperspb.UInt32(3)}
		}, `outlier_detection.consecutive_gateway_failure: not supported`},
		{"zero pending", func(c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxPendingRequests: wrapperspb.UInt32(0)}}}
		}, `thresholds[0].max_pending_requests: 0 is not supported`},
		{"retry budget", func(c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{}}}}
		}, `thresholds[0].retry_budget: not supported`},
		{"auto config", func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptions: anyOf(t, &httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_AutoConfig{AutoConfig: &httpv3.HttpProtocolOptions_AutoHttpConfig{}}})}
		}, `HttpProtocolOptions"].auto_config: not supported`},
		{"http2 option", func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptions: anyOf(t, &httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
						MaxConcurrentStreams: wrapperspb.UInt32(5)}}}}})}
		}, `http2_protocol_options.max_concurrent_streams: not supported`},
		{"idle timeout", func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptions: anyOf(t, &httpv3.HttpProtocolOptions{
				CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(time.Second)}})}
		}, `common_http_protocol_options.idle_timeout: not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mod(c)
			s := NewStore()
			err := s.Update(resource.ClusterType, map[string]proto.Message{"c": c}, "1")
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `cluster "c"`) {
				t.Errorf("error %v\nwant %q", err, tc.want)
			}
		})
	}
}

// l7Examples are the compiled route configurations of the fixture: the
// RDS ones and the inbound inline ones of both nodes.
func l7Examples(tb testing.TB) []*RouteConfig {
	var out []*RouteConfig
	for _, node := range []string{"node1", "node2"} {
		snap := storeFor(tb, map[string]string{"40-hello.yaml": grpcExtra}, node)
		for _, rc := range snap.Routes {
			out = append(out, rc)
		}
		for _, l := range []*Listener{snap.Inbound, snap.InboundPlaintext} {
			if l == nil {
				continue
			}
			for _, c := range l.Chains {
				if c.HTTP != nil && c.HTTP.Routes() != nil {
					out = append(out, c.HTTP.Routes())
				}
			}
		}
	}
	return out
}

// FuzzRouteMatch: any authority, method, path and header against the
// compiled examples: no panic, and a route found is one of its host's.
func FuzzRouteMatch(f *testing.F) {
	rcs := l7Examples(f)
	f.Add("reviews:9080", "GET", "/reviews/1", "x-canary-user", "true")
	f.Add("REVIEWS.production.svc.cluster.local", "POST", "/?q", "x", "")
	f.Add("10.96.0.11:9080", "", "", "", "")
	f.Add("[::1]:80", "\x00", "%zz", ":method", "GET")
	f.Fuzz(func(t *testing.T, authority, method, path, hname, hvalue string) {
		headers := func(name string) (string, bool) {
			if name == strings.ToLower(hname) {
				return hvalue, true
			}
			return "", false
		}
		for _, rc := range rcs {
			vh := rc.VirtualHost(authority)
			if vh == nil {
				continue
			}
			r := vh.Route(method, path, headers)
			if r == nil {
				continue
			}
			found := false
			for _, x := range vh.Routes {
				found = found || x == r
			}
			if !found || r.PickCluster(rand.Uint32()) == "" {
				t.Fatalf("route %+v not of %s, or no cluster", r, vh.Name)
			}
		}
	})
}

// l7Bench is a request on the canary's split route: authority with
// upper case, the header override absent, then present; a regex route
// too.
func l7Bench(tb testing.TB) (rc *RouteConfig, regexRC *RouteConfig) {
	snap := storeFor(tb, nil, "node1")
	rc = snap.Routes[reviews+":9080"]
	regexRC, err := compileRouteConfig(rcWith(&routev3.VirtualHost{Name: "vh", Domains: []string{"*.example.com"}, Routes: []*routev3.Route{
		{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `/api/v[0-9]+/items/[0-9]+`}},
			Headers: []*routev3.HeaderMatcher{{Name: "x-user", HeaderMatchSpecifier: sm(&matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "[a-z]+"}})}}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "r"}}}},
	}}), "rc")
	if err != nil {
		tb.Fatal(err)
	}
	return rc, regexRC
}

var benchHeaders = headerMap{"x-canary-user": "false", "x-user": "alice", "user-agent": "bench"}

func routeOnce(rc, regexRC *RouteConfig, r uint32) (string, string) {
	a := rc.VirtualHost("Reviews.production.svc.cluster.local:9080").Route("GET", "/reviews/1?x=1", benchHeaders.get).PickCluster(r)
	b := regexRC.VirtualHost("Shop.Example.com").Route("GET", "/api/v2/items/42?x", benchHeaders.get).PickCluster(r)
	return a, b
}

// VirtualHost and Route do not allocate.
func TestRouteNoAllocs(t *testing.T) {
	rc, regexRC := l7Bench(t)
	if a, b := routeOnce(rc, regexRC, 95); a != "outbound|9080|v2|"+reviews || b != "r" {
		t.Fatalf("routed to %q, %q", a, b)
	}
	if n := testing.AllocsPerRun(1000, func() { _, _ = routeOnce(rc, regexRC, 5) }); n != 0 {
		t.Errorf("%v allocations per request", n)
	}
}

func BenchmarkRouteL7(b *testing.B) {
	rc, regexRC := l7Bench(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		_, _ = routeOnce(rc, regexRC, uint32(i))
	}
}
