package xdsconf

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func hashHeader(name string, terminal bool) *routev3.RouteAction_HashPolicy {
	return &routev3.RouteAction_HashPolicy{Terminal: terminal, PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
		Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: name}}}
}

func hashCookie(name, path string, ttl *durationpb.Duration) *routev3.RouteAction_HashPolicy {
	return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{
		Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: name, Path: path, Ttl: ttl}}}
}

func hashSourceIP() *routev3.RouteAction_HashPolicy {
	return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
		ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}}
}

func hashQuery(name string) *routev3.RouteAction_HashPolicy {
	return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_QueryParameter_{
		QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: name}}}
}

// hashRoute compiles a route to cluster "c" with the hash policies.
func hashRoute(t testing.TB, hps ...*routev3.RouteAction_HashPolicy) *Route {
	t.Helper()
	r := routeTo(prefixMatch("/"), "c")
	r.GetRoute().HashPolicy = hps
	cr, err := compileL7Route(r, "route")
	if err != nil {
		t.Fatal(err)
	}
	return cr
}

func TestCompileHashPolicy(t *testing.T) {
	got := hashRoute(t, hashHeader("X-User", true), hashCookie("s", "/app", durationpb.New(time.Hour)), hashCookie("t", "", nil),
		hashSourceIP(), hashQuery("u"), &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
			ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{}}}).Hash
	want := []HashPolicy{
		{Kind: HashHeader, Name: "x-user", Terminal: true},
		{Kind: HashCookie, Name: "s", CookiePath: "/app", CookieTTL: time.Hour, CookieGenerate: true},
		{Kind: HashCookie, Name: "t"},
		{Kind: HashSourceIP},
		{Kind: HashQueryParameter, Name: "u"},
		// source_ip: false hashes nothing, and is left out.
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	for _, tc := range []struct {
		name string
		hp   *routev3.RouteAction_HashPolicy
		want string
	}{
		{"empty header", hashHeader("", false), `route.route.hash_policy[0].header.header_name: must not be empty`},
		{"header rewrite", &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{
			HeaderName: "x", RegexRewrite: &typev3.RegexMatchAndSubstitute{}}}}, `hash_policy[0].header.regex_rewrite: not supported`},
		{"empty cookie", hashCookie("", "", nil), `hash_policy[0].cookie.name: must not be empty`},
		{"bad cookie name", hashCookie("a;b", "", nil), `hash_policy[0].cookie.name: "a;b" is not a cookie name`},
		{"bad cookie path", hashCookie("a", "/x; Secure", nil), `hash_policy[0].cookie.path: "/x; Secure"`},
		{"negative ttl", hashCookie("a", "", durationpb.New(-time.Second)), `hash_policy[0].cookie.ttl: -1s is negative`},
		{"cookie attributes", &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{
			Name: "a", Attributes: []*routev3.RouteAction_HashPolicy_CookieAttribute{{Name: "SameSite", Value: "Lax"}}}}}, `hash_policy[0].cookie.attributes: not supported`},
		{"empty query parameter", hashQuery(""), `hash_policy[0].query_parameter.name: must not be empty`},
		{"filter state", &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_FilterState_{
			FilterState: &routev3.RouteAction_HashPolicy_FilterState{Key: "k"}}}, `hash_policy[0].filter_state: not supported`},
	} {
		r := routeTo(prefixMatch("/"), "c")
		r.GetRoute().HashPolicy = []*routev3.RouteAction_HashPolicy{tc.hp}
		if _, err := compileL7Route(r, "route"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

// HashKey: which policy yields a key, and how keys combine, as Envoy.
func TestHashKey(t *testing.T) {
	src := netip.MustParseAddr("10.200.1.12")
	req := func(path string, h headers) *HTTPRequest { return request("GET", path, "reviews", h) }
	hs := func(s string) uint64 { return hashString(s, 0) }
	rot := func(h uint64) uint64 { return h<<1 | h>>63 }
	gen := hashString(cookieValue(src), 0)
	for _, tc := range []struct {
		name   string
		route  *Route
		src    netip.Addr
		req    *HTTPRequest
		want   uint64
		wantOK bool
	}{
		{"no policy", hashRoute(t), src, req("/", nil), 0, false},
		{"header", hashRoute(t, hashHeader("x-user", false)), src, req("/", headers{"x-user": "alice"}), hs("alice"), true},
		{"header, upper-case policy name", hashRoute(t, hashHeader("X-User", false)), src, req("/", headers{"x-user": "alice"}), hs("alice"), true},
		{"header missing", hashRoute(t, hashHeader("x-user", false)), src, req("/", nil), 0, false},
		{"header empty", hashRoute(t, hashHeader("x-user", false)), src, req("/", headers{"x-user": ""}), hs(""), true},
		{"pseudo-header", hashRoute(t, hashHeader(":authority", false)), src, req("/", nil), hs("reviews"), true},
		{"no request", hashRoute(t, hashHeader("x-user", false)), src, nil, 0, false},
		{"cookie", hashRoute(t, hashCookie("s", "", nil)), src, req("/", headers{"cookie": "a=1; s=xyz; b=2"}), hs("xyz"), true},
		{"cookie quoted", hashRoute(t, hashCookie("s", "", nil)), src, req("/", headers{"cookie": `s="xyz"`}), hs("xyz"), true},
		{"cookie headers joined", hashRoute(t, hashCookie("s", "", nil)), src, req("/", headers{"cookie": "a=1,s=xyz"}), hs("xyz"), true},
		{"cookie name is exact", hashRoute(t, hashCookie("s", "", nil)), src, req("/", headers{"cookie": "ss=1; S=2"}), 0, false},
		{"cookie first wins", hashRoute(t, hashCookie("s", "", nil)), src, req("/", headers{"cookie": "s=1; s=2"}), hs("1"), true},
		{"cookie empty is none", hashRoute(t, hashCookie("s", "", nil)), src, req("/", headers{"cookie": "s="}), 0, false},
		{"cookie missing", hashRoute(t, hashCookie("s", "", nil)), src, req("/", headers{"cookie": "a=1"}), 0, false},
		{"cookie missing, generated", hashRoute(t, hashCookie("s", "/", durationpb.New(time.Hour))), src, req("/", nil), gen, true},
		{"cookie present, not generated", hashRoute(t, hashCookie("s", "/", durationpb.New(time.Hour))), src, req("/", headers{"cookie": "s=v"}), hs("v"), true},
		{"source ip", hashRoute(t, hashSourceIP()), src, nil, hashAddr(src), true},
		{"source ip, mapped", hashRoute(t, hashSourceIP()), netip.MustParseAddr("::ffff:10.200.1.12"), nil, hashAddr(src), true},
		{"no source", hashRoute(t, hashSourceIP()), netip.Addr{}, nil, 0, false},
		{"query", hashRoute(t, hashQuery("u")), src, req("/p?a=1&u=bob&u=eve", nil), hs("bob"), true},
		{"query not decoded", hashRoute(t, hashQuery("u")), src, req("/p?u=b%20b", nil), hs("b%20b"), true},
		{"query without value", hashRoute(t, hashQuery("u")), src, req("/p?u&a=1", nil), hs(""), true},
		{"query in fragment", hashRoute(t, hashQuery("u")), src, req("/p?a=1#u=x", nil), 0, false},
		{"no query", hashRoute(t, hashQuery("u")), src, req("/p", nil), 0, false},
		{"two keys combine", hashRoute(t, hashHeader("x-user", false), hashQuery("u")), src, req("/?u=1", headers{"x-user": "a"}), rot(hs("a")) ^ hs("1"), true},
		{"first missing", hashRoute(t, hashHeader("x-user", false), hashQuery("u")), src, req("/?u=1", nil), hs("1"), true},
		{"terminal stops", hashRoute(t, hashHeader("x-user", true), hashQuery("u")), src, req("/?u=1", headers{"x-user": "a"}), hs("a"), true},
		{"terminal without a value goes on", hashRoute(t, hashHeader("x-user", true), hashQuery("u")), src, req("/?u=1", nil), hs("1"), true},
	} {
		h, ok := tc.route.HashKey(tc.src, tc.req)
		if h != tc.want || ok != tc.wantOK {
			t.Errorf("%s: HashKey = %#x, %v, want %#x, %v", tc.name, h, ok, tc.want, tc.wantOK)
		}
	}
}

func TestSetCookie(t *testing.T) {
	src := netip.MustParseAddr("10.200.1.12")
	v := cookieValue(src)
	if len(v) != 16 || strings.Trim(v, "0123456789abcdef") != "" || v == cookieValue(netip.MustParseAddr("10.200.1.13")) {
		t.Fatalf("cookie value %q", v)
	}
	for _, tc := range []struct {
		name  string
		route *Route
		req   *HTTPRequest
		want  string
	}{
		{"ttl and path", hashRoute(t, hashCookie("s", "/app", durationpb.New(90*time.Minute))), request("GET", "/", "h", nil), `s="` + v + `"; Max-Age=5400; Path=/app; HttpOnly`},
		{"session cookie", hashRoute(t, hashCookie("s", "", durationpb.New(0))), request("GET", "/", "h", nil), `s="` + v + `"; HttpOnly`},
		{"cookie sent", hashRoute(t, hashCookie("s", "/", durationpb.New(time.Hour))), request("GET", "/", "h", headers{"cookie": "s=1"}), ""},
		{"no ttl", hashRoute(t, hashCookie("s", "/", nil)), request("GET", "/", "h", nil), ""},
		{"not reached after a terminal key", hashRoute(t, hashHeader("x", true), hashCookie("s", "/", durationpb.New(time.Hour))), request("GET", "/", "h", headers{"x": "1"}), ""},
		{"reached", hashRoute(t, hashHeader("x", true), hashCookie("s", "", durationpb.New(time.Second))), request("GET", "/", "h", nil), `s="` + v + `"; Max-Age=1; HttpOnly`},
		{"no policy", hashRoute(t), request("GET", "/", "h", nil), ""},
	} {
		if got := tc.route.SetCookie(src, tc.req); got != tc.want {
			t.Errorf("%s: SetCookie = %q, want %q", tc.name, got, tc.want)
		}
	}
	// The generated cookie, sent back, keys the same endpoint.
	r := hashRoute(t, hashCookie("s", "/", durationpb.New(time.Hour)))
	first, _ := r.HashKey(src, request("GET", "/", "h", nil))
	back, _ := r.HashKey(netip.MustParseAddr("10.9.9.9"), request("GET", "/", "h", headers{"cookie": "s=" + v}))
	if first != back {
		t.Errorf("generated key %#x, the cookie sent back %#x", first, back)
	}
}

// PickRequest by a request key: the same key, the same endpoint; keys
// spread over the endpoints; removing an endpoint moves only its keys
// (ring) or few others (Maglev); no key: at random.
func TestPickRequest(t *testing.T) {
	const keys = 10000
	r := hashRoute(t, hashHeader("x-user", false))
	key := func(i int) uint64 {
		h, ok := r.HashKey(netip.Addr{}, request("GET", "/", "h", headers{"x-user": fmt.Sprint("user-", i)}))
		if !ok {
			t.Fatal("no key")
		}
		return h
	}
	src := source(1)
	for _, tc := range []struct {
		lb      LBPolicy
		minStay float64
	}{{RingHash, 1}, {Maglev, 0.90}} {
		t.Run(tc.lb.String(), func(t *testing.T) {
			c := cluster(tc.lb, endpoints(1, 1, 1, 1))
			rebuilt := cluster(tc.lb, endpoints(1, 1, 1, 1))
			first := make([]netip.AddrPort, keys)
			got := make([]int, 4)
			for i := range keys {
				e, err := c.PickRequest(source(i), key(i), true, nil)
				if err != nil {
					t.Fatal(err)
				}
				first[i] = e.Addr
				got[index(c.Endpoints, e)]++
				// The same key from another source, on a rebuilt
				// assignment: the same endpoint.
				again, _ := rebuilt.PickRequest(src, key(i), true, nil)
				if again.Addr != e.Addr {
					t.Fatalf("key %d: %v then %v", i, e.Addr, again.Addr)
				}
			}
			for i, n := range got {
				if n < keys/4*8/10 || n > keys/4*12/10 {
					t.Errorf("endpoint %d has %d of %d keys: %v", i, n, keys, got)
				}
			}
			smaller := cluster(tc.lb, endpoints(1, 1, 1))
			stay, moved := 0, 0
			for i := range keys {
				e, _ := smaller.PickRequest(src, key(i), true, nil)
				if first[i] == c.Endpoints.Hosts[3].Addr {
					continue // the removed endpoint's keys go anywhere
				}
				if e.Addr == first[i] {
					stay++
				} else {
					moved++
				}
			}
			if share := float64(stay) / float64(stay+moved); share < tc.minStay {
				t.Errorf("%.3f of the keys of the remaining endpoints stayed, want at least %.2f", share, tc.minStay)
			}
			// Without a key: every endpoint, at random.
			seen := map[netip.AddrPort]int{}
			for range 400 {
				e, _ := c.PickRequest(src, 0, false, nil)
				seen[e.Addr]++
			}
			if len(seen) != 4 {
				t.Errorf("unhashed picks reached %d of 4 endpoints: %v", len(seen), seen)
			}
		})
	}
	// The source IP key picks as Pick does at L4.
	sip := hashRoute(t, hashSourceIP())
	for _, lb := range []LBPolicy{RingHash, Maglev} {
		c := cluster(lb, endpoints(1, 1, 1, 1, 1))
		for i := range 100 {
			h, _ := sip.HashKey(source(i).Addr(), nil)
			l7, _ := c.PickRequest(source(i), h, true, nil)
			l4, _ := c.Pick(source(i), nil)
			if l7 != l4 {
				t.Fatalf("%v source %v: L7 %v, L4 %v", lb, source(i), l7.Addr, l4.Addr)
			}
		}
	}
	// Other policies ignore the key.
	c := cluster(RoundRobin, endpoints(1, 1, 1))
	var order []int
	for range 6 {
		e, _ := c.PickRequest(src, 42, true, nil)
		order = append(order, index(c.Endpoints, e))
	}
	if fmt.Sprint(order) != "[0 1 2 0 1 2]" {
		t.Errorf("round robin with a key: %v", order)
	}
	// LEAST_REQUEST reads Active.
	eps := endpoints(1, 1)
	eps.Hosts[0].Active.Store(3)
	c = cluster(LeastRequest, eps)
	for range 20 {
		if e, _ := c.PickRequest(src, 0, false, nil); e != eps.Hosts[1] {
			t.Fatalf("least request picked the busy endpoint")
		}
	}
	// Errors as Pick; an assignment without healthy endpoints has
	// (empty) tables.
	for _, lb := range []LBPolicy{RingHash, Maglev} {
		c := cluster(lb, &Endpoints{Hosts: []*Endpoint{{Addr: ap("10.0.0.1:80")}}})
		c.Endpoints.prepare(c)
		if _, err := c.PickRequest(src, 1, true, nil); err == nil || !strings.Contains(err.Error(), "no healthy endpoint") {
			t.Errorf("%v, none healthy: %v", lb, err)
		}
	}
}

// ring_hash_lb_config and maglev_lb_config size the tables.
func TestHashTableSizes(t *testing.T) {
	ring := func(c *Cluster) int { return len(c.Endpoints.hashRing(c.ringSize()).hashes) }
	c := cluster(RingHash, endpoints(1, 1, 1, 1))
	if n := ring(c); n != 4*ringPerWeight {
		t.Errorf("default ring: %d entries", n)
	}
	c.MinRingSize = 4096
	if n := ring(c); n != 4096 {
		t.Errorf("minimum 4096: %d entries", n)
	}
	c.MinRingSize, c.MaxRingSize = 0, 100
	if n := ring(c); n != 100 {
		t.Errorf("maximum 100: %d entries", n)
	}
	m := cluster(Maglev, endpoints(1, 1, 1))
	if n := len(m.Endpoints.maglevTable(m.MaglevTableSize).slots); n != 509 {
		t.Errorf("default maglev: %d slots", n)
	}
	m.MaglevTableSize = 65537
	if n := len(m.Endpoints.maglevTable(m.MaglevTableSize).slots); n != 65537 {
		t.Errorf("maglev 65537: %d slots", n)
	}
	// Compiled from the cluster.
	base := func() *clusterv3.Cluster {
		return &clusterv3.Cluster{Name: "c", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}, LbPolicy: clusterv3.Cluster_RING_HASH}
	}
	for _, tc := range []struct {
		name string
		mod  func(*clusterv3.Cluster)
		want *Cluster // the sizes
		err  string
	}{
		{"ring", func(c *clusterv3.Cluster) {
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
				MinimumRingSize: wrapperspb.UInt64(2048), MaximumRingSize: wrapperspb.UInt64(1 << 20),
				HashFunction: clusterv3.Cluster_RingHashLbConfig_MURMUR_HASH_2}}
		}, &Cluster{MinRingSize: 2048, MaxRingSize: 1 << 20}, ""},
		{"maglev", func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_MAGLEV
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(65537)}}
		}, &Cluster{MaglevTableSize: 65537}, ""},
		{"maglev not prime", func(c *clusterv3.Cluster) {
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(65536)}}
		}, nil, `maglev_lb_config.table_size: 65536: must be a prime up to 5000011`},
		{"maglev too big", func(c *clusterv3.Cluster) {
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(5000077)}}
		}, nil, `maglev_lb_config.table_size: 5000077: must be a prime up to 5000011`},
		{"ring minimum above maximum", func(c *clusterv3.Cluster) {
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
				MinimumRingSize: wrapperspb.UInt64(2048), MaximumRingSize: wrapperspb.UInt64(1024)}}
		}, nil, `ring_hash_lb_config.minimum_ring_size: 2048 is above maximum_ring_size 1024`},
		{"ring too big", func(c *clusterv3.Cluster) {
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MaximumRingSize: wrapperspb.UInt64(1 << 30)}}
		}, nil, `ring_hash_lb_config.maximum_ring_size: 1073741824 is above 8388608`},
	} {
		c := base()
		tc.mod(c)
		s := NewStore()
		err := s.Update(resource.ClusterType, map[string]proto.Message{"c": c}, "1")
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.err)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.name, err)
		default:
			got := s.Snapshot().Clusters["c"]
			if got.MinRingSize != tc.want.MinRingSize || got.MaxRingSize != tc.want.MaxRingSize || got.MaglevTableSize != tc.want.MaglevTableSize {
				t.Errorf("%s: sizes %d %d %d", tc.name, got.MinRingSize, got.MaxRingSize, got.MaglevTableSize)
			}
		}
	}
}

