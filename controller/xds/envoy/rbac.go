package envoy

import (
	"regexp"
	"strconv"
	"strings"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/fibmesh/fibmesh/controller/model"
)

// Istio's authorization actions that fibmesh enforces. AUDIT (needs an
// audit sink) and CUSTOM (needs an external authorizer) are skipped.
const (
	actionAllow = "ALLOW"
	actionDeny  = "DENY"
)

// authz is the RBAC of one workload: the DENY filter first, then the
// ALLOW filter, as Istio evaluates them. A nil filter is not installed.
type authz struct {
	http []*hcmv3.HttpFilter
	tcp  []*listenerv3.Filter
}

// authzFor translates the authorization policies of a workload into HTTP
// and network RBAC filters. With any ALLOW policy, the ALLOW filter is
// installed even if it has no Envoy policy, so that what no rule allows
// is denied (an ALLOW policy without rules denies everything); DENY
// policies without rules match nothing, and install no filter.
func (b *builder) authzFor(m *model.Model, ps []*model.AuthzPolicy) authz {
	var out authz
	for _, action := range []string{actionDeny, actionAllow} {
		present := false
		httpPolicies, tcpPolicies := map[string]*rbacv3.Policy{}, map[string]*rbacv3.Policy{}
		for _, p := range ps {
			if p.Action != action {
				continue
			}
			present = true
			for i, r := range p.Rules {
				name := "ns[" + p.Namespace + "]-policy[" + p.Name + "]-rule[" + strconv.Itoa(i) + "]"
				tr := &ruleTranslator{trustDomain: m.TrustDomain, namespace: p.Namespace, deny: action == actionDeny}
				httpPolicies[name] = tr.policy(r)
				tr.tcp = true
				tcpPolicies[name] = tr.policy(r)
			}
		}
		if !present || (action == actionDeny && len(httpPolicies) == 0) {
			continue
		}
		act, stat := rbacv3.RBAC_ALLOW, "allow."
		if action == actionDeny {
			act, stat = rbacv3.RBAC_DENY, "deny."
		}
		out.http = append(out.http, &hcmv3.HttpFilter{Name: wkHTTPRBAC, ConfigType: &hcmv3.HttpFilter_TypedConfig{
			TypedConfig: b.any(&httprbacv3.RBAC{Rules: &rbacv3.RBAC{Action: act, Policies: httpPolicies}}),
		}})
		out.tcp = append(out.tcp, &listenerv3.Filter{Name: wkNetworkRBAC, ConfigType: &listenerv3.Filter_TypedConfig{
			TypedConfig: b.any(&netrbacv3.RBAC{StatPrefix: "tcp." + stat, Rules: &rbacv3.RBAC{Action: act, Policies: tcpPolicies}}),
		}})
	}
	return out
}

// ruleTranslator translates the rules of one policy for HTTP or TCP.
type ruleTranslator struct {
	trustDomain string
	namespace   string // of the policy: bare service accounts are in it
	deny        bool
	tcp         bool
}

// Shapes of "matches everything" and "matches nothing".
func anyID() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}
func noID() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: anyID()}}
}
func anyPerm() *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
}
func noPerm() *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: anyPerm()}}
}

func isAnyID(p *rbacv3.Principal) bool { return p.GetAny() }
func isNoID(p *rbacv3.Principal) bool  { return p.GetNotId().GetAny() }
func isAnyPerm(p *rbacv3.Permission) bool {
	return p.GetAny()
}
func isNoPerm(p *rbacv3.Permission) bool { return p.GetNotRule().GetAny() }

// unsupportedID and unsupportedPerm stand for what fibmesh cannot
// enforce (an unknown condition key, a path template, an HTTP-only
// field on TCP): fail closed. In an ALLOW rule it matches nothing, so
// the rule allows nothing; in a DENY rule it matches everything, so the
// rest of the rule decides and the deny is broader, never narrower (for
// HTTP-only fields on TCP this is exactly Istio's behaviour).
func (t *ruleTranslator) unsupportedID() *rbacv3.Principal {
	if t.deny {
		return anyID()
	}
	return noID()
}

