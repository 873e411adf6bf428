package xdsconf

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Shorthands for Envoy RBAC matchers.
func idAny() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}
func idAnd(ids ...*rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ids}}}
}
func idOr(ids ...*rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ids}}}
}
func idNot(id *rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: id}}
}
func cidrRange(ip string, bits uint32) *corev3.CidrRange {
	return &corev3.CidrRange{AddressPrefix: ip, PrefixLen: wrapperspb.UInt32(bits)}
}
func idHeader(h *routev3.HeaderMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: h}}
}
func permAnd(ps ...*rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: ps}}}
}
func permOr(ps ...*rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: ps}}}
}
func permNot(p *rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: p}}
}
func permPort(p uint32) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: p}}
}
func permPath(sm *matcherv3.StringMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: sm}}}}
}
func prefixSM(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}

// One principal or permission at a time, against connections.
func TestRBACMatchers(t *testing.T) {
	conn := func(principal, src, dst, sni string) AuthzInput {
		return AuthzInput{Principal: principal, Source: ap(src), Destination: ap(dst), ServerName: sni}
	}
	frontend := conn(idFrontend, "10.200.1.12:4000", "10.200.1.11:9080", "")
	plain := conn("", "10.200.1.12:4000", "10.200.1.11:9080", "")
	other := conn(idRatings, "10.1.2.3:4000", "10.200.1.11:7000", "reviews.local")
	headerX := &routev3.HeaderMatcher{Name: "x-request-id", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exactSM("")},
		TreatMissingHeaderAsEmpty: true}
	for _, tc := range []struct {
		name       string
		principal  *rbacv3.Principal
		permission *rbacv3.Permission
		deny       bool
		httpAtL4   bool
		in         AuthzInput
		want       bool
	}{
		{name: "any", principal: idAny(), in: plain, want: true},
		{name: "exact principal", principal: principalName(exactSM(idFrontend)), in: frontend, want: true},
		{name: "exact principal, other", principal: principalName(exactSM(idFrontend)), in: other, want: false},
		{name: "exact principal, plaintext", principal: principalName(exactSM(idFrontend)), in: plain, want: false},
		{name: "prefix principal", principal: principalName(prefixSM("spiffe://cluster.local/ns/production/")), in: other, want: true},
		{name: "suffix principal", principal: principalName(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "/sa/frontend"}}), in: frontend, want: true},
		{name: "contains principal ignore case", principal: principalName(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "/NS/PRODUCTION/"}, IgnoreCase: true}), in: frontend, want: true},
		{name: "namespace regex", principal: principalName(regexSM(".*/ns/production/.*")), in: frontend, want: true},
		{name: "namespace regex matches whole", principal: principalName(regexSM("/ns/production/")), in: frontend, want: false},
		{name: "any authenticated", principal: principalName(regexSM(".+")), in: plain, want: false},
		{name: "authenticated, no name", principal: &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{}}}, in: frontend, want: true},
		{name: "direct remote ip", principal: &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidrRange("10.200.1.0", 24)}}, in: frontend, want: true},
		{name: "remote ip", principal: &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidrRange("10.200.1.0", 24)}}, in: other, want: false},
		{name: "source ip", principal: &rbacv3.Principal{Identifier: &rbacv3.Principal_SourceIp{SourceIp: cidrRange("10.1.2.3", 32)}}, in: other, want: true},
		{name: "and", principal: idAnd(principalName(exactSM(idFrontend)), &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidrRange("10.200.1.12", 32)}}), in: frontend, want: true},
		{name: "and, one fails", principal: idAnd(principalName(exactSM(idFrontend)), &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidrRange("10.9.0.0", 16)}}), in: frontend, want: false},
		{name: "or", principal: idOr(principalName(exactSM(idRatings)), principalName(exactSM(idFrontend))), in: frontend, want: true},
		{name: "not", principal: idNot(principalName(exactSM(idFrontend))), in: other, want: true},
		// Network RBAC: Envoy's semantics for the missing header.
		{name: "network header, missing", principal: idHeader(&routev3.HeaderMatcher{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "1"}}), in: frontend, want: false},
		{name: "network header, absent wanted", principal: idHeader(&routev3.HeaderMatcher{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}}), in: frontend, want: true},
		{name: "network header, missing as empty", principal: idNot(idHeader(headerX)), in: frontend, want: false},
		// HTTP RBAC at L4: the request is unknown, fail closed. ALLOW
		// matches less, DENY more, whatever the negations.
		{name: "http header allow", principal: idHeader(headerX), httpAtL4: true, in: frontend, want: false},
		{name: "http not header allow", principal: idNot(idHeader(headerX)), httpAtL4: true, in: frontend, want: false},
		{name: "http header deny", principal: idHeader(headerX), deny: true, httpAtL4: true, in: frontend, want: true},
		{name: "http not header deny", principal: idNot(idHeader(headerX)), deny: true, httpAtL4: true, in: frontend, want: true},
		{name: "http path allow", permission: permPath(prefixSM("/api/")), httpAtL4: true, in: frontend, want: false},
		{name: "http not not path allow", permission: permNot(permNot(permPath(prefixSM("/api/")))), httpAtL4: true, in: frontend, want: false},
		{name: "http not path deny", permission: permNot(permPath(prefixSM("/api/"))), deny: true, httpAtL4: true, in: frontend, want: true},
		{name: "network path", permission: permPath(prefixSM("/")), in: frontend, want: false},
		{name: "port", permission: permPort(9080), in: frontend, want: true},
		{name: "port, other", permission: permPort(9080), in: other, want: false},
		{name: "port range", permission: &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPortRange{DestinationPortRange: &typev3.Int32Range{Start: 9000, End: 9081}}}, in: frontend, want: true},
		{name: "port range, end excluded", permission: &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPortRange{DestinationPortRange: &typev3.Int32Range{Start: 9000, End: 9080}}}, in: frontend, want: false},
		{name: "destination ip", permission: &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidrRange("10.200.1.11", 32)}}, in: frontend, want: true},
		{name: "sni", permission: &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: exactSM("reviews.local")}}, in: other, want: true},
		{name: "sni, none", permission: &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: exactSM("reviews.local")}}, in: frontend, want: false},
		{name: "and rules", permission: permAnd(permPort(7000), &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: regexSM(`reviews\..*`)}}), in: other, want: true},
		{name: "or rules", permission: permOr(permPort(1), permPort(9080)), in: frontend, want: true},
		{name: "not rule", permission: permNot(permPort(9080)), in: frontend, want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &rbacv3.Policy{Principals: []*rbacv3.Principal{idAny()}, Permissions: []*rbacv3.Permission{anyPermission()}}
			if tc.principal != nil {
				p.Principals = []*rbacv3.Principal{tc.principal}
			}
			if tc.permission != nil {
				p.Permissions = []*rbacv3.Permission{tc.permission}
			}
			action := rbacv3.RBAC_ALLOW
			if tc.deny {
				action = rbacv3.RBAC_DENY
			}
			f, deny, err := compileRBAC(&rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{"p": p}}, map[bool]rbacMode{false: rbacNetwork, true: rbacHTTPAtL4}[tc.httpAtL4], "rbac")
			if err != nil {
				t.Fatal(err)
			}
			if deny != tc.deny || len(f.Policies) != 1 {
				t.Fatalf("deny %v, %d policies", deny, len(f.Policies))
			}
			if got := f.Policies[0].Match(tc.in); got != tc.want {
				t.Errorf("Match = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRBACRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    *rbacv3.Policy
		want string
	}{
		{"no principals", &rbacv3.Policy{Permissions: []*rbacv3.Permission{anyPermission()}}, `policies["p"].principals: must not be empty`},
		{"no permissions", &rbacv3.Policy{Principals: []*rbacv3.Principal{idAny()}}, `policies["p"].permissions: must not be empty`},
		{"CEL condition", &rbacv3.Policy{Principals: []*rbacv3.Principal{idAny()}, Permissions: []*rbacv3.Permission{anyPermission()},
			CelConfig: &corev3.CelExpressionConfig{EnableStringConversion: true}}, `policies["p"].cel_config: not supported`},
		{"accepted", &rbacv3.Policy{Principals: []*rbacv3.Principal{idAny()}, Permissions: []*rbacv3.Permission{anyPermission()}}, ""},
		{"metadata permission", &rbacv3.Policy{Principals: []*rbacv3.Principal{idAny()}, Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Metadata{}}}},
			`permissions[0]: permission metadata is not supported`},
		{"empty and_ids", &rbacv3.Policy{Principals: []*rbacv3.Principal{idAnd()}, Permissions: []*rbacv3.Permission{anyPermission()}},
			`principals[0].and_ids.ids: must not be empty`},
		{"bad cidr", &rbacv3.Policy{Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidrRange("10.0.0.300", 8)}}}, Permissions: []*rbacv3.Permission{anyPermission()}},
			`principals[0].remote_ip.address_prefix: "10.0.0.300" is not an IP address`},
		{"bad port range", &rbacv3.Policy{Principals: []*rbacv3.Principal{idAny()}, Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_DestinationPortRange{DestinationPortRange: nil}}}},
			`permissions[0].destination_port_range: start 0 must be below end 0`},
		{"regex in a header", &rbacv3.Policy{Principals: []*rbacv3.Principal{idHeader(&routev3.HeaderMatcher{Name: "x",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: "a("}}})}, Permissions: []*rbacv3.Permission{anyPermission()}},
			`principals[0].header.safe_regex_match.regex`},
		{"any false", &rbacv3.Policy{Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{}}}, Permissions: []*rbacv3.Permission{anyPermission()}},
			`principals[0].any: must be true`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := compileRBAC(&rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{"p": tc.p}}, rbacHTTP, "rbac")
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
	if _, _, err := compileRBAC(&rbacv3.RBAC{Action: rbacv3.RBAC_LOG}, rbacNetwork, "rbac"); err == nil || !strings.Contains(err.Error(), "rbac.action: LOG") {
		t.Errorf("LOG action: %v", err)
	}
}

