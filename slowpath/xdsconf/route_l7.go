package xdsconf

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// httpFaultFilter is the name under which typed_per_filter_config
// overrides the fault filter per route.
const httpFaultFilter = "envoy.filters.http.fault"

// Envoy's defaults of the L7 cluster settings.
const (
	DefaultMaxPendingRequests = 1024
	DefaultMaxRequests        = 1024
	DefaultMaxRetries         = 3
)

// wildDomain is a "*.suffix" (affix ".suffix") or "prefix.*" (affix
// "prefix.") domain.
type wildDomain struct {
	affix string
	vh    *VirtualHost
}

// compiledRoute is the Store's compiled form of an RDS resource: what
// L4 takes (the catch-all route) and the L7 configuration.
type compiledRoute struct {
	def routeDefault
	rc  *RouteConfig
}

// RoutesFor is the route configuration of an HTTP chain: its inline
// route_config, else the RDS one it names; nil when that has not
// arrived.
func (s *Snapshot) RoutesFor(h *HTTPChain) *RouteConfig {
	if h == nil {
		return nil
	}
	if h.routes != nil {
		return h.routes
	}
	return s.Routes[h.RouteConfig]
}

// Routes is the compiled inline route_config of an inbound HCM chain;
// nil for a chain that reads RDS (Snapshot.RoutesFor finds either).
func (h *HTTPChain) Routes() *RouteConfig { return h.routes }

var defaultClusterHTTP = &ClusterHTTP{MaxPendingRequests: DefaultMaxPendingRequests, MaxRequests: DefaultMaxRequests, MaxRetries: DefaultMaxRetries}

// HTTP are the cluster's L7 settings: circuit breaker thresholds,
// HTTP/2, requests per connection, outlier detection. Never nil (a
// cluster made by hand has Envoy's defaults); do not modify.
func (c *Cluster) HTTP() *ClusterHTTP {
	if c.http == nil {
		return defaultClusterHTTP
	}
	return c.http
}

// VirtualHost chooses the virtual host for a request's Host or
// :authority (as sent, with its port if any), in Envoy's order: an
// exact domain, then "*.suffix" wildcards longest first, then
// "prefix.*" wildcards longest first, then "*". Case is ignored. Nil
// when none matches (Envoy answers 404). It does not allocate.
func (rc *RouteConfig) VirtualHost(authority string) *VirtualHost {
	if rc == nil {
		return nil
	}
	switch {
	case !hasUpper(authority):
		if vh, ok := rc.exact[authority]; ok {
			return vh
		}
	case len(authority) <= 256:
		var buf [256]byte
		n := copy(buf[:], authority)
		for i := range n {
			if c := buf[i]; 'A' <= c && c <= 'Z' {
				buf[i] = c + 'a' - 'A'
			}
		}
		if vh, ok := rc.exact[string(buf[:n])]; ok { // a map index does not allocate
			return vh
		}
	default: // longer than any DNS name
		if vh, ok := rc.exact[strings.ToLower(authority)]; ok {
			return vh
		}
	}
	for _, w := range rc.suffixes {
		// The wildcard matches at least one character.
		if len(authority) > len(w.affix) && lowerEqual(authority[len(authority)-len(w.affix):], w.affix) {
			return w.vh
		}
	}
	for _, w := range rc.prefixes {
		if len(authority) > len(w.affix) && lowerEqual(authority[:len(w.affix)], w.affix) {
			return w.vh
		}
	}
	return rc.star
}

