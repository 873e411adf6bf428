package analyze

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
)

// appliesToMesh reports whether a VirtualService binds to the mesh
// gateway (sidecar traffic): no gateways, or "mesh" among them.
func appliesToMesh(vs *networkingv1.VirtualService) bool {
	gws := vs.Spec.GetGateways()
	return len(gws) == 0 || slices.Contains(gws, "mesh")
}

// weightedDestination is an HTTP, TCP or TLS route destination.
type weightedDestination interface {
	GetDestination() *v1alpha3.Destination
	GetWeight() int32
}

// ruleDestinations is the destinations of one rule of a VirtualService,
// with the rule's path (spec.http[0], spec.tcp[1], spec.tls[0]).
type ruleDestinations struct {
	path  string
	dests []weightedDestination
}

// vsRules lists the destinations of every http, tcp and tls rule.
func vsRules(vs *networkingv1.VirtualService) []ruleDestinations {
	var out []ruleDestinations
	for i, h := range vs.Spec.GetHttp() {
		r := ruleDestinations{path: fmt.Sprintf("spec.http[%d]", i)}
		for _, d := range h.GetRoute() {
			r.dests = append(r.dests, d)
		}
		out = append(out, r)
	}
	for i, t := range vs.Spec.GetTcp() {
		r := ruleDestinations{path: fmt.Sprintf("spec.tcp[%d]", i)}
		for _, d := range t.GetRoute() {
			r.dests = append(r.dests, d)
		}
		out = append(out, r)
	}
	for i, t := range vs.Spec.GetTls() {
		r := ruleDestinations{path: fmt.Sprintf("spec.tls[%d]", i)}
		for _, d := range t.GetRoute() {
			r.dests = append(r.dests, d)
		}
		out = append(out, r)
	}
	return out
}

// annotatedDestination is one destination of a VirtualService with its
// path (spec.http[0].route[1].destination, spec.http[0].mirror) and
// whether it is a mirror.
type annotatedDestination struct {
	path   string
	mirror bool
	d      *v1alpha3.Destination
}

// vsDestinations lists every route destination (http, tcp, tls) and
// every mirror (mirror, mirrors[]) of a VirtualService, as Istio's
// analyzers do.
func vsDestinations(vs *networkingv1.VirtualService) []annotatedDestination {
	var out []annotatedDestination
	for _, rule := range vsRules(vs) {
		for j, rd := range rule.dests {
			if d := rd.GetDestination(); d != nil {
				out = append(out, annotatedDestination{path: fmt.Sprintf("%s.route[%d].destination", rule.path, j), d: d})
			}
		}
	}
	for i, h := range vs.Spec.GetHttp() {
		if m := h.GetMirror(); m != nil {
			out = append(out, annotatedDestination{path: fmt.Sprintf("spec.http[%d].mirror", i), mirror: true, d: m})
		}
		for j, m := range h.GetMirrors() {
			if d := m.GetDestination(); d != nil {
				out = append(out, annotatedDestination{path: fmt.Sprintf("spec.http[%d].mirrors[%d].destination", i, j), mirror: true, d: d})
			}
		}
	}
	return out
}

