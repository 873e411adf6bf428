package xdsconf

import (
	"strings"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// headers is a request's headers by lower-case name, as the proxy
// reports them to HTTPRequest.Header.
type headers map[string]string

func (h headers) get(name string) (string, bool) {
	v, ok := h[name]
	return v, ok
}

func request(method, path, authority string, h headers) *HTTPRequest {
	return &HTTPRequest{Method: method, Path: path, Authority: authority, Scheme: "http", Header: h.get}
}

func permHeader(h *routev3.HeaderMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: h}}
}

func hdr(name string, set func(*routev3.HeaderMatcher)) *routev3.HeaderMatcher {
	h := &routev3.HeaderMatcher{Name: name}
	if set != nil {
		set(h)
	}
	return h
}

func strMatch(sm *matcherv3.StringMatcher) func(*routev3.HeaderMatcher) {
	return func(h *routev3.HeaderMatcher) {
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
	}
}

// One request matcher at a time, per request, against Envoy's
// HeaderUtility and PathMatcher semantics.
func TestHTTPRBACMatchers(t *testing.T) {
	get := request("GET", "/api/reviews/1?x=1#frag", "Reviews.production:9080", headers{"x-request-id": "abc", "x-empty": "", "x-n": "42", "x-multi": "a,b"})
	noHeaders := &HTTPRequest{Method: "POST", Path: "/", Authority: "reviews"}
	present := func(v bool) func(*routev3.HeaderMatcher) {
		return func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: v}
		}
	}
	invert := func(set func(*routev3.HeaderMatcher)) func(*routev3.HeaderMatcher) {
		return func(h *routev3.HeaderMatcher) { set(h); h.InvertMatch = true }
	}
	missingEmpty := func(set func(*routev3.HeaderMatcher)) func(*routev3.HeaderMatcher) {
		return func(h *routev3.HeaderMatcher) { set(h); h.TreatMissingHeaderAsEmpty = true }
	}
	exact := func(v string) func(*routev3.HeaderMatcher) { return strMatch(exactSM(v)) }
	for _, tc := range []struct {
		name string
		perm *rbacv3.Permission
		deny bool
		req  *HTTPRequest
		want bool
	}{
		{"exact", permHeader(hdr("x-request-id", exact("abc"))), false, get, true},
		{"exact, other value", permHeader(hdr("x-request-id", exact("abd"))), false, get, false},
		{"name is case-insensitive", permHeader(hdr("X-Request-ID", exact("abc"))), false, get, true},
		{"exact, missing", permHeader(hdr("x-missing", exact(""))), false, get, false},
		{"exact, missing, inverted", permHeader(hdr("x-missing", invert(exact("v")))), false, get, false},
		{"exact, missing as empty", permHeader(hdr("x-missing", missingEmpty(exact("")))), false, get, true},
		{"not empty, missing as empty", permHeader(hdr("x-missing", missingEmpty(invert(exact(""))))), false, get, false},
		{"not empty, empty value", permHeader(hdr("x-empty", missingEmpty(invert(exact(""))))), false, get, false},
		{"not empty, set", permHeader(hdr("x-request-id", missingEmpty(invert(exact(""))))), false, get, true},
		{"joined values", permHeader(hdr("x-multi", exact("a,b"))), false, get, true},
		{"deprecated exact_match empty matches any value", permHeader(hdr("x-request-id", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_ExactMatch{}
		})), false, get, true},
		{"prefix", permHeader(hdr("x-request-id", strMatch(prefixSM("ab")))), false, get, true},
		{"suffix, ignore case", permHeader(hdr("x-request-id", strMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "BC"}, IgnoreCase: true}))), false, get, true},
		{"contains", permHeader(hdr("x-request-id", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_ContainsMatch{ContainsMatch: "b"}
		})), false, get, true},
		{"regex is whole", permHeader(hdr("x-request-id", strMatch(regexSM("b")))), false, get, false},
		{"regex", permHeader(hdr("x-request-id", strMatch(regexSM("a.c")))), false, get, true},
		{"range", permHeader(hdr("x-n", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 40, End: 43}}
		})), false, get, true},
		{"range, end excluded", permHeader(hdr("x-n", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 40, End: 42}}
		})), false, get, false},
		{"range, not a number", permHeader(hdr("x-request-id", func(h *routev3.HeaderMatcher) {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 0, End: 1 << 40}}
		})), false, get, false},
		{"present", permHeader(hdr("x-empty", present(true))), false, get, true},
		{"present, missing", permHeader(hdr("x-missing", present(true))), false, get, false},
		{"absent wanted, missing", permHeader(hdr("x-missing", present(false))), false, get, true},
		{"present inverted, missing", permHeader(hdr("x-missing", invert(present(true)))), false, get, true},
		{"no specifier is present", permHeader(hdr("x-request-id", nil)), false, get, true},
		{"no headers at all", permHeader(hdr("x-request-id", present(true))), false, noHeaders, false},
		{":method", permHeader(hdr(":method", exact("GET"))), false, get, true},
		{":method, other", permHeader(hdr(":method", exact("GET"))), false, noHeaders, false},
		{":authority, ignore case", permHeader(hdr(":authority", strMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "reviews.production:9080"}, IgnoreCase: true}))), false, get, true},
		{":authority, case", permHeader(hdr(":authority", exact("reviews.production:9080"))), false, get, false},
		{":path has the query", permHeader(hdr(":path", exact("/api/reviews/1?x=1#frag"))), false, get, true},
		{":scheme", permHeader(hdr(":scheme", exact("http"))), false, get, true},
		{":scheme, unset", permHeader(hdr(":scheme", present(true))), false, noHeaders, false},
		{"url_path without query and fragment", permPath(exactSM("/api/reviews/1")), false, get, true},
		{"url_path prefix", permPath(prefixSM("/api/reviews/")), false, get, true},
		{"url_path is not the query", permPath(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "x=1"}}), false, get, false},
		{"url_path regex", permPath(regexSM(`/api/reviews/[0-9]+`)), false, get, true},
		{"not url_path", permNot(permPath(prefixSM("/api/"))), false, get, false},
		{"not url_path, deny", permNot(permPath(prefixSM("/other/"))), true, get, true},
		// Without a request, the L4 answer: fail closed.
		{"no request, allow", permPath(prefixSM("/api/")), false, nil, false},
		{"no request, not, allow", permNot(permPath(prefixSM("/api/"))), false, nil, false},
		{"no request, deny", permPath(prefixSM("/api/")), true, nil, true},
		{"no request, not, deny", permNot(permHeader(hdr("x", present(true)))), true, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			action := rbacv3.RBAC_ALLOW
			if tc.deny {
				action = rbacv3.RBAC_DENY
			}
			f, _, err := compileRBAC(&rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{
				"p": {Principals: []*rbacv3.Principal{idAny()}, Permissions: []*rbacv3.Permission{tc.perm}},
			}}, rbacHTTP, "rbac")
			if err != nil {
				t.Fatal(err)
			}
			in := AuthzInput{Principal: idFrontend, Source: ap("10.200.1.12:4000"), Destination: ap("10.200.1.11:9080"), Request: tc.req}
			if got := f.Policies[0].Match(in); got != tc.want {
				t.Errorf("Match = %v, want %v", got, tc.want)
			}
			// The same filter as a principal header matcher decides alike.
			if h := tc.perm.GetHeader(); h != nil {
				f, _, err := compileRBAC(&rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{
					"p": {Principals: []*rbacv3.Principal{idHeader(h)}, Permissions: []*rbacv3.Permission{anyPermission()}},
				}}, rbacHTTP, "rbac")
				if err != nil {
					t.Fatal(err)
				}
				if got := f.Policies[0].Match(in); got != tc.want {
					t.Errorf("as a principal: Match = %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// A bad range is refused wherever the filter is.
func TestHTTPRBACRefuses(t *testing.T) {
	bad := permHeader(hdr("x", func(h *routev3.HeaderMatcher) {
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 5, End: 5}}
	}))
	for _, mode := range []rbacMode{rbacNetwork, rbacHTTPAtL4, rbacHTTP} {
		_, _, err := compileRBAC(&rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
			"p": {Principals: []*rbacv3.Principal{idAny()}, Permissions: []*rbacv3.Permission{bad}},
		}}, mode, "rbac")
		if err == nil || !strings.Contains(err.Error(), `rbac.policies["p"].permissions[0].header.range_match: start 5 must be below end 5`) {
			t.Errorf("mode %d: %v", mode, err)
		}
	}
}

