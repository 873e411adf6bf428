package model

import (
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Route is a VirtualService: the HTTP routes for its hosts. Model.
// RoutesFor finds the routes of one host.
type Route struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Hosts are fully qualified as Istio does ("reviews" in namespace
	// production is reviews.production.svc.<suffix>); wildcards and
	// external names as written.
	Hosts []string `json:"hosts"`
	// HTTP are the rules in order: the first whose matches hold decides.
	HTTP []HTTPRoute `json:"http"`
	// TCP are the opaque TCP rules and TLS the TLS passthrough rules
	// (matched on the SNI of the TLS the application originates), each
	// in order: the first whose matches hold decides.
	TCP []L4Route `json:"tcp,omitempty"`
	TLS []L4Route `json:"tls,omitempty"`
}

// HasL4 reports whether the route has tcp or tls rules, which the
// outbound listener carries (HTTP rules live in route configurations).
func (r *Route) HasL4() bool { return len(r.TCP) > 0 || len(r.TLS) > 0 }

// L4Route is one tcp or tls rule of a Route.
type L4Route struct {
	// Matches: the rule applies when any holds; with none, always.
	Matches []L4Match `json:"matches,omitempty"`
	// Destinations share the connections by Weight.
	Destinations []Destination `json:"destinations"`
}

// L4Match is one match of a tcp or tls rule: every condition set must
// hold.
type L4Match struct {
	// SNIHosts (tls rules only) are the server names the ClientHello may
	// carry: a name without a dot is completed as a Service name in the
	// route's namespace; the others ("httpbin.org", "*.example.com") as
	// written.
	SNIHosts []string `json:"sniHosts,omitempty"`
	// DestinationSubnets: the original destination IP is in one (a bare
	// IP is a host prefix).
	DestinationSubnets []string `json:"destinationSubnets,omitempty"`
	// Port is the service port the connection is for; 0 for any.
	Port uint32 `json:"port,omitempty"`
	// SourceLabels and SourceNamespace select the client workloads the
	// match applies to (every label, and that namespace).
	SourceLabels    map[string]string `json:"sourceLabels,omitempty"`
	SourceNamespace string            `json:"sourceNamespace,omitempty"`
}

// SelectsSources reports whether the match applies to some client
// workloads only.
func (m *L4Match) SelectsSources() bool {
	return len(m.SourceLabels) > 0 || m.SourceNamespace != ""
}

// SelectsSource reports whether the match applies to client workload w
// (every match without source conditions does).
func (m *L4Match) SelectsSource(w *Workload) bool {
	if m.SourceNamespace != "" && w.Namespace != m.SourceNamespace {
		return false
	}
	for k, v := range m.SourceLabels {
		if got, ok := w.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// HTTPRoute is one rule of a Route.
type HTTPRoute struct {
	Name string `json:"name,omitempty"`
	// Matches: the rule applies when any holds; with none, always.
	Matches []Match `json:"matches,omitempty"`
	// Destinations share the traffic by Weight.
	Destinations []Destination `json:"destinations"`
	// Timeout of the whole request, retries included, as a Go duration
	// string ("10s"); "" for none.
	Timeout string   `json:"timeout,omitempty"`
	Retries *Retries `json:"retries,omitempty"`
	Fault   *Fault   `json:"fault,omitempty"`
}

// Match is one HTTP match: every condition set must hold (URI on the
// path, Method on the method, Headers on request headers by lower-case
// name, Port on the destination port).
type Match struct {
	URI     *StringMatch           `json:"uri,omitempty"`
	Method  *StringMatch           `json:"method,omitempty"`
	Headers map[string]StringMatch `json:"headers,omitempty"`
	Port    uint32                 `json:"port,omitempty"`
}

// StringMatch is an exact, prefix or regex (RE2) match.
type StringMatch struct {
	// Kind is "exact", "prefix" or "regex".
	Kind  string `json:"kind"`
	Value string `json:"value"`
}

// Destination is a weighted target of a route.
type Destination struct {
	// Host is fully qualified, as Route.Hosts.
	Host string `json:"host"`
	// Subset names a subset of the host's DestinationPolicy.
	Subset string `json:"subset,omitempty"`
	// Port is the service port; 0 when the host has only one.
	Port uint32 `json:"port,omitempty"`
	// Weight is the share in percent; a sole destination written
	// without a weight gets 100.
	Weight int32 `json:"weight"`
}

// Retries of a route: up to Attempts retries, each within
// PerTryTimeout (a Go duration string), on the RetryOn conditions
// (Envoy's names: 5xx, reset, connect-failure, ...), split from Istio's
// comma-separated list.
type Retries struct {
	Attempts      int32    `json:"attempts"`
	PerTryTimeout string   `json:"perTryTimeout,omitempty"`
	RetryOn       []string `json:"retryOn,omitempty"`
}

// Fault injected into a route: DelayPercent of requests delayed by
// Delay (a Go duration string); AbortPercent of requests answered with
// AbortStatus (HTTP) or AbortGRPCStatus.
type Fault struct {
	DelayPercent float64 `json:"delayPercent,omitempty"`
	Delay        string  `json:"delay,omitempty"`
	AbortPercent float64 `json:"abortPercent,omitempty"`
	AbortStatus  int32   `json:"abortStatus,omitempty"`
	// AbortGRPCStatus is the gRPC status name (UNAVAILABLE, ...) a
	// gRPC abort returns.
	AbortGRPCStatus string `json:"abortGrpcStatus,omitempty"`
}

// DestinationPolicy is a DestinationRule: how traffic to a host is
// balanced, limited and ejected, and its subsets.
type DestinationPolicy struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Host      string `json:"host"` // fully qualified
	// LoadBalancer is the simple policy's name (ROUND_ROBIN,
	// LEAST_REQUEST, RANDOM, PASSTHROUGH, UNSPECIFIED), CONSISTENT_HASH,
	// or "" when none is set.
	LoadBalancer string `json:"loadBalancer,omitempty"`
	// ConsistentHash is loadBalancer.consistentHash when LoadBalancer
	// is CONSISTENT_HASH; nil otherwise.
	ConsistentHash *ConsistentHash `json:"consistentHash,omitempty"`
	// MaxConnections, HTTP1MaxPending and HTTP2MaxRequests are the
	// connection pool's limits; 0 for none.
	MaxConnections   int32 `json:"maxConnections,omitempty"`
	HTTP1MaxPending  int32 `json:"http1MaxPendingRequests,omitempty"`
	HTTP2MaxRequests int32 `json:"http2MaxRequests,omitempty"`
	// ConnectTimeout, MaxRequestsPerConnection and MaxRetries are the
	// rest of the connection pool fibmesh applies.
	ConnectTimeout           string   `json:"connectTimeout,omitempty"`
	MaxRequestsPerConnection int32    `json:"maxRequestsPerConnection,omitempty"`
	MaxRetries               int32    `json:"maxRetries,omitempty"`
	Outlier                  *Outlier `json:"outlierDetection,omitempty"`
	// Subsets in the order written. Subset-level traffic policies are
	// not represented yet (analyze reports them).
	Subsets []Subset `json:"subsets,omitempty"`
}

// ConsistentHash is consistent-hash load balancing: requests with the
// same key go to the same endpoint while the endpoints stay the same.
// The key is one of HTTPHeaderName, HTTPCookie, UseSourceIP and
// HTTPQueryParameterName (none: no key, every request is balanced at
// random, as Envoy does); the table is a ring of at least
// MinimumRingSize entries (ringHash.minimumRingSize, or the deprecated
// minimumRingSize; 0: Envoy's default), or Maglev's lookup table of
// MaglevTableSize entries (0: Envoy's default) when Maglev is set.
type ConsistentHash struct {
	HTTPHeaderName         string      `json:"httpHeaderName,omitempty"`
	HTTPCookie             *HTTPCookie `json:"httpCookie,omitempty"`
	UseSourceIP            bool        `json:"useSourceIp,omitempty"`
	HTTPQueryParameterName string      `json:"httpQueryParameterName,omitempty"`
	MinimumRingSize        uint64      `json:"minimumRingSize,omitempty"`
	Maglev                 bool        `json:"maglev,omitempty"`
	MaglevTableSize        uint64      `json:"maglevTableSize,omitempty"`
}

// HTTPCookie is a consistent-hash key read from a cookie. With a TTL (a
// Go duration string; "" when unset) a request without the cookie gets
// one generated and set on the response (Max-Age TTL, "0s": a session
// cookie); without one it has no key.
type HTTPCookie struct {
	Name string `json:"name"`
	Path string `json:"path,omitempty"`
	TTL  string `json:"ttl,omitempty"`
}

// Outlier is outlier detection: an endpoint with Consecutive5xx errors
// in a row is ejected for BaseEjectionTime (longer each time), checked
// every Interval, at most MaxEjectionPercent of the host's endpoints at
// once. Durations are Go duration strings.
type Outlier struct {
	Consecutive5xx     uint32 `json:"consecutive5xxErrors,omitempty"`
	Interval           string `json:"interval,omitempty"`
	BaseEjectionTime   string `json:"baseEjectionTime,omitempty"`
	MaxEjectionPercent int32  `json:"maxEjectionPercent,omitempty"`
}

// Subset is a named group of a host's endpoints, by label.
type Subset struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
}

// AuthzPolicy is an AuthorizationPolicy and the workloads it applies to.
type AuthzPolicy struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Selector  map[string]string `json:"selector,omitempty"`
	Action    string            `json:"action"` // ALLOW, DENY, AUDIT, CUSTOM
	// Rules match a request when any rule does. Nil (no rules) matches
	// nothing: an ALLOW policy without rules denies everything; a rule
	// with no fields matches everything.
	Rules []AuthzRule `json:"rules"`
	// Workloads are namespace/name of the pods it applies to, sorted:
	// those its selector matches (every pod without a selector) in its
	// namespace, or in every namespace for a policy in RootNamespace.
	Workloads []string `json:"workloads"`
}

