package envoy

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fibmesh/fibmesh/controller/model"
)

// Istio's retry policy where a route sets none.
const (
	defaultRetryOn       = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
	defaultRetries       = 2
	hostSelectionRetries = 5
)

// routes builds the RouteConfiguration of every service port the
// outbound listener sends to RDS, sorted by name.
func (b *builder) routes(ix *index, served []hostPort) ([]*routev3.RouteConfiguration, error) {
	out := make([]*routev3.RouteConfiguration, 0, len(served))
	for _, hp := range served {
		rc, err := b.routeConfig(ix, ix.byHost[hp.host], hp.port)
		if err != nil {
			return nil, err
		}
		out = append(out, rc)
	}
	slices.SortFunc(out, func(a, b *routev3.RouteConfiguration) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// routeConfig is the route configuration of one HTTP service port: one
// virtual host for every name the service is called by, and the routes
// of the host's VirtualService (the first by namespace and name, as
// Istio applies), else one route to the service.
func (b *builder) routeConfig(ix *index, svc *model.Service, pn uint32) (*routev3.RouteConfiguration, error) {
	name := RouteName(svc.Hostname, pn)
	vh := &routev3.VirtualHost{Name: name, Domains: domains(svc, pn)}
	if r := ix.routes[svc.Hostname]; r != nil {
		for i, hr := range r.HTTP {
			rs, err := b.httpRoute(ix, hr, pn)
			if err != nil {
				return nil, fmt.Errorf("route configuration %s: virtual service %s/%s http[%d]: %w", name, r.Namespace, r.Name, i, err)
			}
			vh.Routes = append(vh.Routes, rs...)
		}
	}
	if len(vh.Routes) == 0 { // no VirtualService, or none of its rules for this port
		vh.Routes = []*routev3.Route{{
			Name:  "default",
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: b.routeAction(&routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: ClusterName(svc.Hostname, pn, "")},
				HashPolicy:       hashPolicy(ix, []model.Destination{{Host: svc.Hostname}}),
			}, nil, 0)},
		}}
	}
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{vh}, ValidateClusters: wrapperspb.Bool(false)}, nil
}

// domains are the names a service port is called by: the host, the
// short names of a Kubernetes Service (name, name.namespace,
// name.namespace.svc) and the VIPs, each bare and with the port.
func domains(svc *model.Service, pn uint32) []string {
	names := []string{svc.Hostname}
	if !svc.ServiceEntry {
		if short := svc.Name + "." + svc.Namespace + ".svc"; strings.HasPrefix(svc.Hostname, short+".") {
			names = append(names, svc.Name, svc.Name+"."+svc.Namespace, short)
		}
	}
	names = append(names, svc.VIPs...)
	out := make([]string, 0, 2*len(names))
	ps := ":" + port(pn)
	for _, n := range names {
		if strings.Contains(n, ":") { // an IPv6 VIP: bracketed with the port
			out = append(out, n, "["+n+"]"+ps)
			continue
		}
		out = append(out, n, n+ps)
	}
	slices.Sort(out)
	return slices.Compact(out) // Envoy rejects a domain twice
}

