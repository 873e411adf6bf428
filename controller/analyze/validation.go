package analyze

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// validationErrors reports what Istio's validation rejects in a decoded
// VirtualService (IST0106, an Error; Istio's webhook rejects it too),
// with Istio's wording:
//   - an http rule without route, redirect, directResponse or delegate
//     ("HTTP route, redirect or direct_response is required"), a tcp or
//     tls rule without route ("TCP route is required", "TLS route is
//     required"): the rule sends traffic nowhere;
//   - a tls rule without match ("TLS route must have at least one match
//     condition") or a tls match without sniHosts ("TLS match must have
//     at least one SNI host"): tls rules route on the SNI only;
//   - a tcp or tls match's destinationSubnets entry that is neither an
//     IP address nor a CIDR;
//   - an http fault with neither abort nor delay ("HTTP fault injection
//     must have an abort and/or a delay").
func validationErrors(ix *index) []Finding {
	var fs []Finding
	for _, vs := range ix.vss {
		report := func(format string, args ...any) {
			fs = append(fs, finding(SchemaValidationError, vs.Resource, "Schema validation error: "+format, args...))
		}
		subnets := func(path string, ss []string) {
			for k, s := range ss {
				if _, err := netip.ParsePrefix(s); err == nil {
					continue
				}
				if _, err := netip.ParseAddr(s); err == nil {
					continue
				}
				report("%s.destinationSubnets[%d]: %q is neither an IP address nor a CIDR: write it as 10.0.0.0/16 or 10.0.0.1", path, k, s)
			}
		}
		spec := &vs.Obj.Spec
		for i, r := range spec.GetHttp() {
			if len(r.GetRoute()) == 0 && r.GetRedirect() == nil && r.GetDirectResponse() == nil && r.GetDelegate() == nil {
				report("spec.http[%d]: HTTP route, redirect or direct_response is required: add a route with a destination, or remove the rule", i)
			}
			if f := r.GetFault(); f != nil && f.GetAbort() == nil && f.GetDelay() == nil {
				report("spec.http[%d].fault: HTTP fault injection must have an abort and/or a delay: add one, or remove the fault", i)
			}
		}
		for i, r := range spec.GetTcp() {
			if len(r.GetRoute()) == 0 {
				report("spec.tcp[%d]: TCP route is required: add a route with a destination, or remove the rule", i)
			}
			for j, m := range r.GetMatch() {
				subnets(fmt.Sprintf("spec.tcp[%d].match[%d]", i, j), m.GetDestinationSubnets())
			}
		}
		for i, r := range spec.GetTls() {
			if len(r.GetRoute()) == 0 {
				report("spec.tls[%d]: TLS route is required: add a route with a destination, or remove the rule", i)
			}
			if len(r.GetMatch()) == 0 {
				report("spec.tls[%d]: TLS route must have at least one match condition: a tls rule routes on the SNI; add match[].sniHosts", i)
			}
			for j, m := range r.GetMatch() {
				path := fmt.Sprintf("spec.tls[%d].match[%d]", i, j)
				if len(m.GetSniHosts()) == 0 {
					report("%s: TLS match must have at least one SNI host: a tls match routes on the SNI; add sniHosts", path)
				}
				subnets(path, m.GetDestinationSubnets())
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
