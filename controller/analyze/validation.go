package analyze

import (
	"maps"
	"slices"
	"strings"
)

// missingRoutes reports VirtualService rules that send traffic nowhere,
// which Istio's validation rejects (IST0106, an Error; Istio's webhook
// rejects them too): an http rule without route, redirect,
// directResponse or delegate ("HTTP route, redirect or direct response
// is required"), a tcp rule without route ("TCP route is required"), a
// tls rule without route ("TLS route is required"). fibmesh would
// otherwise take such a rule, which sends traffic to no destination,
// without a word.
func missingRoutes(ix *index) []Finding {
	var fs []Finding
	for _, vs := range ix.vss {
		spec := &vs.Obj.Spec
		for i, r := range spec.GetHttp() {
			if len(r.GetRoute()) == 0 && r.GetRedirect() == nil && r.GetDirectResponse() == nil && r.GetDelegate() == nil {
				fs = append(fs, finding(SchemaValidationError, vs.Resource,
					"Schema validation error: spec.http[%d]: HTTP route, redirect or direct response is required: add a route with a destination, or remove the rule", i))
			}
		}
		for i, r := range spec.GetTcp() {
			if len(r.GetRoute()) == 0 {
				fs = append(fs, finding(SchemaValidationError, vs.Resource,
					"Schema validation error: spec.tcp[%d]: TCP route is required: add a route with a destination, or remove the rule", i))
			}
		}
		for i, r := range spec.GetTls() {
			if len(r.GetRoute()) == 0 {
				fs = append(fs, finding(SchemaValidationError, vs.Resource,
					"Schema validation error: spec.tls[%d]: TLS route is required: add a route with a destination, or remove the rule", i))
			}
		}
	}
	return fs
}

// deprecatedFields reports VirtualService fields Istio has deprecated
// (IST0002, Warning), as Istio's deprecation.FieldAnalyzer: a
// fault.delay.percent above 0. fibmesh still applies it.
func deprecatedFields(ix *index) []Finding {
	var fs []Finding
	for _, vs := range ix.vss {
		for i, r := range vs.Obj.Spec.GetHttp() {
			//nolint:staticcheck // reading the deprecated field is the point
			if r.GetFault().GetDelay().GetPercent() > 0 {
				fs = append(fs, finding(Deprecated, vs.Resource,
					"Deprecated: HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage (spec.http[%d].fault.delay.percent: write percentage: {value: %d})",
					i, r.GetFault().GetDelay().GetPercent())) //nolint:staticcheck
			}
		}
	}
	return fs
}

// jwtClaimMatches reports HTTP matches on JWT claims (a headers key
// "@request.auth.claims.<claim>"), which Istio evaluates against a token
// validated by a RequestAuthentication. fibmesh has no
// RequestAuthentication (FM0004): it would compare a request header of
// that name, which any client can send. (withoutHeaders is reported as a
// whole, by unsupportedFields.)
func jwtClaimMatches(ix *index) []Finding {
	var fs []Finding
	for _, vs := range ix.vss {
		for i, r := range vs.Obj.Spec.GetHttp() {
			for j, m := range r.GetMatch() {
				for _, k := range slices.Sorted(maps.Keys(m.GetHeaders())) {
					if !strings.HasPrefix(k, "@request.auth.claims") {
						continue
					}
					fs = append(fs, finding(UnsupportedField, vs.Resource,
						"field spec.http[%d].match[%d].headers[%s]: JWT claim matching is not supported by fibmesh (it has no RequestAuthentication): "+
							"the match compares a request header named %q, which any client can send; remove the match, or route on a header your gateway sets",
						i, j, k, k))
				}
			}
		}
	}
	return fs
}