// httpRoute translates one rule: an Envoy route per match that applies
// to this port (Istio's order), all with the same action.
func (b *builder) httpRoute(ix *index, hr model.HTTPRoute, pn uint32) ([]*routev3.Route, error) {
	var matches []*routev3.RouteMatch
	if len(hr.Matches) == 0 {
		matches = append(matches, &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}})
	}
	for _, m := range hr.Matches {
		if m.Port != 0 && m.Port != pn {
			continue
		}
		matches = append(matches, routeMatch(m))
	}
	if len(matches) == 0 {
		return nil, nil
	}
	action := &routev3.RouteAction{}
	var wc []*routev3.WeightedCluster_ClusterWeight
	for _, d := range hr.Destinations {
		if d.Weight <= 0 && len(hr.Destinations) > 1 {
			continue // Istio leaves out weight 0
		}
		wc = append(wc, &routev3.WeightedCluster_ClusterWeight{Name: ClusterName(d.Host, destPort(ix, d, pn), d.Subset), Weight: wrapperspb.UInt32(uint32(max(d.Weight, 1)))})
	}
	switch len(wc) {
	case 0:
		return nil, fmt.Errorf("route: no destination with a weight")
	case 1:
		action.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: wc[0].Name}
	default:
		action.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: wc}}
	}
	action.HashPolicy = hashPolicy(ix, hr.Destinations)
	var timeout time.Duration
	if hr.Timeout != "" {
		var err error
		if timeout, err = time.ParseDuration(hr.Timeout); err != nil {
			return nil, fmt.Errorf("timeout: %w", err)
		}
	}
	rp, err := b.retryPolicy(hr.Retries)
	if err != nil {
		return nil, fmt.Errorf("retries: %w", err)
	}
	var perFilter map[string]*anypb.Any
	if hr.Fault != nil {
		f, err := fault(hr.Fault)
		if err != nil {
			return nil, fmt.Errorf("fault: %w", err)
		}
		if f != nil {
			perFilter = map[string]*anypb.Any{wkFault: b.any(f)}
		}
	}
	out := make([]*routev3.Route, 0, len(matches))
	for _, m := range matches {
		act := action
		if len(out) > 0 { // every route its own action, so none is shared
			act = &routev3.RouteAction{ClusterSpecifier: action.ClusterSpecifier, HashPolicy: action.HashPolicy}
		}
		out = append(out, &routev3.Route{
			Name: hr.Name, Match: m, TypedPerFilterConfig: perFilter,
			Action: &routev3.Route_Route{Route: b.routeAction(act, rp, timeout)},
		})
	}
	return out, nil
}

// hashPolicy is a route's hash_policy, as Istio puts the consistent-hash
// key of a DestinationRule on the routes to its host: the key of the
// first destination (with a weight) whose host's DestinationRule has
// one (the destinations of a canary split, subsets of one host, share
// it; analyze reports destinations of several hosts whose keys
// differ). nil when none has a key, or the key cannot be expressed (a
// cookie without a name: analyze reports it).
func hashPolicy(ix *index, ds []model.Destination) []*routev3.RouteAction_HashPolicy {
	for _, d := range ds {
		if d.Weight <= 0 && len(ds) > 1 {
			continue
		}
		dp := ix.policies[d.Host]
		if dp == nil || dp.LoadBalancer != "CONSISTENT_HASH" || dp.ConsistentHash == nil {
			continue
		}
		if hp := hashKey(dp.ConsistentHash); hp != nil {
			return []*routev3.RouteAction_HashPolicy{hp}
		}
	}
	return nil
}

// hashKey translates a consistent-hash key to Envoy's hash policy, as
// Istio: header, cookie (name, path, ttl), connection_properties
// source_ip, query_parameter; nil when there is none.
func hashKey(ch *model.ConsistentHash) *routev3.RouteAction_HashPolicy {
	switch {
	case ch.HTTPHeaderName != "":
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: strings.ToLower(ch.HTTPHeaderName)}}}
	case ch.HTTPCookie != nil && ch.HTTPCookie.Name != "":
		c := &routev3.RouteAction_HashPolicy_Cookie{Name: ch.HTTPCookie.Name, Path: ch.HTTPCookie.Path}
		if ch.HTTPCookie.TTL != "" {
			d, err := time.ParseDuration(ch.HTTPCookie.TTL)
			if err != nil || d < 0 {
				return nil // the model writes Go durations: never
			}
			c.Ttl = durationpb.New(d)
		}
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: c}}
	case ch.UseSourceIP:
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
			ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}}
	case ch.HTTPQueryParameterName != "":
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_QueryParameter_{
			QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: ch.HTTPQueryParameterName}}}
	}
	return nil
}