// lowerEqual reports whether s equals the lower-case lower, ignoring
// ASCII case.
func lowerEqual(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// Route chooses the first route whose match holds for a request: its
// method, its :path (with the query, as sent) and its headers, which
// headers reports by lower-case name (several values joined by ",", as
// Envoy joins them). Nil when no route matches (Envoy answers 404). It
// does not allocate.
func (vh *VirtualHost) Route(method, path string, headers func(name string) (string, bool)) *Route {
	if vh == nil {
		return nil
	}
	for _, r := range vh.Routes {
		if r.Match.matches(method, path, headers) {
			return r
		}
	}
	return nil
}

func (m *RouteMatch) matches(method, path string, headers func(string) (string, bool)) bool {
	switch m.PathKind {
	case PathPrefix:
		if !strings.HasPrefix(path, m.Path) {
			return false
		}
	case PathExact:
		if stripQuery(path) != m.Path {
			return false
		}
	case PathRegex:
		if !m.Regex.MatchString(stripQuery(path)) {
			return false
		}
	}
	for i := range m.Headers {
		h := &m.Headers[i]
		var v string
		var ok bool
		switch h.Name {
		case ":method":
			v, ok = method, true
		case ":path":
			v, ok = path, true
		default:
			if headers != nil {
				v, ok = headers(h.Name)
			}
		}
		if !h.Matches(v, ok) {
			return false
		}
	}
	return true
}

// Matches reports whether the matcher holds for a header with value v,
// present or not, as Envoy (and gRPC's xDS) decides: a missing header
// never matches a value matcher, inverted or not; present_match compares
// presence, then invert_match inverts.
func (h *HeaderMatch) Matches(v string, present bool) bool {
	if h.Kind == HeaderPresent {
		return (present == h.Present) != h.Invert
	}
	if !present {
		return false
	}
	var m bool
	switch h.Kind {
	case HeaderExact:
		m = v == h.Value
	case HeaderPrefix:
		m = strings.HasPrefix(v, h.Value)
	case HeaderSuffix:
		m = strings.HasSuffix(v, h.Value)
	case HeaderRegex:
		m = h.Regex.MatchString(v)
	}
	return m != h.Invert
}

func stripQuery(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i]
	}
	return p
}

// PickCluster chooses one of the route's clusters by weight, with r a
// uniformly random number the caller draws (rand.Uint32()), as
// TCPProxy.PickCluster. It does not allocate.
func (r *Route) PickCluster(rnd uint32) string {
	return pickWeighted(r.Clusters, r.total, rnd)
}

// Has reports whether every condition of c is in the set.
func (o RetryOn) Has(c RetryOn) bool { return o&c == c }

// RetriableStatus reports whether a response status is retried by the
// policy's HTTP conditions: 5xx, gateway-error (502, 503, 504),
// retriable-4xx (409) and retriable-status-codes. Resets, connect
// failures and gRPC statuses are the proxy's to test with On.
func (p *RetryPolicy) RetriableStatus(code int) bool {
	if p == nil {
		return false
	}
	switch {
	case p.On.Has(Retry5xx) && code >= 500 && code <= 599:
		return true
	case p.On.Has(RetryGatewayError) && (code == 502 || code == 503 || code == 504):
		return true
	case p.On.Has(RetryRetriable4xx) && code == 409:
		return true
	case p.On.Has(RetryRetriableStatusCodes):
		for _, c := range p.RetriableStatusCodes {
			if int(c) == code {
				return true
			}
		}
	}
	return false
}

// Hit reports whether a request falls in the fraction, with r a
// uniformly random number the caller draws (rand.Uint32()).
func (f Fraction) Hit(r uint32) bool { return r%1_000_000 < uint32(f) }

// retryOnNames are Envoy's retry_on conditions.
var retryOnNames = map[string]RetryOn{
	"5xx": Retry5xx, "gateway-error": RetryGatewayError, "reset": RetryReset,
	"reset-before-request": RetryResetBeforeRequest, "connect-failure": RetryConnectFailure,
	"envoy-ratelimited": RetryEnvoyRateLimited, "retriable-4xx": RetryRetriable4xx,
	"refused-stream": RetryRefusedStream, "retriable-status-codes": RetryRetriableStatusCodes,
	"retriable-headers": RetryRetriableHeaders, "http3-post-connect-failure": RetryHTTP3PostConnectFailure,
	"cancelled": RetryCancelled, "deadline-exceeded": RetryDeadlineExceeded, "internal": RetryInternal,
	"resource-exhausted": RetryResourceExhausted, "unavailable": RetryUnavailable,
}

// ParseRetryOn parses a retry_on value: conditions separated by ",",
// spaces around them ignored.
func ParseRetryOn(s string) (RetryOn, error) {
	var out RetryOn
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		c, ok := retryOnNames[f]
		if !ok {
			return 0, fmt.Errorf("%q is not one of Envoy's retry conditions (%s)", f, strings.Join(slices.Sorted(maps.Keys(retryOnNames)), ", "))
		}
		out |= c
	}
	return out, nil
}

