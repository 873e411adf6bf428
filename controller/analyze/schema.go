package analyze

import (
	"cmp"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"istio.io/api/networking/v1alpha3"
	securityv1beta1 "istio.io/api/security/v1beta1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/fibmesh/fibmesh/controller/config"
)

// schemaErrors reports, as IST0106 (Error), what Istio's validation
// (pkg/config/validation: ValidateVirtualService, ValidateDestinationRule,
// ValidateServiceEntry, ValidatePeerAuthentication,
// ValidateAuthorizationPolicy) rejects in a decoded object, the mistakes
// users' manifests show when Istio's webhook denies them. Each message
// starts with Istio's wording and adds the field path and the fix.
// validationErrors (validation.go) covers the VirtualService rules without
// route or SNI.
func schemaErrors(ix *index) []Finding {
	var fs []Finding
	report := func(r config.Resource) func(string, ...any) {
		return func(format string, args ...any) {
			fs = append(fs, finding(SchemaValidationError, r, "Schema validation error: "+format, args...))
		}
	}
	for _, vs := range ix.vss {
		virtualServiceSchema(vs.Obj, report(vs.Resource))
	}
	for _, dr := range ix.drs {
		destinationRuleSchema(&dr.Obj.Spec, report(dr.Resource))
	}
	for _, se := range ix.ses {
		serviceEntrySchema(&se.Obj.Spec, report(se.Resource))
	}
	for _, pa := range ix.pas {
		peerAuthenticationSchema(&pa.Obj.Spec, report(pa.Resource))
	}
	for _, ap := range ix.aps {
		authorizationPolicySchema(&ap.Obj.Spec, report(ap.Resource))
	}
	return fs
}

func virtualServiceSchema(obj *networkingv1.VirtualService, report func(string, ...any)) {
	spec := &obj.Spec
	// Bound to the mesh: no gateways, or "mesh" among them.
	mesh := len(spec.GetGateways()) == 0 || slices.Contains(spec.GetGateways(), "mesh")
	for i, h := range spec.GetHosts() {
		if mesh && h == "*" {
			report("spec.hosts[%d]: wildcard host * is not allowed for virtual services bound to the mesh gateway: "+
				"name the hosts the rules are for (reviews, reviews.default.svc.cluster.local), or bind the VirtualService to a gateway only", i)
		}
	}
	hosts := spec.GetHosts()
	for i := range hosts {
		for j := i + 1; j < len(hosts); j++ {
			if hosts[i] != "*" && hosts[j] != "*" && hostsOverlap(hosts[i], hosts[j]) {
				report("spec.hosts[%d], spec.hosts[%d]: duplicate hosts in virtual service: %s & %s: keep one", i, j, hosts[i], hosts[j])
			}
		}
	}
	if len(spec.GetHttp()) == 0 && len(spec.GetTcp()) == 0 && len(spec.GetTls()) == 0 {
		report("spec: http, tcp or tls must be provided in virtual service: add a rule, or delete the VirtualService")
	}
	for _, rule := range vsRules(obj) {
		for j, d := range rule.dests {
			if w := d.GetWeight(); w < 0 {
				report("%s.route[%d].weight: weight %d < 0: weights are from 0 to 100", rule.path, j, w)
			}
			subsetName(d.GetDestination().GetSubset(), fmt.Sprintf("%s.route[%d].destination.subset", rule.path, j), report)
		}
	}
	for i, r := range spec.GetHttp() {
		path := fmt.Sprintf("spec.http[%d]", i)
		for j, m := range r.GetMatch() {
			mp := fmt.Sprintf("%s.match[%d]", path, j)
			for _, f := range []struct {
				name string
				sm   *v1alpha3.StringMatch
			}{{"uri", m.GetUri()}, {"scheme", m.GetScheme()}, {"method", m.GetMethod()}, {"authority", m.GetAuthority()}} {
				regexMatch(f.sm, mp+"."+f.name, report)
			}
			for _, group := range []struct {
				name string
				m    map[string]*v1alpha3.StringMatch
			}{{"headers", m.GetHeaders()}, {"queryParams", m.GetQueryParams()}, {"withoutHeaders", m.GetWithoutHeaders()}} {
				for _, k := range sortedKeys(group.m) {
					regexMatch(group.m[k], fmt.Sprintf("%s.%s[%s]", mp, group.name, k), report)
				}
			}
		}
		httpRetry(r.GetRetries(), path+".retries", report)
		if a := r.GetFault().GetAbort(); a != nil {
			if s, ok := a.GetErrorType().(*v1alpha3.HTTPFaultInjection_Abort_HttpStatus); ok && (s.HttpStatus < 200 || s.HttpStatus > 600) {
				report("%s.fault.abort.httpStatus: HTTP status %d is not in range 200-599: use an HTTP status code such as 503", path, s.HttpStatus)
			}
		}
	}
}