// routeAction sets the timeout (0: none, where Envoy's default would be
// 15s, as Istio does) and the retry policy (Istio's default when nil).
func (b *builder) routeAction(a *routev3.RouteAction, rp *routev3.RetryPolicy, timeout time.Duration) *routev3.RouteAction {
	a.Timeout = durationpb.New(timeout)
	if rp == nil {
		rp = b.defaultRetryPolicy()
	}
	if rp.NumRetries.GetValue() > 0 {
		a.RetryPolicy = rp
	}
	return a
}

// destPort is the service port a destination names: as written, else
// the destination service's only port, else the port being routed.
func destPort(ix *index, d model.Destination, pn uint32) uint32 {
	if d.Port != 0 {
		return d.Port
	}
	if s := ix.byHost[d.Host]; s != nil && len(s.Ports) == 1 {
		return uint32(s.Ports[0].Port)
	}
	return pn
}

// routeMatch translates a match: uri to the path specifier, method to
// the :method header, headers by name.
func routeMatch(m model.Match) *routev3.RouteMatch {
	rm := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	if u := m.URI; u != nil {
		switch u.Kind {
		case "exact":
			rm.PathSpecifier = &routev3.RouteMatch_Path{Path: u.Value}
		case "prefix":
			rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: u.Value}
		case "regex":
			rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: u.Value}}
		}
	}
	if m.Method != nil {
		rm.Headers = append(rm.Headers, headerMatch(":method", *m.Method))
	}
	names := make([]string, 0, len(m.Headers))
	for k := range m.Headers {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		rm.Headers = append(rm.Headers, headerMatch(k, m.Headers[k]))
	}
	return rm
}

// headerMatch matches a header as Istio does; an empty prefix, which
// Envoy rejects, is "present".
func headerMatch(name string, sm model.StringMatch) *routev3.HeaderMatcher {
	h := &routev3.HeaderMatcher{Name: name}
	var m *matcherv3.StringMatcher
	switch sm.Kind {
	case "prefix":
		if sm.Value == "" {
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
			return h
		}
		m = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: sm.Value}}
	case "regex":
		m = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: sm.Value}}}
	default:
		m = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: sm.Value}}
	}
	h.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: m}
	return h
}

// retryPolicy translates retries: retry_on joined by ",", with Istio's
// numeric codes (e.g. "503") moved to retriable_status_codes. Nil
// retries give nil (the default policy); 0 attempts disable retries.
func (b *builder) retryPolicy(r *model.Retries) (*routev3.RetryPolicy, error) {
	if r == nil {
		return nil, nil
	}
	rp := &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(uint32(max(r.Attempts, 0)))}
	if r.Attempts <= 0 {
		return rp, nil
	}
	var on []string
	for _, c := range r.RetryOn {
		if code, err := strconv.ParseUint(c, 10, 32); err == nil {
			rp.RetriableStatusCodes = append(rp.RetriableStatusCodes, uint32(code))
			continue
		}
		on = append(on, c)
	}
	if len(rp.RetriableStatusCodes) > 0 && !slices.Contains(on, "retriable-status-codes") {
		on = append(on, "retriable-status-codes")
	}
	rp.RetryOn = strings.Join(on, ",")
	if len(on) == 0 { // Istio's conditions
		rp.RetryOn = defaultRetryOn
		if len(rp.RetriableStatusCodes) == 0 {
			rp.RetriableStatusCodes = []uint32{503}
		}
	}
	if r.PerTryTimeout != "" {
		d, err := time.ParseDuration(r.PerTryTimeout)
		if err != nil {
			return nil, fmt.Errorf("perTryTimeout: %w", err)
		}
		rp.PerTryTimeout = durationpb.New(d)
	}
	b.retryHosts(rp)
	return rp, nil
}

// defaultRetryPolicy is Istio's retry policy for routes without one.
func (b *builder) defaultRetryPolicy() *routev3.RetryPolicy {
	rp := &routev3.RetryPolicy{RetryOn: defaultRetryOn, NumRetries: wrapperspb.UInt32(defaultRetries), RetriableStatusCodes: []uint32{503}}
	b.retryHosts(rp)
	return rp
}