// compileRouteConfig converts a route configuration for L7: every
// field the controller emits (docs/xds.md, "VirtualService → routes")
// is compiled, and any other is refused.
func compileRouteConfig(rc *routev3.RouteConfiguration, path string) (*RouteConfig, error) {
	if err := onlyFields(rc, path, "name", "virtual_hosts", "validate_clusters"); err != nil {
		return nil, err
	}
	if rc.GetValidateClusters().GetValue() {
		return nil, errorf(path+".validate_clusters", "true is not supported: the slow path resolves clusters per request (an unknown one is 503); set false")
	}
	out := &RouteConfig{Name: rc.GetName(), exact: map[string]*VirtualHost{}}
	seen := map[string]string{}
	for i, v := range rc.GetVirtualHosts() {
		p := fmt.Sprintf("%s.virtual_hosts[%d]", path, i)
		if err := onlyFields(v, p, "name", "domains", "routes"); err != nil {
			return nil, err
		}
		vh := &VirtualHost{Name: v.GetName()}
		if len(v.GetDomains()) == 0 {
			return nil, errorf(p+".domains", "must not be empty (\"*\" matches every authority)")
		}
		for j, d := range v.GetDomains() {
			dp := fmt.Sprintf("%s.domains[%d]", p, j)
			d = strings.ToLower(d)
			if prev, ok := seen[d]; ok {
				return nil, errorf(dp, "%q is also a domain of %s (a domain belongs to one virtual host, as in Envoy)", d, prev)
			}
			seen[d] = p
			vh.Domains = append(vh.Domains, d)
			switch n := strings.Count(d, "*"); {
			case d == "":
				return nil, errorf(dp, "must not be empty")
			case d == "*":
				out.star = vh
			case n == 1 && d[0] == '*':
				out.suffixes = append(out.suffixes, wildDomain{d[1:], vh})
			case n == 1 && d[len(d)-1] == '*':
				out.prefixes = append(out.prefixes, wildDomain{d[:len(d)-1], vh})
			case n == 0:
				out.exact[d] = vh
			default:
				return nil, errorf(dp, "%q: a wildcard is \"*\" alone, at the start (\"*.example.com\") or at the end (\"example.*\")", d)
			}
		}
		for j, r := range v.GetRoutes() {
			cr, err := compileL7Route(r, fmt.Sprintf("%s.routes[%d]", p, j))
			if err != nil {
				return nil, err
			}
			vh.Routes = append(vh.Routes, cr)
		}
		out.VirtualHosts = append(out.VirtualHosts, vh)
	}
	longest := func(a, b wildDomain) int { return cmp.Compare(len(b.affix), len(a.affix)) }
	slices.SortStableFunc(out.suffixes, longest)
	slices.SortStableFunc(out.prefixes, longest)
	return out, nil
}