func (t *ruleTranslator) unsupportedPerm() *rbacv3.Permission {
	if t.deny {
		return anyPerm()
	}
	return noPerm()
}

func andIDs(ids []*rbacv3.Principal) *rbacv3.Principal {
	var keep []*rbacv3.Principal
	for _, id := range ids {
		switch {
		case isNoID(id):
			return noID()
		case !isAnyID(id):
			keep = append(keep, id)
		}
	}
	switch len(keep) {
	case 0:
		return anyID()
	case 1:
		return keep[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: keep}}}
}

func orIDs(ids []*rbacv3.Principal) *rbacv3.Principal {
	var keep []*rbacv3.Principal
	for _, id := range ids {
		switch {
		case isAnyID(id):
			return anyID()
		case !isNoID(id):
			keep = append(keep, id)
		}
	}
	switch len(keep) {
	case 0:
		return noID()
	case 1:
		return keep[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: keep}}}
}

func notID(id *rbacv3.Principal) *rbacv3.Principal {
	switch {
	case isAnyID(id):
		return noID()
	case isNoID(id):
		return anyID()
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: id}}
}

func andPerms(ps []*rbacv3.Permission) *rbacv3.Permission {
	var keep []*rbacv3.Permission
	for _, p := range ps {
		switch {
		case isNoPerm(p):
			return noPerm()
		case !isAnyPerm(p):
			keep = append(keep, p)
		}
	}
	switch len(keep) {
	case 0:
		return anyPerm()
	case 1:
		return keep[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: keep}}}
}

func orPerms(ps []*rbacv3.Permission) *rbacv3.Permission {
	var keep []*rbacv3.Permission
	for _, p := range ps {
		switch {
		case isAnyPerm(p):
			return anyPerm()
		case !isNoPerm(p):
			keep = append(keep, p)
		}
	}
	switch len(keep) {
	case 0:
		return noPerm()
	case 1:
		return keep[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: keep}}}
}

func notPerm(p *rbacv3.Permission) *rbacv3.Permission {
	switch {
	case isAnyPerm(p):
		return noPerm()
	case isNoPerm(p):
		return anyPerm()
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: p}}
}

// ids is a field of a source: any of its values (values empty: the
// field is not set, matches anything); not negates. f returns nil for a
// value fibmesh cannot enforce, which makes the whole field
// unsupportedID, negated or not, so that it fails closed.
func (t *ruleTranslator) ids(values []string, not bool, f func(string) *rbacv3.Principal) *rbacv3.Principal {
	if len(values) == 0 {
		return anyID()
	}
	out := make([]*rbacv3.Principal, len(values))
	for i, v := range values {
		if out[i] = f(v); out[i] == nil {
			return t.unsupportedID()
		}
	}
	if not {
		return notID(orIDs(out))
	}
	return orIDs(out)
}

// perms is ids for a field of an operation.
func (t *ruleTranslator) perms(values []string, not bool, f func(string) *rbacv3.Permission) *rbacv3.Permission {
	if len(values) == 0 {
		return anyPerm()
	}
	out := make([]*rbacv3.Permission, len(values))
	for i, v := range values {
		if out[i] = f(v); out[i] == nil {
			return t.unsupportedPerm()
		}
	}
	if not {
		return notPerm(orPerms(out))
	}
	return orPerms(out)
}

// policy translates one rule: it matches when any From source, any To
// operation and every When condition match. Conditions on the peer go
// with the principal, those on the request with the permission, as in
// Istio; the Envoy policy needs both to match.
func (t *ruleTranslator) policy(r model.AuthzRule) *rbacv3.Policy {
	principal := []*rbacv3.Principal{anyID()}
	permission := []*rbacv3.Permission{anyPerm()}
	if len(r.From) > 0 {
		srcs := make([]*rbacv3.Principal, len(r.From))
		for i, s := range r.From {
			srcs[i] = t.source(s)
		}
		principal = append(principal, orIDs(srcs))
	}
	if len(r.To) > 0 {
		ops := make([]*rbacv3.Permission, len(r.To))
		for i, o := range r.To {
			ops[i] = t.operation(o)
		}
		permission = append(permission, orPerms(ops))
	}
	for _, c := range r.When {
		id, perm := t.condition(c)
		principal, permission = append(principal, id), append(permission, perm)
	}
	return &rbacv3.Policy{Principals: []*rbacv3.Principal{andIDs(principal)}, Permissions: []*rbacv3.Permission{andPerms(permission)}}
}