// AuthzRule is one rule: it matches when any From source, any To
// operation and every When condition match; an empty list matches
// anything.
type AuthzRule struct {
	From []AuthzSource    `json:"from,omitempty"`
	To   []AuthzOperation `json:"to,omitempty"`
	When []Condition      `json:"when,omitempty"`
}

// AuthzSource is one source of a rule: every field set must match, each
// field matching when any of its values does (a Not field when none
// does).
type AuthzSource struct {
	Principals           []string `json:"principals,omitempty"`
	NotPrincipals        []string `json:"notPrincipals,omitempty"`
	RequestPrincipals    []string `json:"requestPrincipals,omitempty"`
	NotRequestPrincipals []string `json:"notRequestPrincipals,omitempty"`
	Namespaces           []string `json:"namespaces,omitempty"`
	NotNamespaces        []string `json:"notNamespaces,omitempty"`
	ServiceAccounts      []string `json:"serviceAccounts,omitempty"`
	NotServiceAccounts   []string `json:"notServiceAccounts,omitempty"`
	IPBlocks             []string `json:"ipBlocks,omitempty"`
	NotIPBlocks          []string `json:"notIpBlocks,omitempty"`
	RemoteIPBlocks       []string `json:"remoteIpBlocks,omitempty"`
	NotRemoteIPBlocks    []string `json:"notRemoteIpBlocks,omitempty"`
}