// compileL7Route converts one route.
func compileL7Route(r *routev3.Route, path string) (*Route, error) {
	if err := onlyFields(r, path, "name", "match", "route", "typed_per_filter_config"); err != nil {
		return nil, err
	}
	out := &Route{Name: r.GetName()}
	m := r.GetMatch()
	if m == nil {
		return nil, errorf(path+".match", "missing")
	}
	mp := path + ".match"
	if err := onlyFields(m, mp, "prefix", "path", "safe_regex", "headers"); err != nil {
		return nil, err
	}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		out.Match.PathKind, out.Match.Path = PathPrefix, ps.Prefix
	case *routev3.RouteMatch_Path:
		out.Match.PathKind, out.Match.Path = PathExact, ps.Path
	case *routev3.RouteMatch_SafeRegex:
		re, err := safeRegex(ps.SafeRegex, mp+".safe_regex")
		if err != nil {
			return nil, err
		}
		out.Match.PathKind, out.Match.Regex = PathRegex, re
	default:
		return nil, errorf(mp, "no path specifier (prefix, path or safe_regex)")
	}
	for i, h := range m.GetHeaders() {
		hm, err := compileHeaderMatch(h, fmt.Sprintf("%s.headers[%d]", mp, i))
		if err != nil {
			return nil, err
		}
		out.Match.Headers = append(out.Match.Headers, hm)
	}
	a := r.GetRoute()
	if a == nil {
		return nil, errorf(path, "action %s is not supported (the controller emits route)", oneofName(r, "action"))
	}
	ap := path + ".route"
	if err := onlyFields(a, ap, "cluster", "weighted_clusters", "timeout", "retry_policy", "hash_policy"); err != nil {
		return nil, err
	}
	switch cs := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		if cs.Cluster == "" {
			return nil, errorf(ap+".cluster", "must not be empty")
		}
		out.Clusters = []WeightedCluster{{Name: cs.Cluster, Weight: 1}}
	case *routev3.RouteAction_WeightedClusters:
		wp := ap + ".weighted_clusters"
		if err := onlyFields(cs.WeightedClusters, wp, "clusters"); err != nil {
			return nil, err
		}
		for i, wc := range cs.WeightedClusters.GetClusters() {
			p := fmt.Sprintf("%s.clusters[%d]", wp, i)
			if err := onlyFields(wc, p, "name", "weight"); err != nil {
				return nil, err
			}
			if wc.GetName() == "" {
				return nil, errorf(p+".name", "must not be empty")
			}
			if w := wc.GetWeight().GetValue(); w > 0 {
				out.Clusters = append(out.Clusters, WeightedCluster{Name: wc.GetName(), Weight: w})
			}
		}
		if len(out.Clusters) == 0 {
			return nil, errorf(wp+".clusters", "no cluster with a weight above 0")
		}
	default:
		return nil, errorf(ap, "cluster specifier %s is not supported (use cluster or weighted_clusters)", oneofName(a, "cluster_specifier"))
	}
	out.total = sumWeights(out.Clusters)
	out.Timeout = DefaultRouteTimeout
	if a.Timeout != nil {
		d, err := duration(a.GetTimeout(), ap+".timeout")
		if err != nil {
			return nil, err
		}
		out.Timeout = d
		if d == 0 {
			out.Timeout = NoRouteTimeout
		}
	}
	var err error
	if out.Hash, err = compileHashPolicy(a.GetHashPolicy(), ap+".hash_policy"); err != nil {
		return nil, err
	}
	if rp := a.GetRetryPolicy(); rp != nil {
		p, err := compileRetryPolicy(rp, ap+".retry_policy")
		if err != nil {
			return nil, err
		}
		out.Retry = p
	}
	for name, cfg := range r.GetTypedPerFilterConfig() {
		p := fmt.Sprintf("%s.typed_per_filter_config[%q]", path, name)
		if name != httpFaultFilter {
			return nil, errorf(p, "not supported (the slow path takes per-route config for %s only)", httpFaultFilter)
		}
		msg, err := unpack(cfg, p)
		if err != nil {
			return nil, err
		}
		f, ok := msg.(*faultv3.HTTPFault)
		if !ok {
			return nil, errorf(p, "is a %s, want envoy.extensions.filters.http.fault.v3.HTTPFault", msg.ProtoReflect().Descriptor().FullName())
		}
		if out.Fault, err = compileFault(f, p); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// duration reads a non-negative duration.
func duration(d *durationpb.Duration, path string) (time.Duration, error) {
	if err := d.CheckValid(); err != nil {
		return 0, errorf(path, "%v", err)
	}
	v := d.AsDuration()
	if v < 0 {
		return 0, errorf(path, "%s is negative", v)
	}
	return v, nil
}

// compileHeaderMatch converts a route's header matcher.
func compileHeaderMatch(h *routev3.HeaderMatcher, path string) (HeaderMatch, error) {
	if err := onlyFields(h, path, "name", "exact_match", "safe_regex_match", "present_match", "prefix_match",
		"suffix_match", "string_match", "invert_match"); err != nil {
		return HeaderMatch{}, err
	}
	if h.GetName() == "" {
		return HeaderMatch{}, errorf(path+".name", "must not be empty")
	}
	out := HeaderMatch{Name: strings.ToLower(h.GetName()), Invert: h.GetInvertMatch()}
	notEmpty := func(v, field string) error {
		if v == "" {
			return errorf(path+"."+field, "must not be empty (use present_match)")
		}
		return nil
	}
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case nil: // Envoy: no specifier is a presence match
		out.Kind, out.Present = HeaderPresent, true
	case *routev3.HeaderMatcher_PresentMatch:
		out.Kind, out.Present = HeaderPresent, s.PresentMatch
	case *routev3.HeaderMatcher_ExactMatch:
		out.Kind, out.Value = HeaderExact, s.ExactMatch
	case *routev3.HeaderMatcher_PrefixMatch:
		out.Kind, out.Value = HeaderPrefix, s.PrefixMatch
		if err := notEmpty(s.PrefixMatch, "prefix_match"); err != nil {
			return HeaderMatch{}, err
		}
	case *routev3.HeaderMatcher_SuffixMatch:
		out.Kind, out.Value = HeaderSuffix, s.SuffixMatch
		if err := notEmpty(s.SuffixMatch, "suffix_match"); err != nil {
			return HeaderMatch{}, err
		}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		re, err := safeRegex(s.SafeRegexMatch, path+".safe_regex_match")
		if err != nil {
			return HeaderMatch{}, err
		}
		out.Kind, out.Regex = HeaderRegex, re
	case *routev3.HeaderMatcher_StringMatch:
		sp := path + ".string_match"
		sm := s.StringMatch
		if err := onlyFields(sm, sp, "exact", "prefix", "suffix", "safe_regex"); err != nil {
			return HeaderMatch{}, err
		}
		switch p := sm.GetMatchPattern().(type) {
		case *matcherv3.StringMatcher_Exact:
			out.Kind, out.Value = HeaderExact, p.Exact
		case *matcherv3.StringMatcher_Prefix:
			out.Kind, out.Value = HeaderPrefix, p.Prefix
			if err := notEmpty(p.Prefix, "string_match.prefix"); err != nil {
				return HeaderMatch{}, err
			}
		case *matcherv3.StringMatcher_Suffix:
			out.Kind, out.Value = HeaderSuffix, p.Suffix
			if err := notEmpty(p.Suffix, "string_match.suffix"); err != nil {
				return HeaderMatch{}, err
			}
		case *matcherv3.StringMatcher_SafeRegex:
			re, err := safeRegex(p.SafeRegex, sp+".safe_regex")
			if err != nil {
				return HeaderMatch{}, err
			}
			out.Kind, out.Regex = HeaderRegex, re
		default:
			return HeaderMatch{}, errorf(sp, "no match pattern (exact, prefix, suffix or safe_regex)")
		}
	default:
		return HeaderMatch{}, errorf(path, "%s is not supported", oneofName(h, "header_match_specifier"))
	}
	return out, nil
}