// routeDestinations checks every destination of every VirtualService as
// Istio's DestinationHostAnalyzer and DestinationRuleAnalyzer do:
//   - its host must be a Service or ServiceEntry host visible to the
//     VirtualService's namespace (exportTo), else IST0101;
//   - without a port, the host must have at most one port, else IST0112;
//   - with a port, the host must have that port, else IST0101;
//   - its subset, if any, must be defined by a DestinationRule for the
//     host, else IST0101 (checked whether or not the host is known).
func routeDestinations(ix *index) []Finding {
	var fs []Finding
	for _, vs := range ix.vss {
		for _, ad := range vsDestinations(vs.Obj) {
			d := ad.d
			kind := "host"
			if ad.mirror {
				kind = "mirror host"
			}
			host := fqdn(d.GetHost(), vs.Namespace)
			if reg, ok := ix.lookup(vs.Namespace, vs.Obj.Spec.GetExportTo(), d.GetHost()); !ok {
				why := fmt.Sprintf("no Service or ServiceEntry has host %s: fix the host or add the Service", host)
				if by := ix.definedBy(host); by != "" {
					why = fmt.Sprintf("%s has %s but is not exported to namespace %s (exportTo, or the %s annotation): export it there, or fix the host or the VirtualService's exportTo", by, host, vs.Namespace, exportToAnnotation)
				}
				fs = append(fs, finding(ReferencedResourceNotFound, vs.Resource, "Referenced %s not found: %q (%s.host); %s", kind, d.GetHost(), ad.path, why))
			} else if d.GetPort() == nil && len(reg.ports) > 1 {
				fs = append(fs, finding(VirtualServiceDestinationPortSelectorRequired, vs.Resource,
					"This VirtualService routes to a service %q that exposes multiple ports %s (%s). Specifying a port in the destination is required to disambiguate: set %s.port.number",
					d.GetHost(), portList(reg.ports), ad.path, ad.path))
			} else if p := d.GetPort().GetNumber(); d.GetPort() != nil && !slices.Contains(reg.ports, p) {
				fs = append(fs, finding(ReferencedResourceNotFound, vs.Resource,
					"Referenced host:port not found: %q (%s.port); host %s has ports %s: fix the port number",
					fmt.Sprintf("%s:%d", d.GetHost(), p), ad.path, host, portList(reg.ports)))
			}
			if s := d.GetSubset(); s != "" && !ix.subsets(host)[s] {
				kind := "host+subset"
				if ad.mirror {
					kind = "mirror+subset"
				}
				fs = append(fs, finding(ReferencedResourceNotFound, vs.Resource,
					"Referenced %s in destinationrule not found: %q (%s.subset); no DestinationRule for host %s defines subset %q: add it to the DestinationRule's subsets or fix the name",
					kind, d.GetHost()+"+"+s, ad.path, host, s))
			}
		}
	}
	return fs
}

func portList(ps []uint32) string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = fmt.Sprint(p)
	}
	return "[" + strings.Join(out, " ") + "]"
}

// routeWeights checks the destination weights of HTTP, TCP and TLS
// routes with more than one destination, as Istio's validation does:
// weights adding up to 0 are a schema error (IST0106: "total destination
// weight = 0"; Istio's webhook rejects it). Weights adding up to
// anything else but 100 are valid, and split traffic in proportion
// (Istio, Envoy and fibmesh alike); fibmesh reports them (FM0001) since
// they often mean a typo.
func routeWeights(ix *index) []Finding {
	var fs []Finding
	for _, vs := range ix.vss {
		for _, rule := range vsRules(vs.Obj) {
			rds := rule.dests
			if len(rds) < 2 {
				continue
			}
			sum := int64(0)
			parts := make([]string, len(rds))
			for j, rd := range rds {
				sum += int64(rd.GetWeight())
				parts[j] = fmt.Sprintf("%d", rd.GetWeight())
			}
			switch {
			case sum == 0:
				fs = append(fs, finding(SchemaValidationError, vs.Resource,
					"Schema validation error: %s.route: total destination weight = 0 (%s): give the destinations weights, e.g. adding up to 100",
					rule.path, strings.Join(parts, "+")))
			case sum != 100:
				fs = append(fs, finding(RouteWeightsNotHundred, vs.Resource,
					"%s.route weights add up to %d (%s), not 100: traffic is split in proportion to them; set weights that add up to 100 to say what you mean",
					rule.path, sum, strings.Join(parts, "+")))
			}
		}
	}
	return fs
}