// AuthzOperation is one operation of a rule: every field set must match,
// each field matching when any of its values does (a Not field when none
// does).
type AuthzOperation struct {
	Hosts      []string `json:"hosts,omitempty"`
	NotHosts   []string `json:"notHosts,omitempty"`
	Ports      []string `json:"ports,omitempty"`
	NotPorts   []string `json:"notPorts,omitempty"`
	Methods    []string `json:"methods,omitempty"`
	NotMethods []string `json:"notMethods,omitempty"`
	Paths      []string `json:"paths,omitempty"`
	NotPaths   []string `json:"notPaths,omitempty"`
}

// Condition is a `when` condition: the key's value must be one of Values
// (when set) and none of NotValues.
type Condition struct {
	Key       string   `json:"key"`
	Values    []string `json:"values,omitempty"`
	NotValues []string `json:"notValues,omitempty"`
}

// fqdn resolves a host as Istio does in namespace ns: "reviews" and
// "reviews.prod" are Kubernetes service names; anything with more dots
// (or a wildcard) is taken as written.
func fqdn(host, ns, suffix string) string {
	if strings.HasPrefix(host, "*") {
		return host
	}
	switch strings.Count(host, ".") {
	case 0:
		return host + "." + ns + ".svc." + suffix
	case 1:
		return host + ".svc." + suffix
	}
	return host
}