// reviewsPolicies are AuthorizationPolicies on reviews beside the
// fixture's (examples/21-reviews-authorizationpolicy.yaml): a DENY
// policy, and ALLOW rules on hosts, methods, paths and headers.
const reviewsPolicies = `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-deny, namespace: production}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["*/admin"]}}]
  - when: [{key: "request.headers[x-evil]", values: ["*"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-more, namespace: production}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from: [{source: {namespaces: [staging]}}]
    to: [{operation: {hosts: ["reviews.production.svc.cluster.local", "*.example.com"], methods: ["GET", "HEAD"]}}]
  - to: [{operation: {paths: ["/public/*"], notMethods: ["DELETE"]}}]
    when: [{key: "request.headers[x-tenant]", values: ["acme", "beta*"]}]
  - to: [{operation: {paths: ["/exact"]}}]
`

const (
	allowFrontend = "ns[production]-policy[reviews-allow-frontend]-rule[0]"
	allowStaging  = "ns[production]-policy[reviews-more]-rule[0]"
	allowTenant   = "ns[production]-policy[reviews-more]-rule[1]"
	allowExact    = "ns[production]-policy[reviews-more]-rule[2]"
	denyAdmin     = "ns[production]-policy[reviews-deny]-rule[0]"
	denyEvil      = "ns[production]-policy[reviews-deny]-rule[1]"
)