// ineffectiveMatches reports rules that can never be used (IST0130)
// and matches that can never be used (IST0131), in the http, tcp and
// tls rules of each VirtualService, as Istio's validation does: rules
// are tried in order and the first that matches wins, so
//   - a rule after a rule without match is unreachable ("route without
//     matches defined before"; a rule without match after another one:
//     "only the last rule can have no matches");
//   - a match covered by a match of an earlier rule is ineffective
//     (IST0131), and a rule whose every match is is unreachable too
//     (IST0130 beside the IST0131s: "all matches used by prior rules").
//
// Istio finds covered matches by comparing them for equality (and HTTP
// URI prefixes for overlap); fibmesh compares them by what they match
// (matchCovers), which finds those and more. tcp and tls matches are
// compared for equality, as in Istio.
func ineffectiveMatches(ix *index) []Finding {
	var fs []Finding
	for _, vs := range ix.vss {
		report := func(c Code, format string, args ...any) {
			fs = append(fs, finding(c, vs.Resource, format, args...))
		}
		http := vs.Obj.Spec.GetHttp()
		unreachable(ruleSet{
			kind:    "",
			n:       len(http),
			matches: func(j int) int { return len(http[j].GetMatch()) },
			covers: func(i, j, k int) bool {
				return slices.ContainsFunc(http[i].GetMatch(), func(a *v1alpha3.HTTPMatchRequest) bool { return matchCovers(a, http[j].GetMatch()[k]) })
			},
			within:     func(j, m, k int) bool { return matchCovers(http[j].GetMatch()[m], http[j].GetMatch()[k]) },
			label:      func(j int) string { return ruleLabel(http, j) },
			matchLabel: func(j, k int) string { return matchLabel(http[j].GetMatch()[k].GetName(), k) },
		}, report)
		tcp := vs.Obj.Spec.GetTcp()
		unreachable(ruleSet{
			kind:    "tcp ",
			n:       len(tcp),
			matches: func(j int) int { return len(tcp[j].GetMatch()) },
			covers: func(i, j, k int) bool {
				return slices.ContainsFunc(tcp[i].GetMatch(), func(a *v1alpha3.L4MatchAttributes) bool { return proto.Equal(a, tcp[j].GetMatch()[k]) })
			},
			within:     func(j, m, k int) bool { return proto.Equal(tcp[j].GetMatch()[m], tcp[j].GetMatch()[k]) },
			label:      func(j int) string { return fmt.Sprintf("#%d", j) },
			matchLabel: func(_, k int) string { return fmt.Sprintf("#%d", k) },
		}, report)
		tls := vs.Obj.Spec.GetTls()
		unreachable(ruleSet{
			kind:    "tls ",
			n:       len(tls),
			matches: func(j int) int { return len(tls[j].GetMatch()) },
			covers: func(i, j, k int) bool {
				return slices.ContainsFunc(tls[i].GetMatch(), func(a *v1alpha3.TLSMatchAttributes) bool { return proto.Equal(a, tls[j].GetMatch()[k]) })
			},
			within:     func(j, m, k int) bool { return proto.Equal(tls[j].GetMatch()[m], tls[j].GetMatch()[k]) },
			label:      func(j int) string { return fmt.Sprintf("#%d", j) },
			matchLabel: func(_, k int) string { return fmt.Sprintf("#%d", k) },
		}, report)
	}
	return fs
}

// ruleSet abstracts the http, tcp or tls rules of a VirtualService for
// unreachable: covers(i, j, k) says whether a match of rule i catches
// every request (connection) that match k of rule j catches.
type ruleSet struct {
	kind    string // "", "tcp " or "tls ", for messages
	n       int
	matches func(j int) int
	covers  func(i, j, k int) bool
	// within(j, m, k) says whether match m of rule j catches every
	// request that match k of the same rule catches (m < k).
	within     func(j, m, k int) bool
	label      func(j int) string
	matchLabel func(j, k int) string
}