func httpRetry(rt *v1alpha3.HTTPRetry, path string, report func(string, ...any)) {
	if rt == nil {
		return
	}
	if rt.GetAttempts() < 0 {
		report("%s.attempts: attempts cannot be negative", path)
	}
	if rt.GetAttempts() == 0 && (rt.GetPerTryTimeout() != nil || rt.GetRetryOn() != "" || rt.GetRetryRemoteLocalities() != nil) {
		report("%s: http retry policy configured when attempts are set to 0 (disabled): set attempts, or remove the other retry fields", path)
	}
	if on := rt.GetRetryOn(); on != "" {
		for _, p := range strings.Split(on, ",") {
			code, _ := strconv.Atoi(p)
			if http.StatusText(code) == "" && !slices.Contains(retryOnPolicies, p) {
				report("%s.retryOn: %q is not a valid retryOn policy: use a comma-separated list of Envoy's retry conditions (%s) or HTTP status codes",
					path, p, strings.Join(retryOnPolicies, ", "))
			}
		}
	}
}

// retryOnPolicies are the retry conditions Istio's validation accepts
// (Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on values).
var retryOnPolicies = []string{
	"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "retriable-4xx", "refused-stream",
	"retriable-status-codes", "retriable-headers", "envoy-ratelimited", "http3-post-connect-failure",
	"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
}

func regexMatch(sm *v1alpha3.StringMatch, path string, report func(string, ...any)) {
	re, ok := sm.GetMatchType().(*v1alpha3.StringMatch_Regex)
	if !ok {
		return
	}
	switch _, err := regexp.Compile(re.Regex); {
	case re.Regex == "":
		report("%s.regex: regex string match should not be empty", path)
	case len(re.Regex) > 1024:
		report("%s.regex: regex is too large, max length allowed is 1024", path)
	case err != nil:
		report("%s.regex: %q: %v; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)", path, re.Regex, err)
	}
}

// subsetName checks a subset name as Istio does: a DNS-1123 label
// (lowercase letters, digits and '-').
func subsetName(name, path string, report func(string, ...any)) {
	if name == "" {
		return
	}
	if len(validation.IsDNS1123Label(name)) > 0 {
		report("%s: subset name is invalid: %s: a subset name is lowercase letters, digits and '-' (v1, canary-2)", path, name)
	}
}

func destinationRuleSchema(spec *v1alpha3.DestinationRule, report func(string, ...any)) {
	seen := map[string]int{}
	for i, s := range spec.GetSubsets() {
		path := fmt.Sprintf("spec.subsets[%d].name", i)
		if s.GetName() == "" {
			report("%s: subset name cannot be empty", path)
			continue
		}
		subsetName(s.GetName(), path, report)
		if j, dup := seen[s.GetName()]; dup {
			report("%s: duplicate subset name %q (also spec.subsets[%d]): give each subset its own name", path, s.GetName(), j)
			continue
		}
		seen[s.GetName()] = i
	}
}

func serviceEntrySchema(spec *v1alpha3.ServiceEntry, report func(string, ...any)) {
	if len(spec.GetHosts()) == 0 {
		report("spec.hosts: service entry must have at least one host")
	}
	for i, h := range spec.GetHosts() {
		if h == "*" {
			report("spec.hosts[%d]: invalid host *: name the external hosts (api.example.com, *.example.com)", i)
		}
	}
	if r := spec.GetResolution(); r != v1alpha3.ServiceEntry_NONE && r != v1alpha3.ServiceEntry_STATIC {
		for i, a := range spec.GetAddresses() {
			if strings.Contains(a, "/") {
				report("spec.addresses[%d]: CIDR addresses are allowed only for NONE/STATIC resolution types (%q with resolution %s): use single IP addresses, or resolution NONE",
					i, a, r)
			}
		}
	}
	names, numbers := map[string]bool{}, map[uint32]bool{}
	for i, p := range spec.GetPorts() {
		if names[p.GetName()] {
			report("spec.ports[%d].name: service entry port name %q already defined: give each port its own name", i, p.GetName())
		}
		names[p.GetName()] = true
		if numbers[p.GetNumber()] {
			report("spec.ports[%d].number: service entry port %d already defined: list each port once", i, p.GetNumber())
		}
		numbers[p.GetNumber()] = true
	}
	if spec.GetWorkloadSelector() != nil && len(spec.GetEndpoints()) > 0 {
		report("spec: only one of WorkloadSelector or Endpoints is allowed in Service Entry")
	}
}

