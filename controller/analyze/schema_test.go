package analyze

import (
	"testing"

	"istio.io/api/networking/v1alpha3"
	securityv1beta1 "istio.io/api/security/v1beta1"
)

// The objects below are the mistakes users' manifests showed when Istio's
// webhook denied them (docs/analyze.md, "Measured on users' manifests"),
// each rewritten for an imaginary shop.
func TestSchemaErrors(t *testing.T) {
	route := []*v1alpha3.HTTPRouteDestination{dest("orders", "", 0)}
	regex := func(re string) *v1alpha3.StringMatch {
		return &v1alpha3.StringMatch{MatchType: &v1alpha3.StringMatch_Regex{Regex: re}}
	}
	good := vs("shop", "good", &v1alpha3.VirtualService{
		Hosts: []string{"orders", "*.shop.example"},
		Http: []*v1alpha3.HTTPRoute{{
			Match:   []*v1alpha3.HTTPMatchRequest{{Uri: regex("/orders/[0-9]+"), Headers: map[string]*v1alpha3.StringMatch{"x-tier": regex("gold|silver")}}},
			Retries: &v1alpha3.HTTPRetry{Attempts: 2, RetryOn: "5xx,reset,409"},
			Route:   []*v1alpha3.HTTPRouteDestination{dest("orders", "canary-2", 10), dest("orders", "stable", 90)},
		}},
	})
	// A catch-all host on the mesh, a host listed twice (once through a
	// wildcard), a negative weight and a subset name with capitals.
	hosts := vs("shop", "hosts", &v1alpha3.VirtualService{
		Hosts: []string{"*", "api.shop.example", "*.shop.example"},
		Http:  []*v1alpha3.HTTPRoute{{Route: []*v1alpha3.HTTPRouteDestination{dest("orders", "Stable", 110), dest("orders", "", -10)}}},
	})
	// The same catch-all host is fine on a gateway only.
	onGateway := vs("shop", "edge", &v1alpha3.VirtualService{Gateways: []string{"shop/edge"}, Hosts: []string{"*"}, Http: []*v1alpha3.HTTPRoute{{Route: route}}})
	empty := vs("shop", "empty", &v1alpha3.VirtualService{Hosts: []string{"orders"}})
	retries := vs("shop", "retries", &v1alpha3.VirtualService{Hosts: []string{"orders"}, Http: []*v1alpha3.HTTPRoute{
		{Match: []*v1alpha3.HTTPMatchRequest{{Uri: regex("/v(1|2")}}, Retries: &v1alpha3.HTTPRetry{Attempts: 3, RetryOn: "5xx,gateway-errors"}, Route: route},
		{Retries: &v1alpha3.HTTPRetry{RetryOn: "connect-failure"}, Route: route,
			Fault: &v1alpha3.HTTPFaultInjection{Abort: &v1alpha3.HTTPFaultInjection_Abort{ErrorType: &v1alpha3.HTTPFaultInjection_Abort_HttpStatus{HttpStatus: 999}}}},
	}})
	subsets := dr("shop", "orders", &v1alpha3.DestinationRule{Host: "orders", Subsets: []*v1alpha3.Subset{
		{Name: "stable", Labels: labelsOf("track", "stable")},
		{Name: "stable", Labels: labelsOf("track", "canary")},
		{Name: "v1.2", Labels: labelsOf("track", "old")},
	}})
	payments := se("shop", "payments", &v1alpha3.ServiceEntry{
		Hosts:      []string{"pay.example.net"},
		Addresses:  []string{"192.0.2.0/24"},
		Resolution: v1alpha3.ServiceEntry_DNS,
		Ports:      []*v1alpha3.ServicePort{{Number: 443, Name: "https", Protocol: "TLS"}, {Number: 8443, Name: "https", Protocol: "TLS"}},
	})
	portLevel := pa("shop", "default", &securityv1beta1.PeerAuthentication{
		Mtls:          &securityv1beta1.PeerAuthentication_MutualTLS{Mode: securityv1beta1.PeerAuthentication_MutualTLS_STRICT},
		PortLevelMtls: map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{9102: {Mode: securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE}},
	})
	portLevelOK := pa("shop", "metrics", &securityv1beta1.PeerAuthentication{
		Selector:      selector("app", "orders"),
		PortLevelMtls: map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{9102: {Mode: securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE}},
	})
	denyNothing := ap("shop", "deny-nothing", &securityv1beta1.AuthorizationPolicy{Action: securityv1beta1.AuthorizationPolicy_DENY})
	sources := ap("shop", "sources", &securityv1beta1.AuthorizationPolicy{Rules: []*securityv1beta1.Rule{{
		From: []*securityv1beta1.Rule_From{
			{Source: &securityv1beta1.Source{}},
			{Source: &securityv1beta1.Source{Principals: []string{""}, IpBlocks: []string{"203.0.113.7/33"}}},
			{Source: &securityv1beta1.Source{Namespaces: []string{"shop"}, ServiceAccounts: []string{"cashier"}}},
		},
		To:   []*securityv1beta1.Rule_To{{Operation: &securityv1beta1.Operation{Ports: []string{"http"}}}},
		When: []*securityv1beta1.Condition{{Key: "request.headers[x-tier]"}},
	}}})
	// CUSTOM hands the decision to an external provider, which is not
	// told the caller's mTLS identity.
	external := ap("shop", "external", &securityv1beta1.AuthorizationPolicy{
		Action:       securityv1beta1.AuthorizationPolicy_CUSTOM,
		ActionDetail: &securityv1beta1.AuthorizationPolicy_Provider{Provider: &securityv1beta1.AuthorizationPolicy_ExtensionProvider{Name: "opa"}},
		Rules: []*securityv1beta1.Rule{{
			From: []*securityv1beta1.Rule_From{{Source: &securityv1beta1.Source{Namespaces: []string{"shop"}, IpBlocks: []string{"10.1.0.0/16"}}}},
			When: []*securityv1beta1.Condition{{Key: "source.principal", Values: []string{"cluster.local/ns/shop/sa/cashier"}}},
		}},
	})
	allowAll := ap("shop", "allow-all", &securityv1beta1.AuthorizationPolicy{Rules: []*securityv1beta1.Rule{{}}})
	runCases(t, schemaErrors, []analyzerCase{
		{name: "valid", snap: snap(good, onGateway, portLevelOK, allowAll, reviewsR)},
		{name: "virtual service hosts and destinations", snap: snap(hosts), want: []Finding{
			want(SchemaValidationError, hosts, "Schema validation error: spec.hosts[0]: wildcard host * is not allowed for virtual services bound to the mesh gateway: "+
				"name the hosts the rules are for (reviews, reviews.default.svc.cluster.local), or bind the VirtualService to a gateway only"),
			want(SchemaValidationError, hosts, "Schema validation error: spec.hosts[1], spec.hosts[2]: duplicate hosts in virtual service: api.shop.example & *.shop.example: keep one"),
			want(SchemaValidationError, hosts, "Schema validation error: spec.http[0].route[0].destination.subset: subset name is invalid: Stable: a subset name is lowercase letters, digits and '-' (v1, canary-2)"),
			want(SchemaValidationError, hosts, "Schema validation error: spec.http[0].route[1].weight: weight -10 < 0: weights are from 0 to 100"),
		}},
		{name: "no rules", snap: snap(empty), want: []Finding{
			want(SchemaValidationError, empty, "Schema validation error: spec: http, tcp or tls must be provided in virtual service: add a rule, or delete the VirtualService"),
		}},
		{name: "regex, retries and abort status", snap: snap(retries), want: []Finding{
			want(SchemaValidationError, retries, `Schema validation error: spec.http[0].match[0].uri.regex: "/v(1|2": error parsing regexp: missing closing ): `+"`/v(1|2`"+`; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)`),
			want(SchemaValidationError, retries, `Schema validation error: spec.http[0].retries.retryOn: "gateway-errors" is not a valid retryOn policy: use a comma-separated list of Envoy's retry conditions (5xx, gateway-error, reset, reset-before-request, connect-failure, retriable-4xx, refused-stream, retriable-status-codes, retriable-headers, envoy-ratelimited, http3-post-connect-failure, cancelled, deadline-exceeded, internal, resource-exhausted, unavailable) or HTTP status codes`),
			want(SchemaValidationError, retries, "Schema validation error: spec.http[1].fault.abort.httpStatus: HTTP status 999 is not in range 200-599: use an HTTP status code such as 503"),
			want(SchemaValidationError, retries, "Schema validation error: spec.http[1].retries: http retry policy configured when attempts are set to 0 (disabled): set attempts, or remove the other retry fields"),
		}},
		{name: "subset names", snap: snap(subsets), want: []Finding{
			want(SchemaValidationError, subsets, `Schema validation error: spec.subsets[1].name: duplicate subset name "stable" (also spec.subsets[0]): give each subset its own name`),
			want(SchemaValidationError, subsets, "Schema validation error: spec.subsets[2].name: subset name is invalid: v1.2: a subset name is lowercase letters, digits and '-' (v1, canary-2)"),
		}},
		{name: "service entry", snap: snap(payments), want: []Finding{
			want(SchemaValidationError, payments, `Schema validation error: spec.addresses[0]: CIDR addresses are allowed only for NONE/STATIC resolution types ("192.0.2.0/24" with resolution DNS): use single IP addresses, or resolution NONE`),
			want(SchemaValidationError, payments, `Schema validation error: spec.ports[1].name: service entry port name "https" already defined: give each port its own name`),
		}},
		{name: "port-level mTLS without selector", snap: snap(portLevel), want: []Finding{
			want(SchemaValidationError, portLevel, "Schema validation error: spec.portLevelMtls: mesh/namespace peer authentication cannot have port level mTLS (portLevelMtls requires selector): "+
				"move the port-level modes to a PeerAuthentication with a selector for the workloads that have those ports"),
		}},
		{name: "CUSTOM on identities", snap: snap(external), want: []Finding{
			want(SchemaValidationError, external, "Schema validation error: spec.rules[0].from[0].source: From.Namespaces is currently not supported with CUSTOM action: "+
				"match on ipBlocks or the operation, and let the provider decide the rest"),
			want(SchemaValidationError, external, "Schema validation error: spec.rules[0].when[0].key: source.principal is currently not supported with CUSTOM action"),
		}},
		{name: "DENY without rules", snap: snap(denyNothing), want: []Finding{
			want(SchemaValidationError, denyNothing, "Schema validation error: spec.rules: DENY action without `rules` is meaningless as it will never be triggered, "+
				"add an empty rule `{}` if you want it be triggered for every request"),
		}},
		{name: "authorization sources and operations", snap: snap(sources), want: []Finding{
			want(SchemaValidationError, sources, "Schema validation error: spec.rules[0].from[0].source: `from.source` must not be empty, found at rule 0: "+
				"name the sources (principals, namespaces, ipBlocks, ...), or remove the from entry to match every source"),
			want(SchemaValidationError, sources, `Schema validation error: spec.rules[0].from[1].source.ipBlocks[0]: "203.0.113.7/33" is neither an IP address nor a CIDR: write it as 10.0.0.0/16 or 10.0.0.1`),
			want(SchemaValidationError, sources, "Schema validation error: spec.rules[0].from[1].source.principals[0]: empty value not allowed, found in principals"),
			want(SchemaValidationError, sources, "Schema validation error: spec.rules[0].from[2].source: cannot set serviceAccounts with namespaces or principals, found at rule 0"),
			want(SchemaValidationError, sources, `Schema validation error: spec.rules[0].to[0].operation.ports[0]: invalid port "http": a port is a number from 0 to 65535`),
			want(SchemaValidationError, sources, "Schema validation error: spec.rules[0].when[0]: at least one of `values` or `notValues` must be set for key request.headers[x-tier]"),
		}},
	})
}
