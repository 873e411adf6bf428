package xdsconf

import (
	"fmt"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// Evaluate decides a connection: a nil RBAC allows everything; the DENY
// filter goes first (the first matching policy by name denies, and names
// the decision); then, when there is an ALLOW filter, the first matching
// policy allows and no match denies with Policy ""; with no ALLOW filter
// what DENY did not match is allowed. It does not allocate.
func (r *RBAC) Evaluate(in AuthzInput) Decision {
	if r == nil {
		return Decision{Allowed: true}
	}
	if r.Deny != nil {
		for _, p := range r.Deny.Policies {
			if p.Match(in) {
				return Decision{Policy: p.Name}
			}
		}
	}
	if r.Allow != nil {
		for _, p := range r.Allow.Policies {
			if p.Match(in) {
				return Decision{Allowed: true, Policy: p.Name}
			}
		}
		return Decision{}
	}
	return Decision{Allowed: true}
}

// matcher is a compiled principal or permission.
type matcher = func(AuthzInput) bool

func matchAll(AuthzInput) bool  { return true }
func matchNone(AuthzInput) bool { return false }

// rbacCompiler compiles one RBAC filter's rules.
//
// httpAtL4 is set for HTTP RBAC filters (envoy.filters.http.rbac) that
// the slow path enforces per connection: it sees no request, so a
// matcher on the request (header, url_path) cannot be decided, and is
// decided the way docs/xds.md's fail-closed rule says: in an ALLOW
// filter the policy must match less, in a DENY filter more. Which
// constant achieves that depends on how many not_id/not_rule enclose
// the matcher (neg), so the constant is deny XOR neg. The result is
// never broader than the policy for ALLOW, never narrower for DENY.
//
// In a network RBAC filter (envoy.filters.network.rbac) the same
// matchers follow Envoy's own network-filter semantics: there are no
// headers, so a header matcher sees a missing header, and url_path never
// matches.
type rbacCompiler struct {
	deny     bool
	httpAtL4 bool
}

// undecidable is the value of a request matcher an L4 decision cannot
// evaluate (see rbacCompiler).
func (c *rbacCompiler) undecidable(neg bool) matcher {
	if c.deny != neg {
		return matchAll
	}
	return matchNone
}

// compileRBAC compiles an Envoy RBAC (one filter's rules) into a filter
// with its policies sorted by name (Envoy keeps them in a sorted map, so
// "the first matching policy" is the first by name). It returns the
// action so the caller can place it.
func compileRBAC(rules *rbacv3.RBAC, httpAtL4 bool, path string) (*RBACFilter, bool, error) {
	if err := onlyFields(rules, path, "action", "policies"); err != nil {
		return nil, false, err
	}
	var deny bool
	switch rules.GetAction() {
	case rbacv3.RBAC_ALLOW:
	case rbacv3.RBAC_DENY:
		deny = true
	default:
		return nil, false, errorf(path+".action", "%s is not supported: the slow path enforces ALLOW and DENY", rules.GetAction())
	}
	c := &rbacCompiler{deny: deny, httpAtL4: httpAtL4}
	names := make([]string, 0, len(rules.GetPolicies()))
	for name := range rules.GetPolicies() {
		names = append(names, name)
	}
	slices.Sort(names)
	f := &RBACFilter{Policies: make([]*Policy, 0, len(names))}
	for _, name := range names {
		p, err := c.policy(rules.GetPolicies()[name], fmt.Sprintf("%s.policies[%q]", path, name))
		if err != nil {
			return nil, false, err
		}
		f.Policies = append(f.Policies, &Policy{Name: name, Match: p})
	}
	return f, deny, nil
}

// policy: any permission and any principal.
func (c *rbacCompiler) policy(p *rbacv3.Policy, path string) (matcher, error) {
	if p == nil {
		return nil, errorf(path, "missing policy")
	}
	if err := onlyFields(p, path, "permissions", "principals"); err != nil {
		return nil, err
	}
	if len(p.GetPermissions()) == 0 {
		return nil, errorf(path+".permissions", "must not be empty (use any: true)")
	}
	if len(p.GetPrincipals()) == 0 {
		return nil, errorf(path+".principals", "must not be empty (use any: true)")
	}
	perm, err := combine(p.GetPermissions(), path+".permissions", false, false, c.permissionFunc(false))
	if err != nil {
		return nil, err
	}
	prin, err := combine(p.GetPrincipals(), path+".principals", false, false, c.principalFunc(false))
	if err != nil {
		return nil, err
	}
	return and([]matcher{perm, prin}), nil
}

// and and or combine matchers, folding the trivial cases.
func and(ms []matcher) matcher {
	switch len(ms) {
	case 0:
		return matchAll
	case 1:
		return ms[0]
	case 2:
		a, b := ms[0], ms[1]
		return func(in AuthzInput) bool { return a(in) && b(in) }
	}
	return func(in AuthzInput) bool {
		for _, m := range ms {
			if !m(in) {
				return false
			}
		}
		return true
	}
}

func or(ms []matcher) matcher {
	switch len(ms) {
	case 0:
		return matchNone
	case 1:
		return ms[0]
	case 2:
		a, b := ms[0], ms[1]
		return func(in AuthzInput) bool { return a(in) || b(in) }
	}
	return func(in AuthzInput) bool {
		for _, m := range ms {
			if m(in) {
				return true
			}
		}
		return false
	}
}

func not(m matcher) matcher { return func(in AuthzInput) bool { return !m(in) } }

// combine compiles each element of xs with compile (path[i] naming it)
// and joins the matchers: all of them must match (and_ids, and_rules) or
// any (or_ids, or_rules, a policy's lists). nonEmpty refuses an empty
// list.
func combine[T any](xs []T, path string, all, nonEmpty bool, compile func(T, string) (matcher, error)) (matcher, error) {
	if nonEmpty && len(xs) == 0 {
		return nil, errorf(path, "must not be empty")
	}
	out := make([]matcher, len(xs))
	for i, x := range xs {
		m, err := compile(x, fmt.Sprintf("%s[%d]", path, i))
		if err != nil {
			return nil, err
		}
		out[i] = m
	}
	if all {
		return and(out), nil
	}
	return or(out), nil
}

// principal compiles a Principal; neg says whether an odd number of
// not_id enclose it.
func (c *rbacCompiler) principal(p *rbacv3.Principal, neg bool, path string) (matcher, error) {
	if p == nil {
		return nil, errorf(path, "missing principal")
	}
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_AndIds:
		return combine(id.AndIds.GetIds(), path+".and_ids.ids", true, true, c.principalFunc(neg))
	case *rbacv3.Principal_OrIds:
		return combine(id.OrIds.GetIds(), path+".or_ids.ids", false, true, c.principalFunc(neg))
	case *rbacv3.Principal_NotId:
		m, err := c.principal(id.NotId, !neg, path+".not_id")
		if err != nil {
			return nil, err
		}
		return not(m), nil
	case *rbacv3.Principal_Any:
		if !id.Any {
			return nil, errorf(path+".any", "must be true")
		}
		return matchAll, nil
	case *rbacv3.Principal_Authenticated_:
		a := id.Authenticated
		if err := onlyFields(a, path+".authenticated", "principal_name"); err != nil {
			return nil, err
		}
		if a.GetPrincipalName() == nil {
			// Any peer with a verified certificate.
			return func(in AuthzInput) bool { return in.Principal != "" }, nil
		}
		sm, err := stringMatch(a.GetPrincipalName(), path+".authenticated.principal_name")
		if err != nil {
			return nil, err
		}
		return func(in AuthzInput) bool { return in.Principal != "" && sm(in.Principal) }, nil
	case *rbacv3.Principal_SourceIp:
		return sourceIP(id.SourceIp, path+".source_ip")
	case *rbacv3.Principal_DirectRemoteIp:
		return sourceIP(id.DirectRemoteIp, path+".direct_remote_ip")
	case *rbacv3.Principal_RemoteIp:
		// At L4 there is no X-Forwarded-For: the remote is the peer.
		return sourceIP(id.RemoteIp, path+".remote_ip")
	case *rbacv3.Principal_Header:
		return c.header(id.Header, neg, path+".header")
	case *rbacv3.Principal_UrlPath:
		return c.urlPath(id.UrlPath, neg, path+".url_path")
	}
	return nil, errorf(path, "principal %s is not supported by the slow path", oneofName(p, "identifier"))
}