func peerAuthenticationSchema(spec *securityv1beta1.PeerAuthentication, report func(string, ...any)) {
	if len(spec.GetPortLevelMtls()) > 0 && len(spec.GetSelector().GetMatchLabels()) == 0 {
		report("spec.portLevelMtls: mesh/namespace peer authentication cannot have port level mTLS (portLevelMtls requires selector): " +
			"move the port-level modes to a PeerAuthentication with a selector for the workloads that have those ports")
	}
	for _, p := range sortedKeys(spec.GetPortLevelMtls()) {
		if p == 0 || p > 65535 {
			report("spec.portLevelMtls[%d]: port must be in range 1..65535", p)
		}
	}
}

func authorizationPolicySchema(spec *securityv1beta1.AuthorizationPolicy, report func(string, ...any)) {
	action := spec.GetAction()
	switch {
	case action == securityv1beta1.AuthorizationPolicy_DENY && spec.Rules == nil:
		report("spec.rules: DENY action without `rules` is meaningless as it will never be triggered, " +
			"add an empty rule `{}` if you want it be triggered for every request")
	case action == securityv1beta1.AuthorizationPolicy_CUSTOM && spec.Rules == nil:
		report("spec.rules: CUSTOM action without `rules` is meaningless as it will never be triggered, " +
			"add an empty rule `{}` if you want it be triggered for every request")
	case action == securityv1beta1.AuthorizationPolicy_CUSTOM && spec.GetProvider().GetName() == "":
		report("spec.provider.name: `provider.name` must not be empty")
	}
	if spec.GetProvider() != nil && action != securityv1beta1.AuthorizationPolicy_CUSTOM {
		report("spec.provider: `provider` must not be with non CUSTOM action, found %s", action)
	}
	for i, rule := range spec.GetRules() {
		if action == securityv1beta1.AuthorizationPolicy_CUSTOM {
			customOnly(rule, fmt.Sprintf("spec.rules[%d]", i), report)
		}
		for j, from := range rule.GetFrom() {
			path := fmt.Sprintf("spec.rules[%d].from[%d].source", i, j)
			src := from.GetSource()
			if src == nil {
				report("%s: `from.source` must not be nil, found at rule %d", path, i)
				continue
			}
			if len(src.GetPrincipals())+len(src.GetNotPrincipals())+len(src.GetNamespaces())+len(src.GetNotNamespaces()) > 0 &&
				len(src.GetServiceAccounts())+len(src.GetNotServiceAccounts()) > 0 {
				report("%s: cannot set serviceAccounts with namespaces or principals, found at rule %d", path, i)
			}
			lists := []struct {
				name   string
				values []string
				ips    bool
			}{
				{"principals", src.GetPrincipals(), false}, {"notPrincipals", src.GetNotPrincipals(), false},
				{"requestPrincipals", src.GetRequestPrincipals(), false}, {"notRequestPrincipals", src.GetNotRequestPrincipals(), false},
				{"namespaces", src.GetNamespaces(), false}, {"notNamespaces", src.GetNotNamespaces(), false},
				{"serviceAccounts", src.GetServiceAccounts(), false}, {"notServiceAccounts", src.GetNotServiceAccounts(), false},
				{"ipBlocks", src.GetIpBlocks(), true}, {"notIpBlocks", src.GetNotIpBlocks(), true},
				{"remoteIpBlocks", src.GetRemoteIpBlocks(), true}, {"notRemoteIpBlocks", src.GetNotRemoteIpBlocks(), true},
			}
			set := 0
			for _, l := range lists {
				set += len(l.values)
				listValues(path+"."+l.name, l.values, l.ips, report)
			}
			if set == 0 {
				report("%s: `from.source` must not be empty, found at rule %d: name the sources (principals, namespaces, ipBlocks, ...), or remove the from entry to match every source", path, i)
			}
		}
		for j, to := range rule.GetTo() {
			path := fmt.Sprintf("spec.rules[%d].to[%d].operation", i, j)
			op := to.GetOperation()
			if op == nil {
				report("%s: `to.operation` must not be nil, found at rule %d", path, i)
				continue
			}
			lists := []struct {
				name   string
				values []string
			}{
				{"ports", op.GetPorts()}, {"notPorts", op.GetNotPorts()}, {"methods", op.GetMethods()}, {"notMethods", op.GetNotMethods()},
				{"paths", op.GetPaths()}, {"notPaths", op.GetNotPaths()}, {"hosts", op.GetHosts()}, {"notHosts", op.GetNotHosts()},
			}
			set := 0
			for _, l := range lists {
				set += len(l.values)
				listValues(path+"."+l.name, l.values, false, report)
			}
			if set == 0 {
				report("%s: `to.operation` must not be empty, found at rule %d: name the operations (ports, methods, paths, hosts), or remove the to entry to match every request", path, i)
			}
			for _, l := range lists[:2] {
				for k, p := range l.values {
					if n, err := strconv.Atoi(p); p != "" && (err != nil || n < 0 || n > 65535) {
						report("%s.%s[%d]: invalid port %q: a port is a number from 0 to 65535", path, l.name, k, p)
					}
				}
			}
		}
		for j, c := range rule.GetWhen() {
			path := fmt.Sprintf("spec.rules[%d].when[%d]", i, j)
			switch {
			case c.GetKey() == "":
				report("%s.key: `key` must not be empty", path)
			case len(c.GetValues()) == 0 && len(c.GetNotValues()) == 0:
				report("%s: at least one of `values` or `notValues` must be set for key %s", path, c.GetKey())
			}
		}
	}
}