// HashKey and PickRequest do not allocate.
func TestHashNoAllocs(t *testing.T) {
	src := netip.MustParseAddr("10.200.1.12")
	r := hashRoute(t, hashHeader("x-user", false), hashCookie("s", "/", durationpb.New(time.Hour)), hashSourceIP(), hashQuery("u"))
	reqs := []*HTTPRequest{
		request("GET", "/?a=1&u=2", "h", headers{"x-user": "a", "cookie": "x=1; s=2"}),
		request("GET", "/", "h", nil), // a generated cookie
	}
	for _, lb := range []LBPolicy{RingHash, Maglev, LeastRequest} {
		c := cluster(lb, endpoints(1, 2, 3))
		c.Endpoints.prepare(c)
		for _, req := range reqs {
			if n := testing.AllocsPerRun(1000, func() {
				h, ok := r.HashKey(src, req)
				if _, err := c.PickRequest(netip.AddrPortFrom(src, 1), h, ok, nil); err != nil {
					t.Fatal(err)
				}
			}); n != 0 {
				t.Errorf("%v %s: %.1f allocations", lb, req.Path, n)
			}
		}
	}
}

// consistentHashExtra: DestinationRules with consistent hashing, in
// force over the fixture's (the first by name is used): reviews by a
// header over a ring, frontend by a generated cookie over Maglev.
const consistentHashExtra = `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a-reviews-hash, namespace: production}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: X-User
        ringHash: {minimumRingSize: 2048}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: frontend, namespace: production}
spec:
  host: frontend
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie: {name: session, path: /, ttl: 3600s}
        maglev: {tableSize: 65537}
`