// permission compiles a Permission; neg as for principal.
func (c *rbacCompiler) permission(p *rbacv3.Permission, neg bool, path string) (matcher, error) {
	if p == nil {
		return nil, errorf(path, "missing permission")
	}
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_AndRules:
		return combine(r.AndRules.GetRules(), path+".and_rules.rules", true, true, c.permissionFunc(neg))
	case *rbacv3.Permission_OrRules:
		return combine(r.OrRules.GetRules(), path+".or_rules.rules", false, true, c.permissionFunc(neg))
	case *rbacv3.Permission_NotRule:
		m, err := c.permission(r.NotRule, !neg, path+".not_rule")
		if err != nil {
			return nil, err
		}
		return not(m), nil
	case *rbacv3.Permission_Any:
		if !r.Any {
			return nil, errorf(path+".any", "must be true")
		}
		return matchAll, nil
	case *rbacv3.Permission_DestinationIp:
		pfx, err := prefix(r.DestinationIp, path+".destination_ip")
		if err != nil {
			return nil, err
		}
		return func(in AuthzInput) bool { return pfx.Contains(in.Destination.Addr().Unmap()) }, nil
	case *rbacv3.Permission_DestinationPort:
		port := r.DestinationPort
		if port > 65535 {
			return nil, errorf(path+".destination_port", "%d is not a port", port)
		}
		return func(in AuthzInput) bool { return uint32(in.Destination.Port()) == port }, nil
	case *rbacv3.Permission_DestinationPortRange:
		lo, hi := r.DestinationPortRange.GetStart(), r.DestinationPortRange.GetEnd()
		if lo >= hi {
			return nil, errorf(path+".destination_port_range", "start %d must be below end %d", lo, hi)
		}
		return func(in AuthzInput) bool {
			p := int32(in.Destination.Port())
			return p >= lo && p < hi
		}, nil
	case *rbacv3.Permission_RequestedServerName:
		sm, err := stringMatch(r.RequestedServerName, path+".requested_server_name")
		if err != nil {
			return nil, err
		}
		return func(in AuthzInput) bool { return sm(in.ServerName) }, nil
	case *rbacv3.Permission_Header:
		return c.header(r.Header, neg, path+".header")
	case *rbacv3.Permission_UrlPath:
		return c.urlPath(r.UrlPath, neg, path+".url_path")
	}
	return nil, errorf(path, "permission %s is not supported by the slow path", oneofName(p, "rule"))
}