// reviewsChain is the inbound HTTP chain of reviews-v1:9080 on node1.
func reviewsChain(t testing.TB, extra map[string]string) *FilterChain {
	t.Helper()
	snap := storeFor(t, extra, "node1")
	c := snap.Inbound.Match(MatchInput{Destination: ap("10.200.1.11:9080"), Source: ap("10.200.1.12:40000")})
	if c == nil || c.HTTP == nil || c.Name != "production/reviews-v1|9080" {
		t.Fatalf("chain %+v, want the HTTP chain production/reviews-v1|9080", c)
	}
	if c.HTTP.RBAC == nil {
		t.Fatal("HTTP chain without RBAC, the fixture has an ALLOW policy")
	}
	return c
}

// L7 authorization of the fixture's policy, and of more policies, as
// Istio decides them: compiled through the controller, request by
// request.
func TestExamplesHTTPAuthorization(t *testing.T) {
	const staging = "spiffe://cluster.local/ns/staging/sa/tester"
	rid := headers{"x-request-id": "7f9c"}
	type tcase struct {
		name      string
		principal string
		req       *HTTPRequest
		want      Decision
	}
	fixture := []tcase{
		{"frontend GET with x-request-id", idFrontend, request("GET", "/api/reviews/1", "reviews:9080", rid), Decision{Allowed: true, Policy: allowFrontend}},
		{"query is not the path", idFrontend, request("GET", "/api/reviews/1?page=2", "reviews:9080", rid), Decision{Allowed: true, Policy: allowFrontend}},
		{"prefix wildcard, trailing slash", idFrontend, request("GET", "/api/reviews/", "reviews", rid), Decision{Allowed: true, Policy: allowFrontend}},
		{"POST", idFrontend, request("POST", "/api/reviews/1", "reviews:9080", rid), Decision{}},
		{"lower-case method", idFrontend, request("get", "/api/reviews/1", "reviews:9080", rid), Decision{}},
		{"other path", idFrontend, request("GET", "/other", "reviews:9080", rid), Decision{}},
		{"path without the slash", idFrontend, request("GET", "/api/reviews", "reviews:9080", rid), Decision{}},
		{"missing x-request-id", idFrontend, request("GET", "/api/reviews/1", "reviews:9080", headers{}), Decision{}},
		{"empty x-request-id", idFrontend, request("GET", "/api/reviews/1", "reviews:9080", headers{"x-request-id": ""}), Decision{}},
		{"another identity", idRatings, request("GET", "/api/reviews/1", "reviews:9080", rid), Decision{}},
		{"plaintext", "", request("GET", "/api/reviews/1", "reviews:9080", rid), Decision{}},
	}
	t.Run("fixture", func(t *testing.T) {
		c := reviewsChain(t, nil)
		for _, tc := range fixture {
			in := AuthzInput{Principal: tc.principal, Source: ap("10.200.1.12:40000"), Destination: ap("10.200.1.11:9080"), Request: tc.req}
			if got := c.HTTP.RBAC.Evaluate(in); got != tc.want {
				t.Errorf("%s: Evaluate = %+v, want %+v", tc.name, got, tc.want)
			}
			// The L4 view is unchanged: no connection is allowed; and
			// without a request the L7 view says the same.
			in.Request = nil
			if got := c.RBAC.Evaluate(in); got.Allowed {
				t.Errorf("%s: L4 Evaluate = %+v, want denied (fail closed)", tc.name, got)
			}
			if got, l4 := c.HTTP.RBAC.Evaluate(in), c.RBAC.Evaluate(in); got != l4 {
				t.Errorf("%s: L7 without a request = %+v, L4 = %+v", tc.name, got, l4)
			}
		}
	})
	t.Run("more policies", func(t *testing.T) {
		c := reviewsChain(t, map[string]string{"30-reviews-more.yaml": reviewsPolicies})
		for _, tc := range append(fixture[:4:4], []tcase{
			// DENY goes first, whatever ALLOW says.
			{"admin path denied", idFrontend, request("GET", "/api/reviews/admin", "reviews", rid), Decision{Policy: denyAdmin}},
			{"suffix wildcard needs the suffix", idFrontend, request("GET", "/api/reviews/admin2", "reviews", rid), Decision{Allowed: true, Policy: allowFrontend}},
			{"x-evil present, even empty", idFrontend, request("GET", "/api/reviews/1", "reviews", headers{"x-request-id": "1", "x-evil": ""}), Decision{Policy: denyEvil}},
			{"both deny rules: the first by name", idFrontend, request("GET", "/admin", "reviews", headers{"x-evil": "1"}), Decision{Policy: denyAdmin}},
			// hosts: case-insensitive, port-sensitive, "*" wildcards.
			{"staging, host", staging, request("GET", "/x", "reviews.production.svc.cluster.local", nil), Decision{Allowed: true, Policy: allowStaging}},
			{"staging, host in upper case", staging, request("HEAD", "/x", "REVIEWS.Production.svc.cluster.local", nil), Decision{Allowed: true, Policy: allowStaging}},
			{"staging, host with a port", staging, request("GET", "/x", "reviews.production.svc.cluster.local:9080", nil), Decision{}},
			{"staging, wildcard host", staging, request("GET", "/x", "api.Example.com", nil), Decision{Allowed: true, Policy: allowStaging}},
			{"staging, wildcard host needs the dot", staging, request("GET", "/x", "example.com", nil), Decision{}},
			{"staging, POST", staging, request("POST", "/x", "reviews.production.svc.cluster.local", nil), Decision{}},
			{"frontend is not staging", idFrontend, request("GET", "/x", "reviews.production.svc.cluster.local", nil), Decision{}},
			// when request.headers: values with wildcards, notMethods.
			{"tenant acme", "", request("PUT", "/public/a", "reviews", headers{"x-tenant": "acme"}), Decision{Allowed: true, Policy: allowTenant}},
			{"tenant prefix", "", request("GET", "/public/a", "reviews", headers{"x-tenant": "beta-2"}), Decision{Allowed: true, Policy: allowTenant}},
			{"tenant other", "", request("GET", "/public/a", "reviews", headers{"x-tenant": "gamma"}), Decision{}},
			{"tenant missing", "", request("GET", "/public/a", "reviews", nil), Decision{}},
			{"tenant, DELETE", "", request("DELETE", "/public/a", "reviews", headers{"x-tenant": "acme"}), Decision{}},
			{"exact path", "", request("GET", "/exact?q", "reviews", nil), Decision{Allowed: true, Policy: allowExact}},
			{"exact path, longer", "", request("GET", "/exact/", "reviews", nil), Decision{}},
		}...) {
			in := AuthzInput{Principal: tc.principal, Source: ap("10.200.1.12:40000"), Destination: ap("10.200.1.11:9080"), Request: tc.req}
			if got := c.HTTP.RBAC.Evaluate(in); got != tc.want {
				t.Errorf("%s: Evaluate = %+v, want %+v", tc.name, got, tc.want)
			}
		}
	})
}

