package model

import (
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Route is a VirtualService: the HTTP routes for its hosts.
type Route struct {
	Namespace string      `json:"namespace"`
	Name      string      `json:"name"`
	Hosts     []string    `json:"hosts"` // fully qualified
	HTTP      []HTTPRoute `json:"http"`
}

// HTTPRoute is one rule: the first whose matches hold decides.
type HTTPRoute struct {
	Name         string        `json:"name,omitempty"`
	Matches      []Match       `json:"matches,omitempty"` // any; none = always
	Destinations []Destination `json:"destinations"`
	Timeout      string        `json:"timeout,omitempty"`
	Retries      *Retries      `json:"retries,omitempty"`
	Fault        *Fault        `json:"fault,omitempty"`
}

// Match is one HTTP match: every condition set must hold.
type Match struct {
	URI     *StringMatch           `json:"uri,omitempty"`
	Method  *StringMatch           `json:"method,omitempty"`
	Headers map[string]StringMatch `json:"headers,omitempty"`
	Port    uint32                 `json:"port,omitempty"`
}

// StringMatch is an exact, prefix or regex match.
type StringMatch struct {
	Kind  string `json:"kind"` // exact, prefix, regex
	Value string `json:"value"`
}

// Destination is a weighted target of a route.
type Destination struct {
	Host   string `json:"host"` // fully qualified
	Subset string `json:"subset,omitempty"`
	Port   uint32 `json:"port,omitempty"`
	Weight int32  `json:"weight"`
}

// Retries of a route.
type Retries struct {
	Attempts      int32    `json:"attempts"`
	PerTryTimeout string   `json:"perTryTimeout,omitempty"`
	RetryOn       []string `json:"retryOn,omitempty"`
}

// Fault injected into a route.
type Fault struct {
	DelayPercent float64 `json:"delayPercent,omitempty"`
	Delay        string  `json:"delay,omitempty"`
	AbortPercent float64 `json:"abortPercent,omitempty"`
	AbortStatus  int32   `json:"abortStatus,omitempty"`
}

// DestinationPolicy is a DestinationRule: how traffic to a host is
// balanced, limited and ejected, and its subsets.
type DestinationPolicy struct {
	Namespace        string   `json:"namespace"`
	Name             string   `json:"name"`
	Host             string   `json:"host"` // fully qualified
	LoadBalancer     string   `json:"loadBalancer,omitempty"`
	MaxConnections   int32    `json:"maxConnections,omitempty"`
	HTTP1MaxPending  int32    `json:"http1MaxPendingRequests,omitempty"`
	HTTP2MaxRequests int32    `json:"http2MaxRequests,omitempty"`
	Outlier          *Outlier `json:"outlierDetection,omitempty"`
	Subsets          []Subset `json:"subsets,omitempty"`
}

// Outlier is outlier detection.
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
	Rules     []AuthzRule       `json:"rules,omitempty"`
	// Workloads are namespace/name of the pods it applies to (all pods
	// of the namespace without a selector, of the mesh in the root
	// namespace).
	Workloads []string `json:"workloads"`
}

// AuthzRule is one rule: every field set must match.
type AuthzRule struct {
	Principals []string    `json:"principals,omitempty"`
	Namespaces []string    `json:"namespaces,omitempty"`
	IPBlocks   []string    `json:"ipBlocks,omitempty"`
	Hosts      []string    `json:"hosts,omitempty"`
	Ports      []string    `json:"ports,omitempty"`
	Methods    []string    `json:"methods,omitempty"`
	Paths      []string    `json:"paths,omitempty"`
	When       []Condition `json:"when,omitempty"`
}

// Condition is a `when` condition.
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

func dur(d *durationpb.Duration) string {
	if d == nil {
		return ""
	}
	return d.AsDuration().Round(time.Millisecond).String()
}