// sourceIP matches the peer's address.
func sourceIP(cr *corev3.CidrRange, path string) (matcher, error) {
	if cr == nil {
		return nil, errorf(path, "missing CIDR range")
	}
	pfx, err := prefix(cr, path)
	if err != nil {
		return nil, err
	}
	return func(in AuthzInput) bool { return pfx.Contains(in.Source.Addr().Unmap()) }, nil
}

// header compiles a header matcher. HTTP RBAC at L4: undecidable (fail
// closed); network RBAC: Envoy's semantics for a missing header.
func (c *rbacCompiler) header(h *routev3.HeaderMatcher, neg bool, path string) (matcher, error) {
	if h == nil {
		return nil, errorf(path, "missing header matcher")
	}
	if err := onlyFields(h, path, "name", "exact_match", "safe_regex_match", "range_match", "present_match",
		"prefix_match", "suffix_match", "contains_match", "string_match", "invert_match", "treat_missing_header_as_empty"); err != nil {
		return nil, err
	}
	if h.GetName() == "" {
		return nil, errorf(path+".name", "must not be empty")
	}
	// Validate the matcher even where it is not evaluated, so a bad
	// regex is refused either way.
	value, err := headerValueMatch(h, path)
	if err != nil {
		return nil, err
	}
	if c.httpAtL4 {
		return c.undecidable(neg), nil
	}
	// Envoy's HeaderUtility for an absent header.
	var r bool
	switch {
	case h.GetTreatMissingHeaderAsEmpty():
		r = value("") != h.GetInvertMatch()
	default:
		_, isPresent := h.GetHeaderMatchSpecifier().(*routev3.HeaderMatcher_PresentMatch)
		r = isPresent && h.GetPresentMatch() == h.GetInvertMatch()
	}
	if r {
		return matchAll, nil
	}
	return matchNone, nil
}

// headerValueMatch compiles the value half of a header matcher.
func headerValueMatch(h *routev3.HeaderMatcher, path string) (func(string) bool, error) {
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_ExactMatch:
		v := s.ExactMatch
		return func(x string) bool { return x == v }, nil
	case *routev3.HeaderMatcher_PrefixMatch:
		v := s.PrefixMatch
		return func(x string) bool { return strings.HasPrefix(x, v) }, nil
	case *routev3.HeaderMatcher_SuffixMatch:
		v := s.SuffixMatch
		return func(x string) bool { return strings.HasSuffix(x, v) }, nil
	case *routev3.HeaderMatcher_ContainsMatch:
		v := s.ContainsMatch
		return func(x string) bool { return strings.Contains(x, v) }, nil
	case *routev3.HeaderMatcher_SafeRegexMatch:
		re, err := safeRegex(s.SafeRegexMatch, path+".safe_regex_match")
		if err != nil {
			return nil, err
		}
		return re.MatchString, nil
	case *routev3.HeaderMatcher_StringMatch:
		return stringMatch(s.StringMatch, path+".string_match")
	case *routev3.HeaderMatcher_PresentMatch:
		return func(string) bool { return s.PresentMatch }, nil
	case *routev3.HeaderMatcher_RangeMatch:
		return func(string) bool { return false }, nil // "" is no integer
	case nil:
		return func(string) bool { return true }, nil // present
	}
	return nil, errorf(path, "unsupported header match %s", oneofName(h, "header_match_specifier"))
}

// urlPath compiles a path matcher: HTTP RBAC at L4 cannot decide it
// (fail closed); network RBAC never matches a path (Envoy's network
// filter has no request).
func (c *rbacCompiler) urlPath(pm *matcherv3.PathMatcher, neg bool, path string) (matcher, error) {
	if pm == nil {
		return nil, errorf(path, "missing path matcher")
	}
	if err := onlyFields(pm, path, "path"); err != nil {
		return nil, err
	}
	if _, err := stringMatch(pm.GetPath(), path+".path"); err != nil {
		return nil, err
	}
	if c.httpAtL4 {
		return c.undecidable(neg), nil
	}
	return matchNone, nil
}

func (c *rbacCompiler) principalFunc(neg bool) func(*rbacv3.Principal, string) (matcher, error) {
	return func(p *rbacv3.Principal, path string) (matcher, error) { return c.principal(p, neg, path) }
}

func (c *rbacCompiler) permissionFunc(neg bool) func(*rbacv3.Permission, string) (matcher, error) {
	return func(p *rbacv3.Permission, path string) (matcher, error) { return c.permission(p, neg, path) }
}
