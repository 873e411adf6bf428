package analyze

import (
	"fmt"
	"strings"

	"istio.io/api/networking/v1alpha3"
)

// consistentHashes reports consistent hashing that does not work as
// written (FM0008): a DestinationRule in force whose consistentHash has
// no key (none of httpHeaderName, httpCookie with a name, useSourceIp,
// httpQueryParameterName), so that every request is balanced at
// random; and an HTTP route whose destinations' hosts have different
// keys, where the first destination's key hashes every request (Istio
// and fibmesh put one hash policy on a route).
func consistentHashes(ix *index) []Finding {
	var fs []Finding
	keys := map[string]string{} // host → key of the DestinationRule in force
	for _, dr := range ix.drs { // sorted: the first for a host is in force
		host := fqdn(dr.Obj.Spec.GetHost(), dr.Namespace)
		if _, seen := keys[host]; seen {
			continue
		}
		ch := dr.Obj.Spec.GetTrafficPolicy().GetLoadBalancer().GetConsistentHash()
		keys[host] = hashKey(ch)
		if ch != nil && keys[host] == "" {
			why := "sets no key (httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName)"
			if ch.GetHttpCookie() != nil {
				why = "has an httpCookie without a name"
			}
			fs = append(fs, finding(ConsistentHashNotApplied, dr.Resource,
				"spec.trafficPolicy.loadBalancer.consistentHash %s: requests to %s are balanced at random, not by a key; set one", why, host))
		}
	}
	for _, vs := range ix.vss {
		if !appliesToMesh(vs.Obj) {
			continue
		}
		for i, h := range vs.Obj.Spec.GetHttp() {
			first, firstHost := "", ""
			for _, rd := range h.GetRoute() {
				if rd.GetWeight() <= 0 && len(h.GetRoute()) > 1 {
					continue // left out of the route
				}
				host := fqdn(rd.GetDestination().GetHost(), vs.Namespace)
				k := keys[host]
				switch {
				case k == "":
				case first == "":
					first, firstHost = k, host
				case k != first:
					fs = append(fs, finding(ConsistentHashNotApplied, vs.Resource,
						"spec.http[%d].route: %s hashes by %s, %s by %s; the route hashes every request by %s (the first destination's key): give the hosts the same key, or route them in separate rules",
						i, firstHost, first, host, k, first))
				}
			}
		}
	}
	return fs
}

// hashKey describes a consistent-hash key; "" when there is none.
func hashKey(ch *v1alpha3.LoadBalancerSettings_ConsistentHashLB) string {
	switch {
	case ch.GetHttpHeaderName() != "":
		return fmt.Sprintf("header %q", strings.ToLower(ch.GetHttpHeaderName()))
	case ch.GetHttpCookie().GetName() != "":
		return fmt.Sprintf("cookie %q", ch.GetHttpCookie().GetName())
	case ch.GetUseSourceIp():
		return "source IP"
	case ch.GetHttpQueryParameterName() != "":
		return fmt.Sprintf("query parameter %q", ch.GetHttpQueryParameterName())
	}
	return ""
}