func unreachable(rs ruleSet, report func(Code, string, ...any)) {
	catchAll := -1 // the first rule without match
	for j := range rs.n {
		if rs.matches(j) == 0 {
			if catchAll >= 0 {
				report(VirtualServiceUnreachableRule,
					"VirtualService %srule %s not used (only the last rule can have no matches: rule %s has none and catches everything first): add a match, or remove it",
					rs.kind, rs.label(j), rs.label(catchAll))
				continue
			}
			catchAll = j
			continue
		}
		if catchAll >= 0 {
			report(VirtualServiceUnreachableRule,
				"VirtualService %srule %s not used (route without matches defined before: rule %s has no match and catches everything first): move it before rule %s, or remove it",
				rs.kind, rs.label(j), rs.label(catchAll), rs.label(catchAll))
			continue
		}
		var covering []int
		all := true
		for k := range rs.matches(j) {
			i := 0
			for ; i < j; i++ {
				if rs.covers(i, j, k) {
					break
				}
			}
			if i == j {
				// Not covered by an earlier rule: an earlier match of
				// the same rule may still catch everything it does
				// (Istio reports such a match too).
				m := 0
				for m < k && !rs.within(j, m, k) {
					m++
				}
				if m < k {
					report(VirtualServiceIneffectiveMatch,
						"VirtualService %srule %s match %s is not used (duplicate/overlapping match %s of the same rule catches every request it matches first): remove the match",
						rs.kind, rs.label(j), rs.matchLabel(j, k), rs.matchLabel(j, m))
					continue
				}
				all = false
				continue
			}
			report(VirtualServiceIneffectiveMatch,
				"VirtualService %srule %s match %s is not used (duplicate/overlapping match in rule %s): remove the match, or move the rule before rule %s",
				rs.kind, rs.label(j), rs.matchLabel(j, k), rs.label(i), rs.label(i))
			if !slices.Contains(covering, i) {
				covering = append(covering, i)
			}
		}
		if all {
			slices.Sort(covering)
			labels := make([]string, len(covering))
			for n, i := range covering {
				labels[n] = rs.label(i)
			}
			who := "rule " + labels[0] + " catches"
			if len(labels) > 1 {
				who = "rules " + strings.Join(labels, ", ") + " catch"
			}
			report(VirtualServiceUnreachableRule,
				"VirtualService %srule %s not used (all matches used by prior rules: %s every request it matches): move it earlier, or remove it",
				rs.kind, rs.label(j), who)
		}
	}
}

func ruleLabel(rules []*v1alpha3.HTTPRoute, i int) string {
	if n := rules[i].GetName(); n != "" {
		return fmt.Sprintf("#%d (%q)", i, n)
	}
	return fmt.Sprintf("#%d", i)
}

func matchLabel(name string, k int) string {
	if name != "" {
		return fmt.Sprintf("#%d (%q)", k, name)
	}
	return fmt.Sprintf("#%d", k)
}

// matchCovers reports whether every request matching b also matches a.
// It is conservative: where it cannot tell (regexes against prefixes,
// fields it does not model), it says no.
func matchCovers(a, b *v1alpha3.HTTPMatchRequest) bool {
	if a.GetIgnoreUriCase() != b.GetIgnoreUriCase() && a.GetUri() != nil {
		return false
	}
	if !smCovers(a.GetUri(), b.GetUri()) ||
		!smCovers(a.GetScheme(), b.GetScheme()) ||
		!smCovers(a.GetMethod(), b.GetMethod()) ||
		!smCovers(a.GetAuthority(), b.GetAuthority()) {
		return false
	}
	for k, am := range a.GetHeaders() {
		if !smCovers(am, b.GetHeaders()[k]) {
			return false
		}
	}
	for k, am := range a.GetQueryParams() {
		if !smCovers(am, b.GetQueryParams()[k]) {
			return false
		}
	}
	// a excludes requests whose header k matches X; b must exclude at
	// least those.
	for k, am := range a.GetWithoutHeaders() {
		bm, ok := b.GetWithoutHeaders()[k]
		if !ok || !smCovers(bm, am) {
			return false
		}
	}
	if a.GetPort() != 0 && a.GetPort() != b.GetPort() {
		return false
	}
	for k, v := range a.GetSourceLabels() {
		if bv, ok := b.GetSourceLabels()[k]; !ok || bv != v {
			return false
		}
	}
	if len(a.GetGateways()) > 0 && !slices.Equal(sorted(a.GetGateways()), sorted(b.GetGateways())) {
		return false
	}
	if a.GetSourceNamespace() != "" && a.GetSourceNamespace() != b.GetSourceNamespace() {
		return false
	}
	return true
}