// source ANDs the fields of a source.
func (t *ruleTranslator) source(s model.AuthzSource) *rbacv3.Principal {
	return andIDs([]*rbacv3.Principal{
		t.ids(s.Principals, false, t.principalName), t.ids(s.NotPrincipals, true, t.principalName),
		t.ids(s.RequestPrincipals, false, t.requestPrincipal), t.ids(s.NotRequestPrincipals, true, t.requestPrincipal),
		t.ids(s.Namespaces, false, namespaceID), t.ids(s.NotNamespaces, true, namespaceID),
		t.ids(s.ServiceAccounts, false, t.serviceAccount), t.ids(s.NotServiceAccounts, true, t.serviceAccount),
		t.ids(s.IPBlocks, false, t.directIP), t.ids(s.NotIPBlocks, true, t.directIP),
		t.ids(s.RemoteIPBlocks, false, t.remoteIP), t.ids(s.NotRemoteIPBlocks, true, t.remoteIP),
	})
}

// operation ANDs the fields of an operation.
func (t *ruleTranslator) operation(o model.AuthzOperation) *rbacv3.Permission {
	return andPerms([]*rbacv3.Permission{
		t.perms(o.Hosts, false, t.host), t.perms(o.NotHosts, true, t.host),
		t.perms(o.Ports, false, t.port), t.perms(o.NotPorts, true, t.port),
		t.perms(o.Methods, false, t.method), t.perms(o.NotMethods, true, t.method),
		t.perms(o.Paths, false, t.path), t.perms(o.NotPaths, true, t.path),
	})
}

// condition translates a when condition into its principal and
// permission halves (one of them anything).
func (t *ruleTranslator) condition(c model.Condition) (*rbacv3.Principal, *rbacv3.Permission) {
	idCond := func(f func(string) *rbacv3.Principal) (*rbacv3.Principal, *rbacv3.Permission) {
		return andIDs([]*rbacv3.Principal{t.ids(c.Values, false, f), t.ids(c.NotValues, true, f)}), anyPerm()
	}
	permCond := func(f func(string) *rbacv3.Permission) (*rbacv3.Principal, *rbacv3.Permission) {
		return anyID(), andPerms([]*rbacv3.Permission{t.perms(c.Values, false, f), t.perms(c.NotValues, true, f)})
	}
	switch key := c.Key; {
	case key == "source.ip":
		return idCond(t.directIP)
	case key == "remote.ip":
		return idCond(t.remoteIP)
	case key == "source.namespace":
		return idCond(namespaceID)
	case key == "source.principal":
		return idCond(t.principalName)
	case key == "source.serviceAccount":
		return idCond(t.serviceAccount)
	case key == "destination.ip":
		return permCond(t.destinationIP)
	case key == "destination.port":
		return permCond(t.port)
	case key == "connection.sni":
		return permCond(func(v string) *rbacv3.Permission {
			return &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: wildcard(v, "")}}
		})
	case strings.HasPrefix(key, "request.headers[") && strings.HasSuffix(key, "]") && len(key) > len("request.headers[]"):
		if t.tcp {
			return t.unsupportedID(), anyPerm()
		}
		name := strings.ToLower(key[len("request.headers[") : len(key)-1])
		values := t.ids(c.Values, false, func(v string) *rbacv3.Principal {
			return &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: headerWildcard(name, v, false)}}
		})
		// A missing header counts as empty, so notValues: [""] (the
		// usual "header must be set") holds only for a non-empty one.
		notValues := t.ids(c.NotValues, true, func(v string) *rbacv3.Principal {
			return &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: headerWildcard(name, v, true)}}
		})
		return andIDs([]*rbacv3.Principal{values, notValues}), anyPerm()
	case strings.HasPrefix(key, "request.auth."):
		// No RequestAuthentication: no request has JWT claims.
		if t.tcp {
			return t.unsupportedID(), anyPerm()
		}
		return idCond(func(string) *rbacv3.Principal { return noID() })
	}
	return anyID(), t.unsupportedPerm()
}