// DestinationRule consistentHash end to end: the controller's clusters
// and routes, compiled, and requests keyed by them.
func TestExamplesConsistentHash(t *testing.T) {
	snap := storeFor(t, map[string]string{"30-hash.yaml": consistentHashExtra}, "node1")
	for _, name := range []string{"outbound|9080||" + reviews, "outbound|9080|v1|" + reviews, "outbound|9080|v2|" + reviews} {
		c := snap.Clusters[name]
		if c == nil || c.LB != RingHash || c.MinRingSize != 2048 {
			t.Errorf("cluster %s: %+v, want RING_HASH with a minimum ring of 2048", name, c)
		}
	}
	var front *Cluster
	for name, c := range snap.Clusters {
		if strings.HasSuffix(name, "||"+frontend) {
			front = c
		}
	}
	if front == nil || front.LB != Maglev || front.MaglevTableSize != 65537 {
		t.Fatalf("frontend's cluster: %+v, want MAGLEV with 65537 slots", front)
	}
	header := []HashPolicy{{Kind: HashHeader, Name: "x-user"}}
	var rc *RouteConfig
	for name, r := range snap.Routes {
		if strings.HasPrefix(name, reviews+":") {
			rc = r
		}
	}
	if rc == nil {
		t.Fatal("no route configuration for reviews")
	}
	vh := rc.VirtualHost("reviews:9080")
	for _, name := range []string{"canary-testers", "canary-split"} {
		i := slices.IndexFunc(vh.Routes, func(r *Route) bool { return r.Name == name })
		if i < 0 {
			t.Fatalf("no route %s", name)
		}
		if d := cmp.Diff(header, vh.Routes[i].Hash); d != "" {
			t.Errorf("route %s hash (-want +got):\n%s", name, d)
		}
	}
	// A user sticks to one endpoint of the subset the split chose.
	split := vh.Route("GET", "/", nil)
	v1 := snap.Clusters["outbound|9080|v1|"+reviews]
	for _, user := range []string{"alice", "bob", "carol"} {
		req := request("GET", "/api/reviews/1", "reviews:9080", headers{"x-user": user})
		h, ok := split.HashKey(netip.MustParseAddr("10.200.1.12"), req)
		if !ok {
			t.Fatalf("%s: no key", user)
		}
		first, err := v1.PickRequest(ap("10.200.1.12:40000"), h, true, nil)
		if err != nil {
			t.Fatal(err)
		}
		for range 20 {
			if e, _ := v1.PickRequest(ap("10.200.1.99:1"), h, true, nil); e != first {
				t.Fatalf("%s: %v then %v", user, first.Addr, e.Addr)
			}
		}
	}
	// frontend: the cookie, generated for a first request.
	var fr *Route
	for name, r := range snap.Routes {
		if strings.HasPrefix(name, frontend+":") {
			fr = r.VirtualHosts[0].Routes[0]
		}
	}
	want := []HashPolicy{{Kind: HashCookie, Name: "session", CookiePath: "/", CookieTTL: time.Hour, CookieGenerate: true}}
	if fr == nil || !cmp.Equal(want, fr.Hash) {
		t.Fatalf("frontend route: %+v, want hash %+v", fr, want)
	}
	src := netip.MustParseAddr("10.200.2.12")
	if got := fr.SetCookie(src, request("GET", "/", "frontend", nil)); !strings.HasPrefix(got, `session="`) || !strings.HasSuffix(got, `"; Max-Age=3600; Path=/; HttpOnly`) {
		t.Errorf("Set-Cookie %q", got)
	}
}