// compileRetryPolicy converts a route's retry_policy.
func compileRetryPolicy(rp *routev3.RetryPolicy, path string) (*RetryPolicy, error) {
	if err := onlyFields(rp, path, "retry_on", "num_retries", "per_try_timeout", "retriable_status_codes",
		"retry_host_predicate", "host_selection_retry_max_attempts"); err != nil {
		return nil, err
	}
	on, err := ParseRetryOn(rp.GetRetryOn())
	if err != nil {
		return nil, errorf(path+".retry_on", "%v", err)
	}
	out := &RetryPolicy{On: on, NumRetries: 1, HostSelectionMaxAttempts: rp.GetHostSelectionRetryMaxAttempts()}
	if rp.NumRetries != nil {
		out.NumRetries = rp.GetNumRetries().GetValue()
	}
	if rp.PerTryTimeout != nil {
		if out.PerTryTimeout, err = duration(rp.GetPerTryTimeout(), path+".per_try_timeout"); err != nil {
			return nil, err
		}
	}
	if out.HostSelectionMaxAttempts < 0 {
		return nil, errorf(path+".host_selection_retry_max_attempts", "%d is negative", out.HostSelectionMaxAttempts)
	}
	for i, c := range rp.GetRetriableStatusCodes() {
		if c < 100 || c > 599 {
			return nil, errorf(fmt.Sprintf("%s.retriable_status_codes[%d]", path, i), "%d is not an HTTP status", c)
		}
	}
	out.RetriableStatusCodes = slices.Clone(rp.GetRetriableStatusCodes())
	for i, hp := range rp.GetRetryHostPredicate() {
		p := fmt.Sprintf("%s.retry_host_predicate[%d]", path, i)
		if err := onlyFields(hp, p, "name", "typed_config"); err != nil {
			return nil, err
		}
		m, err := unpack(hp.GetTypedConfig(), p+".typed_config")
		if err != nil {
			return nil, err
		}
		if _, ok := m.(*previoushostsv3.PreviousHostsPredicate); !ok {
			return nil, errorf(p+".typed_config", "retry host predicate %s is not supported (only previous_hosts)", m.ProtoReflect().Descriptor().FullName())
		}
		if err := onlyFields(m, p+".typed_config"); err != nil {
			return nil, err
		}
		out.PreviousHosts = true
	}
	return out, nil
}