// sniFQDN resolves an sniHosts entry as Istio does: a name without a
// dot is a Kubernetes service name in namespace ns; anything else
// (httpbin.org, *.example.com) is the server name as clients send it.
func sniFQDN(host, ns, suffix string) string {
	if host == "*" || strings.Contains(host, ".") {
		return host
	}
	return host + "." + ns + ".svc." + suffix
}

// dur renders a duration as Go does ("10s", "1.5s"), rounded to the
// millisecond; "" when unset.
func dur(d *durationpb.Duration) string {
	if d == nil {
		return ""
	}
	return d.AsDuration().Round(time.Millisecond).String()
}

// stringMatch converts a StringMatch; nil when none of exact, prefix or
// regex is set.
func stringMatch(m *networkingv1alpha3.StringMatch) *StringMatch {
	switch v := m.GetMatchType().(type) {
	case *networkingv1alpha3.StringMatch_Exact:
		return &StringMatch{"exact", v.Exact}
	case *networkingv1alpha3.StringMatch_Prefix:
		return &StringMatch{"prefix", v.Prefix}
	case *networkingv1alpha3.StringMatch_Regex:
		return &StringMatch{"regex", v.Regex}
	}
	return nil
}

// buildRoute converts a VirtualService's hosts and HTTP routes.
func buildRoute(vs *networkingv1.VirtualService, suffix string) *Route {
	r := &Route{Namespace: vs.Namespace, Name: vs.Name}
	for _, h := range vs.Spec.GetHosts() {
		r.Hosts = append(r.Hosts, fqdn(h, vs.Namespace, suffix))
	}
	for _, h := range vs.Spec.GetHttp() {
		hr := HTTPRoute{Name: h.GetName(), Timeout: dur(h.GetTimeout())}
		for _, m := range h.GetMatch() {
			mm := Match{URI: stringMatch(m.GetUri()), Method: stringMatch(m.GetMethod()), Port: m.GetPort()}
			for k, v := range m.GetHeaders() {
				sm := stringMatch(v)
				if sm == nil {
					// `name: {}`: Istio matches a request that has the
					// header (an empty prefix: present_match).
					sm = &StringMatch{"prefix", ""}
				}
				if mm.Headers == nil {
					mm.Headers = map[string]StringMatch{}
				}
				mm.Headers[k] = *sm
			}
			hr.Matches = append(hr.Matches, mm)
		}
		for _, d := range h.GetRoute() {
			w := d.GetWeight()
			if w == 0 && len(h.GetRoute()) == 1 {
				w = 100
			}
			hr.Destinations = append(hr.Destinations, Destination{
				Host: fqdn(d.GetDestination().GetHost(), vs.Namespace, suffix), Subset: d.GetDestination().GetSubset(),
				Port: d.GetDestination().GetPort().GetNumber(), Weight: w,
			})
		}
		if rt := h.GetRetries(); rt != nil {
			hr.Retries = &Retries{Attempts: rt.GetAttempts(), PerTryTimeout: dur(rt.GetPerTryTimeout())}
			for _, on := range strings.Split(rt.GetRetryOn(), ",") {
				if on = strings.TrimSpace(on); on != "" {
					hr.Retries.RetryOn = append(hr.Retries.RetryOn, on)
				}
			}
		}
		if f := h.GetFault(); f != nil {
			hr.Fault = &Fault{
				Delay: dur(f.GetDelay().GetFixedDelay()), AbortPercent: f.GetAbort().GetPercentage().GetValue(),
				AbortStatus: f.GetAbort().GetHttpStatus(), AbortGRPCStatus: f.GetAbort().GetGrpcStatus(),
			}
			if d := f.GetDelay(); d != nil {
				hr.Fault.DelayPercent = d.GetPercentage().GetValue()
				if d.GetPercentage() == nil {
					hr.Fault.DelayPercent = float64(d.GetPercent()) //nolint:staticcheck // deprecated, still served
				}
			}
		}
		r.HTTP = append(r.HTTP, hr)
	}
	for _, t := range vs.Spec.GetTcp() {
		lr := L4Route{Destinations: l4Destinations(t.GetRoute(), vs.Namespace, suffix)}
		for _, m := range t.GetMatch() {
			lr.Matches = append(lr.Matches, L4Match{
				DestinationSubnets: slices.Clone(m.GetDestinationSubnets()), Port: m.GetPort(),
				SourceLabels: maps.Clone(m.GetSourceLabels()), SourceNamespace: m.GetSourceNamespace(),
			})
		}
		r.TCP = append(r.TCP, lr)
	}
	for _, t := range vs.Spec.GetTls() {
		lr := L4Route{Destinations: l4Destinations(t.GetRoute(), vs.Namespace, suffix)}
		for _, m := range t.GetMatch() {
			lm := L4Match{
				DestinationSubnets: slices.Clone(m.GetDestinationSubnets()), Port: m.GetPort(),
				SourceLabels: maps.Clone(m.GetSourceLabels()), SourceNamespace: m.GetSourceNamespace(),
			}
			for _, h := range m.GetSniHosts() {
				lm.SNIHosts = append(lm.SNIHosts, sniFQDN(h, vs.Namespace, suffix))
			}
			lr.Matches = append(lr.Matches, lm)
		}
		r.TLS = append(r.TLS, lr)
	}
	return r
}

