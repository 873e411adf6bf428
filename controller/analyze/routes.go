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

// routeDestinations reports HTTP, TCP and TLS route destinations whose
// host is not a known Service or ServiceEntry host, or whose subset no
// DestinationRule for that host defines (IST0101).
func routeDestinations(ix *index) []Finding {
	var fs []Finding
	for _, vs := range ix.vss {
		for _, rule := range vsRules(vs.Obj) {
			for j, rd := range rule.dests {
				d := rd.GetDestination()
				if d == nil {
					continue
				}
				path := fmt.Sprintf("%s.route[%d].destination", rule.path, j)
				host := fqdn(d.GetHost(), vs.Namespace)
				if !ix.knownHost(host) {
					fs = append(fs, finding(ReferencedResourceNotFound, vs.Resource,
						"Referenced host not found: %q (%s.host); no Service or ServiceEntry has host %s: fix the host or add the Service",
						d.GetHost(), path, host))
					continue
				}
				if s := d.GetSubset(); s != "" && !ix.subsets(host)[s] {
					fs = append(fs, finding(ReferencedResourceNotFound, vs.Resource,
						"Referenced host+subset in destinationrule not found: %q (%s.subset); no DestinationRule for host %s defines subset %q: add it to the DestinationRule's subsets or fix the name",
						d.GetHost()+"+"+s, path, host, s))
				}
			}
		}
	}
	return fs
}

// routeWeights reports HTTP, TCP and TLS routes whose destination
// weights do not add up to 100. A single destination without a weight
// gets all traffic and is fine.
func routeWeights(ix *index) []Finding {
	var fs []Finding
	for _, vs := range ix.vss {
		for _, rule := range vsRules(vs.Obj) {
			rds := rule.dests
			if len(rds) == 0 || len(rds) == 1 && rds[0].GetWeight() == 0 {
				continue
			}
			sum := int64(0)
			parts := make([]string, len(rds))
			for j, rd := range rds {
				sum += int64(rd.GetWeight())
				parts[j] = fmt.Sprintf("%d", rd.GetWeight())
			}
			if sum != 100 {
				fs = append(fs, finding(RouteWeightsNotHundred, vs.Resource,
					"%s.route weights add up to %d (%s), not 100: set the weights so that they add up to exactly 100",
					rule.path, sum, strings.Join(parts, "+")))
			}
		}
	}
	return fs
}

// ineffectiveMatches reports HTTP routes that can never be used
// (IST0130) and single matches that can never be used (IST0131), because
// an earlier route catches every request they would catch. Routes are
// tried in order; the first whose any match fits wins.
func ineffectiveMatches(ix *index) []Finding {
	var fs []Finding
	for _, vs := range ix.vss {
		rules := vs.Obj.Spec.GetHttp()
		for j := range rules {
			ms := rules[j].GetMatch()
			if len(ms) == 0 {
				ms = []*v1alpha3.HTTPMatchRequest{{}} // no match: catches all
			}
			shadow := make([]int, len(ms)) // earlier rule covering match k, or -1
			all := true
			for k, m := range ms {
				shadow[k] = -1
				for i := range j {
					if ruleCovers(rules[i], m) {
						shadow[k] = i
						break
					}
				}
				all = all && shadow[k] >= 0
			}
			if all {
				fs = append(fs, finding(VirtualServiceUnreachableRule, vs.Resource,
					"VirtualService rule %s not used (%s every request it matches): move it earlier, or remove it",
					ruleLabel(rules, j), coveringRules(rules, shadow)))
				continue
			}
			for k, i := range shadow {
				if i >= 0 {
					fs = append(fs, finding(VirtualServiceIneffectiveMatch, vs.Resource,
						"VirtualService rule %s match #%d is not used (duplicate/overlapping match in rule %s): remove the match or move the rule earlier",
						ruleLabel(rules, j), k, ruleLabel(rules, i)))
				}
			}
		}
	}
	return fs
}

func ruleLabel(rules []*v1alpha3.HTTPRoute, i int) string {
	if n := rules[i].GetName(); n != "" {
		return fmt.Sprintf("#%d (%q)", i, n)
	}
	return fmt.Sprintf("#%d", i)
}

func coveringRules(rules []*v1alpha3.HTTPRoute, shadow []int) string {
	var idx []int
	for _, i := range shadow {
		if !slices.Contains(idx, i) {
			idx = append(idx, i)
		}
	}
	slices.Sort(idx)
	labels := make([]string, len(idx))
	for n, i := range idx {
		labels[n] = ruleLabel(rules, i)
	}
	if len(labels) == 1 {
		return "rule " + labels[0] + " catches"
	}
	return "rules " + strings.Join(labels, ", ") + " catch"
}

// ruleCovers reports whether rule r catches every request that match b
// catches.
func ruleCovers(r *v1alpha3.HTTPRoute, b *v1alpha3.HTTPMatchRequest) bool {
	if len(r.GetMatch()) == 0 {
		return true
	}
	return slices.ContainsFunc(r.GetMatch(), func(a *v1alpha3.HTTPMatchRequest) bool { return matchCovers(a, b) })
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

// conflictingVirtualServices reports hosts that more than one
// VirtualService bound to the mesh gateway defines (IST0109).
func conflictingVirtualServices(ix *index) []Finding {
	byHost := map[string][]typed[*networkingv1.VirtualService]{}
	for _, vs := range ix.vss {
		if !appliesToMesh(vs.Obj) {
			continue
		}
		seen := map[string]bool{}
		for _, h := range vs.Obj.Spec.GetHosts() {
			h = fqdn(h, vs.Namespace)
			if !seen[h] {
				seen[h] = true
				byHost[h] = append(byHost[h], vs)
			}
		}
	}
	var fs []Finding
	for host, vss := range byHost {
		if len(vss) < 2 {
			continue
		}
		names := make([]string, len(vss))
		for i, vs := range vss {
			names[i] = vs.Namespace + "/" + vs.Name
		}
		for _, vs := range vss {
			fs = append(fs, finding(ConflictingMeshGatewayVirtualServiceHosts, vs.Resource,
				"The VirtualServices %s associated with mesh gateway define the same host %s which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
				strings.Join(names, ","), host))
		}
	}
	return fs
}