// retryHosts makes retries prefer other hosts, as Istio does.
func (b *builder) retryHosts(rp *routev3.RetryPolicy) {
	rp.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{{
		Name: wkPreviousHosts, ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: b.any(&previoushostsv3.PreviousHostsPredicate{})},
	}}
	rp.HostSelectionRetryMaxAttempts = hostSelectionRetries
}

// percent is an Istio percentage (a double) in millionths, Envoy's
// finest denominator.
func percent(p float64) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{
		Numerator:   uint32(math.Round(min(max(p, 0), 100) * 10000)),
		Denominator: typev3.FractionalPercent_MILLION,
	}
}

// fault is the fault filter's per-route config; nil when the fault
// injects nothing.
func fault(f *model.Fault) (*faultv3.HTTPFault, error) {
	out := &faultv3.HTTPFault{}
	if f.Delay != "" {
		d, err := time.ParseDuration(f.Delay)
		if err != nil {
			return nil, fmt.Errorf("delay.fixedDelay: %w", err)
		}
		out.Delay = &faultcommonv3.FaultDelay{
			FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d)},
			Percentage:         percent(f.DelayPercent),
		}
	}
	switch {
	case f.AbortGRPCStatus != "":
		code, ok := grpcCode(f.AbortGRPCStatus)
		if !ok {
			return nil, fmt.Errorf("abort.grpcStatus %q: not a gRPC status name", f.AbortGRPCStatus)
		}
		out.Abort = &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: code}, Percentage: percent(f.AbortPercent)}
	case f.AbortStatus != 0:
		if f.AbortStatus < 200 || f.AbortStatus >= 600 {
			return nil, fmt.Errorf("abort.httpStatus %d: want 200..599", f.AbortStatus)
		}
		out.Abort = &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: uint32(f.AbortStatus)}, Percentage: percent(f.AbortPercent)}
	}
	if out.Delay == nil && out.Abort == nil {
		return nil, nil
	}
	return out, nil
}

// grpcCodes are the gRPC status names by code.
var grpcCodes = []string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
	"OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

// grpcCode is the code of a gRPC status name (or number).
func grpcCode(s string) (uint32, bool) {
	if i := slices.Index(grpcCodes, strings.ToUpper(s)); i >= 0 {
		return uint32(i), true
	}
	if n, err := strconv.ParseUint(s, 10, 32); err == nil && n < uint64(len(grpcCodes)) {
		return uint32(n), true
	}
	return 0, false
}

// RouteConfigs builds only the named route configurations (names as
// RouteName makes them) of m, for a change that touched routes and
// nothing else: which host ports have a route configuration depends on
// services only, so the names in force stay the same and BuildMesh's
// other work can be skipped. A name whose host or port m does not serve
// is an error (the caller's names are stale: build the whole mesh).
func RouteConfigs(m *model.Model, names []string) ([]*routev3.RouteConfiguration, error) {
	ix := newIndex(m)
	b := &builder{}
	out := make([]*routev3.RouteConfiguration, 0, len(names))
	for _, name := range names {
		i := strings.LastIndexByte(name, ':')
		if i < 0 {
			return nil, fmt.Errorf("route configuration %q: not <host>:<port>", name)
		}
		pn, err := strconv.ParseUint(name[i+1:], 10, 32)
		svc := ix.byHost[name[:i]]
		if err != nil || svc == nil || !slices.ContainsFunc(svc.Ports, func(p model.Port) bool { return uint32(p.Port) == uint32(pn) && httpFamily(p.Protocol) }) {
			return nil, fmt.Errorf("route configuration %q: no such HTTP service port", name)
		}
		rc, err := b.routeConfig(ix, svc, uint32(pn))
		if err != nil {
			return nil, err
		}
		out = append(out, rc)
	}
	if b.err != nil {
		return nil, b.err
	}
	return out, nil
}
