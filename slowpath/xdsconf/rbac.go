package xdsconf

import (
	"fmt"
	"slices"
	"strconv"
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
//
// On an HTTP chain's per-request RBAC (HTTPChain.RBAC) in.Request is the
// request and every matcher is decided; with in.Request nil the request
// matchers fail closed, as FilterChain.RBAC's.
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

// rbacMode is how an RBAC filter is compiled.
type rbacMode int

const (
	// rbacNetwork: a network RBAC filter (envoy.filters.network.rbac),
	// with Envoy's network-filter semantics: there are no headers, so a
	// header matcher sees a missing header, and url_path never matches.
	rbacNetwork rbacMode = iota
	// rbacHTTPAtL4: an HTTP RBAC filter (envoy.filters.http.rbac)
	// enforced per connection (FilterChain.RBAC): it sees no request,
	// so a matcher on the request (header, url_path) cannot be decided,
	// and is decided the way docs/xds.md's fail-closed rule says: in an
	// ALLOW filter the policy must match less, in a DENY filter more.
	rbacHTTPAtL4
	// rbacHTTP: an HTTP RBAC filter decided per request
	// (HTTPChain.RBAC): request matchers read AuthzInput.Request, and
	// fall back to rbacHTTPAtL4's answer when it is nil.
	rbacHTTP
)

// rbacCompiler compiles one RBAC filter's rules.
//
// Which constant an undecidable request matcher takes (rbacHTTPAtL4,
// or rbacHTTP without a request) depends on how many not_id/not_rule
// enclose the matcher (neg), so the constant is deny XOR neg. The
// result is never broader than the policy for ALLOW, never narrower
// for DENY.
type rbacCompiler struct {
	deny bool
	mode rbacMode
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
func compileRBAC(rules *rbacv3.RBAC, mode rbacMode, path string) (*RBACFilter, bool, error) {
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
	c := &rbacCompiler{deny: deny, mode: mode}
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

// header compiles a header matcher: per request (rbacHTTP), Envoy's
// HeaderUtility on the request's headers, the pseudo-headers answered
// from HTTPRequest's fields; HTTP RBAC at L4 (or without a request):
// undecidable, fail closed; network RBAC: Envoy's semantics for a
// missing header.
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
	hv, err := compileHeaderValue(h, path)
	if err != nil {
		return nil, err
	}
	switch c.mode {
	case rbacHTTPAtL4:
		return c.undecidable(neg), nil
	case rbacNetwork:
		if hv.matches("", false) {
			return matchAll, nil
		}
		return matchNone, nil
	}
	und := c.undecidable(neg)
	name := strings.ToLower(h.GetName())
	return func(in AuthzInput) bool {
		r := in.Request
		if r == nil {
			return und(in)
		}
		v, ok := r.header(name)
		return hv.matches(v, ok)
	}, nil
}

// headerValue is a compiled RBAC header matcher (Envoy's
// HeaderUtility::HeaderData).
type headerValue struct {
	present      bool // a present_match (or no specifier: present_match true)
	presentMatch bool
	value        func(string) bool
	invert       bool
	missingEmpty bool // treat_missing_header_as_empty
}

// matches decides the matcher for a header with value v, present or
// not, as Envoy: a missing header (unless treated as empty) matches
// only a present_match that wants it missing, inverted or not;
// present_match compares presence; the others match the value; then
// invert_match inverts.
func (h *headerValue) matches(v string, ok bool) bool {
	if h.present {
		return (ok == h.presentMatch) != h.invert
	}
	if !ok && !h.missingEmpty {
		return false
	}
	return h.value(v) != h.invert
}

// compileHeaderValue compiles the value half of a header matcher.
func compileHeaderValue(h *routev3.HeaderMatcher, path string) (*headerValue, error) {
	out := &headerValue{invert: h.GetInvertMatch(), missingEmpty: h.GetTreatMissingHeaderAsEmpty()}
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_PresentMatch:
		out.present, out.presentMatch = true, s.PresentMatch
		return out, nil
	case nil: // Envoy: no specifier is a presence match
		out.present, out.presentMatch = true, true
		return out, nil
	}
	var err error
	out.value, err = headerValueMatch(h, path)
	return out, err
}

// headerValueMatch compiles the value half of a header matcher with a
// value specifier.
func headerValueMatch(h *routev3.HeaderMatcher, path string) (func(string) bool, error) {
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_ExactMatch:
		// Envoy's deprecated exact_match: "" matches any value.
		v := s.ExactMatch
		return func(x string) bool { return v == "" || x == v }, nil
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
	case *routev3.HeaderMatcher_RangeMatch:
		lo, hi := s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
		if lo >= hi {
			return nil, errorf(path+".range_match", "start %d must be below end %d", lo, hi)
		}
		return func(x string) bool {
			n, err := strconv.ParseInt(x, 10, 64) // does not allocate but for an error's
			return err == nil && n >= lo && n < hi
		}, nil
	}
	return nil, errorf(path, "unsupported header match %s", oneofName(h, "header_match_specifier"))
}

// urlPath compiles a path matcher: per request (rbacHTTP), the string
// matcher on the :path without its query and fragment (Envoy's
// PathMatcher); HTTP RBAC at L4 (or without a request) cannot decide
// it (fail closed); network RBAC never matches a path (Envoy's network
// filter has no request).
func (c *rbacCompiler) urlPath(pm *matcherv3.PathMatcher, neg bool, path string) (matcher, error) {
	if pm == nil {
		return nil, errorf(path, "missing path matcher")
	}
	if err := onlyFields(pm, path, "path"); err != nil {
		return nil, err
	}
	sm, err := stringMatch(pm.GetPath(), path+".path")
	if err != nil {
		return nil, err
	}
	switch c.mode {
	case rbacHTTPAtL4:
		return c.undecidable(neg), nil
	case rbacNetwork:
		return matchNone, nil
	}
	und := c.undecidable(neg)
	return func(in AuthzInput) bool {
		if in.Request == nil {
			return und(in)
		}
		return sm(pathOnly(in.Request.Path))
	}, nil
}

// pathOnly is a :path without its query and fragment.
func pathOnly(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		return p[:i]
	}
	return p
}

func (c *rbacCompiler) principalFunc(neg bool) func(*rbacv3.Principal, string) (matcher, error) {
	return func(p *rbacv3.Principal, path string) (matcher, error) { return c.principal(p, neg, path) }
}

func (c *rbacCompiler) permissionFunc(neg bool) func(*rbacv3.Permission, string) (matcher, error) {
	return func(p *rbacv3.Permission, path string) (matcher, error) { return c.permission(p, neg, path) }
}