// FuzzHashKey: random Cookie headers and paths through every hash
// policy kind: no panic, the same request keys the same way, and the
// parsed values come from the input.
func FuzzHashKey(f *testing.F) {
	r := hashRoute(f, hashCookie("s", "/", durationpb.New(time.Hour)), hashQuery("u"), hashHeader("x", false))
	f.Add("a=1; s=2", "/p?u=1#x", "v")
	f.Add(`s="q"`, "/?u", "")
	f.Add(";;,=s= ", "?&&u=&", "\x00")
	f.Fuzz(func(t *testing.T, cookie, path, x string) {
		req := request("GET", path, "h", headers{"cookie": cookie, "x": x})
		src := netip.MustParseAddr("10.0.0.1")
		h1, ok1 := r.HashKey(src, req)
		h2, ok2 := r.HashKey(src, req)
		if h1 != h2 || ok1 != ok2 || !ok1 {
			t.Fatalf("HashKey: %#x %v then %#x %v", h1, ok1, h2, ok2)
		}
		if v := findCookie(cookie, "s"); !strings.Contains(cookie, v) {
			t.Fatalf("cookie %q from %q", v, cookie)
		}
		if v, ok := queryParameter(path, "u"); ok && !strings.Contains(path, "u="+v) && v != "" {
			t.Fatalf("query value %q from %q", v, path)
		}
		if sc := r.SetCookie(src, req); sc != "" && findCookie(cookie, "s") != "" {
			t.Fatalf("Set-Cookie %q with the cookie sent (%q)", sc, cookie)
		}
	})
}