// l4Destinations converts a tcp or tls rule's destinations, as HTTP
// ones: a sole destination without a weight gets 100.
func l4Destinations(rds []*networkingv1alpha3.RouteDestination, ns, suffix string) []Destination {
	out := make([]Destination, 0, len(rds))
	for _, d := range rds {
		w := d.GetWeight()
		if w == 0 && len(rds) == 1 {
			w = 100
		}
		out = append(out, Destination{
			Host: fqdn(d.GetDestination().GetHost(), ns, suffix), Subset: d.GetDestination().GetSubset(),
			Port: d.GetDestination().GetPort().GetNumber(), Weight: w,
		})
	}
	return out
}

// buildDestinationPolicy converts a DestinationRule.
func buildDestinationPolicy(dr *networkingv1.DestinationRule, suffix string) *DestinationPolicy {
	p := &DestinationPolicy{Namespace: dr.Namespace, Name: dr.Name, Host: fqdn(dr.Spec.GetHost(), dr.Namespace, suffix)}
	tp := dr.Spec.GetTrafficPolicy()
	if lb := tp.GetLoadBalancer(); lb != nil {
		p.LoadBalancer = lb.GetSimple().String()
		if ch := lb.GetConsistentHash(); ch != nil {
			p.LoadBalancer = "CONSISTENT_HASH"
			p.ConsistentHash = consistentHash(ch)
		}
	}
	p.MaxConnections = tp.GetConnectionPool().GetTcp().GetMaxConnections()
	p.ConnectTimeout = dur(tp.GetConnectionPool().GetTcp().GetConnectTimeout())
	p.MaxRequestsPerConnection = tp.GetConnectionPool().GetHttp().GetMaxRequestsPerConnection()
	p.MaxRetries = tp.GetConnectionPool().GetHttp().GetMaxRetries()
	p.HTTP1MaxPending = tp.GetConnectionPool().GetHttp().GetHttp1MaxPendingRequests()
	p.HTTP2MaxRequests = tp.GetConnectionPool().GetHttp().GetHttp2MaxRequests()
	if od := tp.GetOutlierDetection(); od != nil {
		p.Outlier = &Outlier{
			Consecutive5xx: od.GetConsecutive_5XxErrors().GetValue(), Interval: dur(od.GetInterval()),
			BaseEjectionTime: dur(od.GetBaseEjectionTime()), MaxEjectionPercent: od.GetMaxEjectionPercent(),
		}
	}
	for _, s := range dr.Spec.GetSubsets() {
		p.Subsets = append(p.Subsets, Subset{Name: s.GetName(), Labels: maps.Clone(s.GetLabels())})
	}
	return p
}