// compileFault converts a route's HTTPFault override.
func compileFault(f *faultv3.HTTPFault, path string) (*Fault, error) {
	if err := onlyFields(f, path, "delay", "abort"); err != nil {
		return nil, err
	}
	out := &Fault{AbortGRPCStatus: -1}
	if d := f.GetDelay(); d != nil {
		p := path + ".delay"
		if err := onlyFields(d, p, "fixed_delay", "percentage"); err != nil {
			return nil, err
		}
		fd, ok := d.GetFaultDelaySecifier().(*faultcommonv3.FaultDelay_FixedDelay)
		if !ok {
			return nil, errorf(p, "%s is not supported (use fixed_delay)", oneofName(d, "fault_delay_secifier"))
		}
		var err error
		if out.Delay, err = duration(fd.FixedDelay, p+".fixed_delay"); err != nil {
			return nil, err
		}
		if out.DelayPercent, err = fraction(d.GetPercentage(), p+".percentage"); err != nil {
			return nil, err
		}
	}
	if a := f.GetAbort(); a != nil {
		p := path + ".abort"
		if err := onlyFields(a, p, "http_status", "grpc_status", "percentage"); err != nil {
			return nil, err
		}
		switch e := a.GetErrorType().(type) {
		case *faultv3.FaultAbort_HttpStatus:
			if e.HttpStatus < 200 || e.HttpStatus > 599 {
				return nil, errorf(p+".http_status", "%d: want 200..599 (as Envoy)", e.HttpStatus)
			}
			out.AbortHTTPStatus = int(e.HttpStatus)
		case *faultv3.FaultAbort_GrpcStatus:
			if e.GrpcStatus > 16 {
				return nil, errorf(p+".grpc_status", "%d is not a gRPC status code (0..16)", e.GrpcStatus)
			}
			out.AbortGRPCStatus = int(e.GrpcStatus)
		default:
			return nil, errorf(p, "%s is not supported (use http_status or grpc_status)", oneofName(a, "error_type"))
		}
		var err error
		if out.AbortPercent, err = fraction(a.GetPercentage(), p+".percentage"); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// fraction converts a FractionalPercent to parts per million. Unset is
// Envoy's 0%.
func fraction(fp *typev3.FractionalPercent, path string) (Fraction, error) {
	if fp == nil {
		return 0, nil
	}
	if err := onlyFields(fp, path, "numerator", "denominator"); err != nil {
		return 0, err
	}
	var scale uint64
	switch fp.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		scale = 10000
	case typev3.FractionalPercent_TEN_THOUSAND:
		scale = 100
	case typev3.FractionalPercent_MILLION:
		scale = 1
	default:
		return 0, errorf(path+".denominator", "%s is not a denominator", fp.GetDenominator())
	}
	return Fraction(min(uint64(fp.GetNumerator())*scale, 1_000_000)), nil
}

// compileClusterHTTP converts a cluster's L7 settings: the DEFAULT
// priority's request thresholds, the HTTP protocol options and outlier
// detection, as the controller emits them (docs/xds.md,
// "DestinationRule"); anything else there is refused.
func compileClusterHTTP(c *clusterv3.Cluster, path string) (*ClusterHTTP, error) {
	out := *defaultClusterHTTP
	for i, t := range c.GetCircuitBreakers().GetThresholds() {
		if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
			continue
		}
		p := fmt.Sprintf("%s.circuit_breakers.thresholds[%d]", path, i)
		if t.RetryBudget != nil {
			return nil, errorf(p+".retry_budget", "not supported (use max_retries)")
		}
		for _, f := range []struct {
			v    interface{ GetValue() uint32 }
			set  bool
			dst  *uint32
			name string
		}{
			{t.GetMaxPendingRequests(), t.MaxPendingRequests != nil, &out.MaxPendingRequests, "max_pending_requests"},
			{t.GetMaxRequests(), t.MaxRequests != nil, &out.MaxRequests, "max_requests"},
			{t.GetMaxRetries(), t.MaxRetries != nil, &out.MaxRetries, "max_retries"},
		} {
			if !f.set {
				continue
			}
			switch v := f.v.GetValue(); v {
			case math.MaxUint32:
				*f.dst = 0
			case 0:
				return nil, errorf(p+"."+f.name, "0 is not supported; omit it for Envoy's default or set 4294967295 for no limit")
			default:
				*f.dst = v
			}
		}
		break
	}
	if o := c.GetOutlierDetection(); o != nil {
		od, err := compileOutlier(o, path+".outlier_detection")
		if err != nil {
			return nil, err
		}
		out.Outlier = od
	}
	if a, ok := c.GetTypedExtensionProtocolOptions()[httpProtocolOptions]; ok {
		p := fmt.Sprintf("%s.typed_extension_protocol_options[%q]", path, httpProtocolOptions)
		m, err := unpack(a, p)
		if err != nil {
			return nil, err
		}
		opts, ok := m.(*httpv3.HttpProtocolOptions)
		if !ok {
			return nil, errorf(p, "is a %s, not HttpProtocolOptions", m.ProtoReflect().Descriptor().FullName())
		}
		if err := onlyFields(opts, p, "common_http_protocol_options", "explicit_http_config"); err != nil {
			return nil, err
		}
		if co := opts.GetCommonHttpProtocolOptions(); co != nil {
			if err := onlyFields(co, p+".common_http_protocol_options", "max_requests_per_connection"); err != nil {
				return nil, err
			}
			out.MaxRequestsPerConnection = co.GetMaxRequestsPerConnection().GetValue()
		}
		if ex := opts.GetExplicitHttpConfig(); ex != nil {
			ep := p + ".explicit_http_config"
			switch pc := ex.GetProtocolConfig().(type) {
			case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions:
				if err := onlyFields(pc.HttpProtocolOptions, ep+".http_protocol_options"); err != nil {
					return nil, err
				}
			case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions:
				if err := onlyFields(pc.Http2ProtocolOptions, ep+".http2_protocol_options"); err != nil {
					return nil, err
				}
				out.HTTP2 = true
			default:
				return nil, errorf(ep, "%s is not supported (use http_protocol_options or http2_protocol_options)", oneofName(ex, "protocol_config"))
			}
		} else if opts.UpstreamProtocolOptions != nil {
			return nil, errorf(p, "upstream protocol %s is not supported (use explicit_http_config)", oneofName(opts, "upstream_protocol_options"))
		}
	}
	if out == *defaultClusterHTTP {
		return defaultClusterHTTP, nil
	}
	return &out, nil
}