// Evaluate per request does not allocate.
func TestHTTPRBACAllocs(t *testing.T) {
	c := reviewsChain(t, map[string]string{"30-reviews-more.yaml": reviewsPolicies})
	reqs := []*HTTPRequest{
		request("GET", "/api/reviews/1", "reviews:9080", headers{"x-request-id": "1"}),
		request("GET", "/public/a", "api.example.com", headers{"x-tenant": "beta-1"}),
		request("POST", "/admin", "reviews", nil),
	}
	for _, r := range reqs {
		in := AuthzInput{Principal: "spiffe://cluster.local/ns/staging/sa/x", Source: ap("10.200.1.12:4000"), Destination: ap("10.200.1.11:9080"), Request: r}
		if n := testing.AllocsPerRun(1000, func() { c.HTTP.RBAC.Evaluate(in) }); n != 0 {
			t.Errorf("%s %s: %.1f allocations per Evaluate", r.Method, r.Path, n)
		}
	}
}

// FuzzHTTPRBAC evaluates random requests against the fixture's policies
// and more (DENY and ALLOW, paths, hosts, methods, headers): no panic,
// and the decision is the one its policies' matches imply.
func FuzzHTTPRBAC(f *testing.F) {
	c := reviewsChain(f, map[string]string{"30-reviews-more.yaml": reviewsPolicies})
	f.Add("GET", "/api/reviews/1", "reviews:9080", "x-request-id", "abc", idFrontend)
	f.Add("GET", "/api/reviews/admin", "reviews", "x-evil", "", idFrontend)
	f.Add("HEAD", "/x?y#z", "A.example.com", "x-tenant", "beta", "spiffe://cluster.local/ns/staging/sa/a")
	f.Add("", "", "", "", "", "")
	f.Add("DELETE", "/public/\x00", "\xff", ":method", "GET", "spiffe://x")
	f.Fuzz(func(t *testing.T, method, path, authority, name, value, principal string) {
		h := headers{strings.ToLower(name): value}
		in := AuthzInput{Principal: principal, Source: ap("10.200.1.12:4000"), Destination: ap("10.200.1.11:9080"),
			Request: &HTTPRequest{Method: method, Path: path, Authority: authority, Header: h.get}}
		r := c.HTTP.RBAC
		got := r.Evaluate(in)
		if again := r.Evaluate(in); again != got {
			t.Fatalf("not deterministic: %+v then %+v", got, again)
		}
		var denied, allowed string
		for _, p := range r.Deny.Policies {
			if p.Match(in) && denied == "" {
				denied = p.Name
			}
		}
		for _, p := range r.Allow.Policies {
			if p.Match(in) && allowed == "" {
				allowed = p.Name
			}
		}
		switch {
		case denied != "":
			if got != (Decision{Policy: denied}) {
				t.Fatalf("DENY %s matches, Evaluate = %+v", denied, got)
			}
		case allowed != "":
			if got != (Decision{Allowed: true, Policy: allowed}) {
				t.Fatalf("ALLOW %s matches, no DENY, Evaluate = %+v", allowed, got)
			}
		default:
			if got != (Decision{}) {
				t.Fatalf("no policy matches, Evaluate = %+v", got)
			}
		}
		// Fail closed at L4: a connection L4 allows has every request
		// allowed (ALLOW matches less at L4, DENY more).
		in.Request = nil
		if c.RBAC.Evaluate(in).Allowed && !got.Allowed {
			t.Fatalf("L4 allows the connection, L7 denies %q %q: %+v", method, path, got)
		}
	})
}