// DENY first, ALLOW next, policies by name.
func TestRBACEvaluate(t *testing.T) {
	match := func(name string, ok bool) *Policy {
		return &Policy{Name: name, Match: func(AuthzInput) bool { return ok }}
	}
	for _, tc := range []struct {
		name string
		r    *RBAC
		want Decision
	}{
		{"nil", nil, Decision{Allowed: true}},
		{"empty", &RBAC{}, Decision{Allowed: true}},
		{"deny matches", &RBAC{Deny: &RBACFilter{Policies: []*Policy{match("d0", false), match("d1", true)}}, Allow: &RBACFilter{Policies: []*Policy{match("a", true)}}}, Decision{Policy: "d1"}},
		{"deny does not match, no allow", &RBAC{Deny: &RBACFilter{Policies: []*Policy{match("d0", false)}}}, Decision{Allowed: true}},
		{"allow matches", &RBAC{Deny: &RBACFilter{Policies: []*Policy{match("d0", false)}}, Allow: &RBACFilter{Policies: []*Policy{match("a0", false), match("a1", true), match("a2", true)}}}, Decision{Allowed: true, Policy: "a1"}},
		{"allow does not match", &RBAC{Allow: &RBACFilter{Policies: []*Policy{match("a0", false)}}}, Decision{}},
		{"allow without policies", &RBAC{Allow: &RBACFilter{}}, Decision{}},
	} {
		if got := tc.r.Evaluate(AuthzInput{}); got != tc.want {
			t.Errorf("%s: Evaluate = %+v, want %+v", tc.name, got, tc.want)
		}
	}
	// Policy order is by name, as Envoy's sorted map.
	f, _, err := compileRBAC(&rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
		"b": {Principals: []*rbacv3.Principal{idAny()}, Permissions: []*rbacv3.Permission{anyPermission()}},
		"a": {Principals: []*rbacv3.Principal{idAny()}, Permissions: []*rbacv3.Permission{anyPermission()}},
		"c": {Principals: []*rbacv3.Principal{idAny()}, Permissions: []*rbacv3.Permission{anyPermission()}},
	}}, rbacNetwork, "rbac")
	if err != nil {
		t.Fatal(err)
	}
	if d := (&RBAC{Allow: f}).Evaluate(AuthzInput{}); d.Policy != "a" {
		t.Errorf("first policy by name: %q", d.Policy)
	}
}