func stringMatch(m *networkingv1alpha3.StringMatch) *StringMatch {
	switch {
	case m == nil:
		return nil
	case m.GetExact() != "":
		return &StringMatch{"exact", m.GetExact()}
	case m.GetPrefix() != "":
		return &StringMatch{"prefix", m.GetPrefix()}
	case m.GetRegex() != "":
		return &StringMatch{"regex", m.GetRegex()}
	}
	return nil
}

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
				if sm := stringMatch(v); sm != nil {
					if mm.Headers == nil {
						mm.Headers = map[string]StringMatch{}
					}
					mm.Headers[k] = *sm
				}
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
				DelayPercent: f.GetDelay().GetPercentage().GetValue(), Delay: dur(f.GetDelay().GetFixedDelay()),
				AbortPercent: f.GetAbort().GetPercentage().GetValue(), AbortStatus: f.GetAbort().GetHttpStatus(),
			}
		}
		r.HTTP = append(r.HTTP, hr)
	}
	return r
}

func buildDestinationPolicy(dr *networkingv1.DestinationRule, suffix string) *DestinationPolicy {
	p := &DestinationPolicy{Namespace: dr.Namespace, Name: dr.Name, Host: fqdn(dr.Spec.GetHost(), dr.Namespace, suffix)}
	tp := dr.Spec.GetTrafficPolicy()
	if lb := tp.GetLoadBalancer(); lb != nil {
		p.LoadBalancer = lb.GetSimple().String()
	}
	p.MaxConnections = tp.GetConnectionPool().GetTcp().GetMaxConnections()
	p.HTTP1MaxPending = tp.GetConnectionPool().GetHttp().GetHttp1MaxPendingRequests()
	p.HTTP2MaxRequests = tp.GetConnectionPool().GetHttp().GetHttp2MaxRequests()
	if od := tp.GetOutlierDetection(); od != nil {
		p.Outlier = &Outlier{
			Consecutive5xx: od.GetConsecutive_5XxErrors().GetValue(), Interval: dur(od.GetInterval()),
			BaseEjectionTime: dur(od.GetBaseEjectionTime()), MaxEjectionPercent: od.GetMaxEjectionPercent(),
		}
	}
	for _, s := range dr.Spec.GetSubsets() {
		p.Subsets = append(p.Subsets, Subset{Name: s.GetName(), Labels: s.GetLabels()})
	}
	return p
}

func buildAuthz(ap *securityv1.AuthorizationPolicy, workloads []*Workload) *AuthzPolicy {
	p := &AuthzPolicy{Namespace: ap.Namespace, Name: ap.Name, Action: ap.Spec.GetAction().String(), Selector: ap.Spec.GetSelector().GetMatchLabels()}
	for _, r := range ap.Spec.GetRules() {
		var ar AuthzRule
		for _, f := range r.GetFrom() {
			s := f.GetSource()
			ar.Principals = append(ar.Principals, s.GetPrincipals()...)
			ar.Namespaces = append(ar.Namespaces, s.GetNamespaces()...)
			ar.IPBlocks = append(ar.IPBlocks, s.GetIpBlocks()...)
		}
		for _, t := range r.GetTo() {
			o := t.GetOperation()
			ar.Hosts = append(ar.Hosts, o.GetHosts()...)
			ar.Ports = append(ar.Ports, o.GetPorts()...)
			ar.Methods = append(ar.Methods, o.GetMethods()...)
			ar.Paths = append(ar.Paths, o.GetPaths()...)
		}
		for _, c := range r.GetWhen() {
			ar.When = append(ar.When, Condition{Key: c.GetKey(), Values: c.GetValues(), NotValues: c.GetNotValues()})
		}
		p.Rules = append(p.Rules, ar)
	}
	sel := labels.SelectorFromSet(p.Selector)
	for _, w := range workloads {
		if ap.Namespace != RootNamespace && w.Namespace != ap.Namespace {
			continue
		}
		if len(p.Selector) == 0 || sel.Matches(labels.Set(w.Labels)) {
			p.Workloads = append(p.Workloads, w.Namespace+"/"+w.Name)
		}
	}
	if p.Workloads == nil {
		p.Workloads = []string{}
	}
	slices.Sort(p.Workloads)
	return p
}