// compileOutlier converts outlier detection: consecutive 5xx only, with
// success-rate ejection off (Istio's enforcing_success_rate: 0).
func compileOutlier(o *clusterv3.OutlierDetection, path string) (*OutlierDetection, error) {
	if err := onlyFields(o, path, "consecutive_5xx", "enforcing_consecutive_5xx", "interval", "base_ejection_time",
		"max_ejection_percent", "enforcing_success_rate"); err != nil {
		return nil, err
	}
	if o.EnforcingSuccessRate == nil || o.GetEnforcingSuccessRate().GetValue() != 0 {
		return nil, errorf(path+".enforcing_success_rate", "success-rate ejection is not supported; set enforcing_success_rate: 0 (as Istio does)")
	}
	out := &OutlierDetection{Consecutive5xx: 5, EnforcingConsecutive5xx: 100, Interval: 10 * time.Second,
		BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 10}
	if o.Consecutive_5Xx != nil {
		out.Consecutive5xx = o.GetConsecutive_5Xx().GetValue()
	}
	if o.EnforcingConsecutive_5Xx != nil {
		out.EnforcingConsecutive5xx = o.GetEnforcingConsecutive_5Xx().GetValue()
		if out.EnforcingConsecutive5xx > 100 {
			return nil, errorf(path+".enforcing_consecutive_5xx", "%d is above 100 (a percentage)", out.EnforcingConsecutive5xx)
		}
	}
	if o.MaxEjectionPercent != nil {
		out.MaxEjectionPercent = min(o.GetMaxEjectionPercent().GetValue(), 100)
	}
	for _, f := range []struct {
		d    *durationpb.Duration
		dst  *time.Duration
		name string
	}{{o.GetInterval(), &out.Interval, "interval"}, {o.GetBaseEjectionTime(), &out.BaseEjectionTime, "base_ejection_time"}} {
		if f.d == nil {
			continue
		}
		d, err := duration(f.d, path+"."+f.name)
		if err != nil {
			return nil, err
		}
		if d == 0 {
			return nil, errorf(path+"."+f.name, "must be positive")
		}
		*f.dst = d
	}
	return out, nil
}