// customOnly reports what Istio's validation does not accept in a rule of
// a CUSTOM policy: sources by identity or namespace, and conditions on
// them or on the request's JWT.
func customOnly(rule *securityv1beta1.Rule, path string, report func(string, ...any)) {
	for j, from := range rule.GetFrom() {
		src := from.GetSource()
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"Namespaces", len(src.GetNamespaces()) > 0}, {"NotNamespaces", len(src.GetNotNamespaces()) > 0},
			{"ServiceAccounts", len(src.GetServiceAccounts()) > 0}, {"NotServiceAccounts", len(src.GetNotServiceAccounts()) > 0},
			{"Principals", len(src.GetPrincipals()) > 0}, {"NotPrincipals", len(src.GetNotPrincipals()) > 0},
			{"RequestPrincipals", len(src.GetRequestPrincipals()) > 0}, {"NotRequestPrincipals", len(src.GetNotRequestPrincipals()) > 0},
		} {
			if f.set {
				report("%s.from[%d].source: From.%s is currently not supported with CUSTOM action: match on ipBlocks or the operation, and let the provider decide the rest",
					path, j, f.name)
			}
		}
	}
	for j, c := range rule.GetWhen() {
		k := c.GetKey()
		if k == "source.namespace" || k == "source.serviceAccount" || k == "source.principal" || strings.HasPrefix(k, "request.auth.") {
			report("%s.when[%d].key: %s is currently not supported with CUSTOM action", path, j, k)
		}
	}
}

// listValues checks an AuthorizationPolicy list as Istio's CheckEmptyValues
// and ValidateIPs do.
func listValues(path string, values []string, ips bool, report func(string, ...any)) {
	for k, v := range values {
		if v == "" {
			report("%s[%d]: empty value not allowed, found in %s", path, k, path[strings.LastIndexByte(path, '.')+1:])
			continue
		}
		if !ips {
			continue
		}
		if _, err := netip.ParsePrefix(v); err == nil {
			continue
		}
		if _, err := netip.ParseAddr(v); err == nil {
			continue
		}
		report("%s[%d]: %q is neither an IP address nor a CIDR: write it as 10.0.0.0/16 or 10.0.0.1", path, k, v)
	}
}

// hostsOverlap reports whether two VirtualService hosts overlap, as
// Istio's host.Name.Matches: equal, or one a wildcard ("*.example.com")
// covering the other.
func hostsOverlap(a, b string) bool {
	if a == b {
		return true
	}
	covers := func(w, h string) bool {
		if !strings.HasPrefix(w, "*") {
			return false
		}
		suffix := w[1:]
		return strings.HasSuffix(strings.TrimPrefix(h, "*"), suffix)
	}
	return covers(a, b) || covers(b, a)
}

// sortedKeys returns m's keys in order, for deterministic messages.
func sortedKeys[K cmp.Ordered, V any](m map[K]V) []K {
	return slices.Sorted(maps.Keys(m))
}