// wildcard is Istio's string match with "*" wildcards: "*" any
// non-empty value, "*x" a suffix, "x*" a prefix, else exact; prefix is
// prepended to what is matched (spiffe:// for principals).
func wildcard(v, prefix string) *matcherv3.StringMatcher {
	switch {
	case v == "*":
		return regexMatcher(".+")
	case strings.HasPrefix(v, "*"):
		if prefix == "" {
			return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: v[1:]}}
		}
		return regexMatcher(regexp.QuoteMeta(prefix) + ".*" + regexp.QuoteMeta(v[1:]))
	case strings.HasSuffix(v, "*"):
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: prefix + v[:len(v)-1]}}
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: prefix + v}}
}

func regexMatcher(re string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
}

// headerWildcard matches a header with Istio's wildcards; "*" is
// "present". missingIsEmpty makes an absent header match as "".
func headerWildcard(name, v string, missingIsEmpty bool) *routev3.HeaderMatcher {
	h := &routev3.HeaderMatcher{Name: name, TreatMissingHeaderAsEmpty: missingIsEmpty}
	if v == "*" {
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		return h
	}
	h.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: wildcard(v, "")}
	return h
}

func authenticated(m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m}}}
}

// principalName matches Istio's principal "<td>/ns/<ns>/sa/<sa>"
// against the peer's URI SAN spiffe://<td>/ns/<ns>/sa/<sa>.
func (t *ruleTranslator) principalName(v string) *rbacv3.Principal {
	return authenticated(wildcard(v, "spiffe://"))
}

// namespaceID matches peers of a namespace by their SPIFFE ID.
func namespaceID(ns string) *rbacv3.Principal {
	parts := strings.Split(ns, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return authenticated(regexMatcher(".*/ns/" + strings.Join(parts, ".*") + "/.*"))
}

// serviceAccount matches "<ns>/<sa>", or "<sa>" in the policy's
// namespace, as the exact SPIFFE ID.
func (t *ruleTranslator) serviceAccount(v string) *rbacv3.Principal {
	ns, sa, ok := strings.Cut(v, "/")
	if !ok {
		ns, sa = t.namespace, v
	}
	return authenticated(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: model.Identity(t.trustDomain, ns, sa)}})
}

// requestPrincipal: fibmesh has no RequestAuthentication, so no request
// has a request principal; on TCP it is an HTTP-only field.
func (t *ruleTranslator) requestPrincipal(string) *rbacv3.Principal {
	if t.tcp {
		return nil
	}
	return noID()
}

func (t *ruleTranslator) directIP(v string) *rbacv3.Principal {
	c, ok := cidr(v)
	if !ok {
		return nil
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: c}}
}

func (t *ruleTranslator) remoteIP(v string) *rbacv3.Principal {
	c, ok := cidr(v)
	if !ok {
		return nil
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: c}}
}

func (t *ruleTranslator) destinationIP(v string) *rbacv3.Permission {
	c, ok := cidr(v)
	if !ok {
		return nil
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: c}}
}

func (t *ruleTranslator) port(v string) *rbacv3.Permission {
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil {
		return nil
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: uint32(n)}}
}

// host matches the :authority, case-insensitively.
func (t *ruleTranslator) host(v string) *rbacv3.Permission {
	if t.tcp {
		return nil
	}
	h := headerWildcard(":authority", v, false)
	if sm := h.GetStringMatch(); sm != nil {
		sm.IgnoreCase = true
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: h}}
}

func (t *ruleTranslator) method(v string) *rbacv3.Permission {
	if t.tcp {
		return nil
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: headerWildcard(":method", v, false)}}
}

// path matches the path without its query, with Istio's wildcards; path
// templates ({*}, {**}) are not supported.
func (t *ruleTranslator) path(v string) *rbacv3.Permission {
	if t.tcp || strings.ContainsAny(v, "{}") {
		return nil
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: wildcard(v, "")}}}}
}