// consistentHash converts loadBalancer.consistentHash.
func consistentHash(ch *networkingv1alpha3.LoadBalancerSettings_ConsistentHashLB) *ConsistentHash {
	out := &ConsistentHash{
		HTTPHeaderName: ch.GetHttpHeaderName(), UseSourceIP: ch.GetUseSourceIp(),
		HTTPQueryParameterName: ch.GetHttpQueryParameterName(), MinimumRingSize: ch.GetMinimumRingSize(),
	}
	if c := ch.GetHttpCookie(); c != nil {
		out.HTTPCookie = &HTTPCookie{Name: c.GetName(), Path: c.GetPath(), TTL: dur(c.GetTtl())}
	}
	switch {
	case ch.GetMaglev() != nil:
		out.Maglev, out.MaglevTableSize, out.MinimumRingSize = true, ch.GetMaglev().GetTableSize(), 0
	case ch.GetRingHash() != nil:
		out.MinimumRingSize = ch.GetRingHash().GetMinimumRingSize()
	}
	return out
}

// buildAuthz converts an AuthorizationPolicy and finds its workloads.
func buildAuthz(ap *securityv1.AuthorizationPolicy, workloads []*Workload) *AuthzPolicy {
	p := &AuthzPolicy{Namespace: ap.Namespace, Name: ap.Name, Action: ap.Spec.GetAction().String(), Selector: maps.Clone(ap.Spec.GetSelector().GetMatchLabels())}
	for _, r := range ap.Spec.GetRules() {
		ar := AuthzRule{}
		for _, f := range r.GetFrom() {
			s := f.GetSource()
			ar.From = append(ar.From, AuthzSource{
				Principals: slices.Clone(s.GetPrincipals()), NotPrincipals: slices.Clone(s.GetNotPrincipals()),
				RequestPrincipals: slices.Clone(s.GetRequestPrincipals()), NotRequestPrincipals: slices.Clone(s.GetNotRequestPrincipals()),
				Namespaces: slices.Clone(s.GetNamespaces()), NotNamespaces: slices.Clone(s.GetNotNamespaces()),
				ServiceAccounts: slices.Clone(s.GetServiceAccounts()), NotServiceAccounts: slices.Clone(s.GetNotServiceAccounts()),
				IPBlocks: slices.Clone(s.GetIpBlocks()), NotIPBlocks: slices.Clone(s.GetNotIpBlocks()),
				RemoteIPBlocks: slices.Clone(s.GetRemoteIpBlocks()), NotRemoteIPBlocks: slices.Clone(s.GetNotRemoteIpBlocks()),
			})
		}
		for _, t := range r.GetTo() {
			o := t.GetOperation()
			ar.To = append(ar.To, AuthzOperation{
				Hosts: slices.Clone(o.GetHosts()), NotHosts: slices.Clone(o.GetNotHosts()),
				Ports: slices.Clone(o.GetPorts()), NotPorts: slices.Clone(o.GetNotPorts()),
				Methods: slices.Clone(o.GetMethods()), NotMethods: slices.Clone(o.GetNotMethods()),
				Paths: slices.Clone(o.GetPaths()), NotPaths: slices.Clone(o.GetNotPaths()),
			})
		}
		for _, c := range r.GetWhen() {
			ar.When = append(ar.When, Condition{Key: c.GetKey(), Values: slices.Clone(c.GetValues()), NotValues: slices.Clone(c.GetNotValues())})
		}
		p.Rules = append(p.Rules, ar)
	}
	sel := labels.SelectorFromSet(p.Selector)
	p.Workloads = []string{}
	for _, w := range workloads { // sorted, so Workloads is too
		if ap.Namespace != RootNamespace && w.Namespace != ap.Namespace {
			continue
		}
		if len(p.Selector) == 0 || sel.Matches(labels.Set(w.Labels)) {
			p.Workloads = append(p.Workloads, w.Namespace+"/"+w.Name)
		}
	}
	return p
}