func sorted(s []string) []string { return slices.Sorted(slices.Values(s)) }

// smCovers reports whether every string b matches, a matches too. A nil a
// matches everything; a nil b (no condition) is covered only by a nil a.
func smCovers(a, b *v1alpha3.StringMatch) bool {
	if a == nil {
		return true
	}
	if b == nil {
		return false
	}
	switch at := a.GetMatchType().(type) {
	case *v1alpha3.StringMatch_Exact:
		return b.GetMatchType() != nil && proto.Equal(a, b)
	case *v1alpha3.StringMatch_Prefix:
		switch bt := b.GetMatchType().(type) {
		case *v1alpha3.StringMatch_Exact:
			return strings.HasPrefix(bt.Exact, at.Prefix)
		case *v1alpha3.StringMatch_Prefix:
			return strings.HasPrefix(bt.Prefix, at.Prefix)
		}
	case *v1alpha3.StringMatch_Regex:
		switch bt := b.GetMatchType().(type) {
		case *v1alpha3.StringMatch_Regex:
			return at.Regex == bt.Regex
		case *v1alpha3.StringMatch_Exact:
			re, err := regexp.Compile("^(?:" + at.Regex + ")$")
			return err == nil && re.MatchString(bt.Exact)
		}
	}
	return false
}

// conflictingVirtualServices reports VirtualServices bound to the mesh
// gateway that define the same host for the same namespaces (IST0109),
// as Istio's ConflictingMeshGatewayHostsAnalyzer: hosts are keyed by the
// namespaces the VirtualService is exported to ("*" for all), and a host
// exported to some namespaces also conflicts with the same (or a
// matching wildcard) host exported to all. Each VirtualService is
// reported once.
func conflictingVirtualServices(ix *index) []Finding {
	type scoped struct{ scope, host string }
	byHost := map[scoped][]typed[*networkingv1.VirtualService]{}
	var keys []scoped
	for _, vs := range ix.vss {
		if !appliesToMesh(vs.Obj) {
			continue
		}
		for _, sc := range scopes(vs.Obj.Spec.GetExportTo(), vs.Namespace) {
			for _, h := range vs.Obj.Spec.GetHosts() {
				k := scoped{sc, fqdn(h, vs.Namespace)}
				if n := len(byHost[k]); n > 0 && byHost[k][n-1].Resource.Key() == vs.Resource.Key() {
					continue
				}
				if byHost[k] == nil {
					keys = append(keys, k)
				}
				byHost[k] = append(byHost[k], vs)
			}
		}
	}
	slices.SortFunc(keys, func(a, b scoped) int { return strings.Compare(a.scope+"/"+a.host, b.scope+"/"+b.host) })
	var fs []Finding
	reported := map[string]bool{}
	for _, k := range keys {
		vss := slices.Clone(byHost[k])
		if k.scope != "*" {
			for _, all := range keys {
				if all.scope == "*" && (hostMatches(all.host, k.host) || hostMatches(k.host, all.host)) {
					vss = append(vss, byHost[all]...)
				}
			}
		}
		if len(vss) < 2 {
			continue
		}
		names := make([]string, len(vss))
		for i, vs := range vss {
			names[i] = vs.Namespace + "/" + vs.Name
		}
		for _, vs := range vss {
			if reported[vs.Resource.Key()] {
				continue
			}
			reported[vs.Resource.Key()] = true
			fs = append(fs, finding(ConflictingMeshGatewayVirtualServiceHosts, vs.Resource,
				"The VirtualServices %s associated with mesh gateway define the same host %s which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
				strings.Join(names, ","), k.host))
		}
	}
	return fs
}
