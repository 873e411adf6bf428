package xdsconf

import (
	"fmt"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// httpRBACFilter is the name under which typed_per_filter_config
// overrides the HTTP RBAC filter per route.
const httpRBACFilter = "envoy.filters.http.rbac"

// routeDefault is what the slow path takes from a route configuration
// at L4: where the bytes of a connection go when no request is parsed.
type routeDefault struct {
	// cluster is HTTPChain.DefaultCluster; clusters the catch-all
	// route's split.
	cluster  string
	clusters []WeightedCluster
}

// compileRoute finds the catch-all route of a route configuration: the
// first route of its only virtual host (or of the one with domain "*")
// that matches every request (prefix "/" with no header, query or
// runtime condition) and routes to a cluster or weighted clusters.
// Without one, the result is empty and connections on the chain are
// refused by the proxy. Per-route RBAC overrides are refused: at L4
// there is no route to apply them to. The rest of the configuration is
// L7's business and is not validated here.
func compileRoute(rc *routev3.RouteConfiguration, path string) (routeDefault, error) {
	if err := perFilterRBAC(rc.GetTypedPerFilterConfig(), path); err != nil {
		return routeDefault{}, err
	}
	var vh *routev3.VirtualHost
	for i, v := range rc.GetVirtualHosts() {
		p := fmt.Sprintf("%s.virtual_hosts[%d]", path, i)
		if err := perFilterRBAC(v.GetTypedPerFilterConfig(), p); err != nil {
			return routeDefault{}, err
		}
		for j, r := range v.GetRoutes() {
			if err := perFilterRBAC(r.GetTypedPerFilterConfig(), fmt.Sprintf("%s.routes[%d]", p, j)); err != nil {
				return routeDefault{}, err
			}
			for k, wc := range r.GetRoute().GetWeightedClusters().GetClusters() {
				if err := perFilterRBAC(wc.GetTypedPerFilterConfig(), fmt.Sprintf("%s.routes[%d].route.weighted_clusters.clusters[%d]", p, j, k)); err != nil {
					return routeDefault{}, err
				}
			}
		}
		if len(rc.GetVirtualHosts()) == 1 || (vh == nil && containsStar(v.GetDomains())) {
			vh = v
		}
	}
	if vh == nil {
		return routeDefault{}, nil
	}
	for _, r := range vh.GetRoutes() {
		if !catchAll(r.GetMatch()) {
			continue
		}
		a := r.GetRoute()
		if a == nil {
			return routeDefault{}, nil // a redirect or direct response: no cluster
		}
		switch cs := a.GetClusterSpecifier().(type) {
		case *routev3.RouteAction_Cluster:
			return routeDefault{cluster: cs.Cluster, clusters: []WeightedCluster{{Name: cs.Cluster, Weight: 1}}}, nil
		case *routev3.RouteAction_WeightedClusters:
			var d routeDefault
			heaviest := uint32(0)
			for _, wc := range cs.WeightedClusters.GetClusters() {
				w := wc.GetWeight().GetValue()
				if w == 0 {
					continue
				}
				d.clusters = append(d.clusters, WeightedCluster{Name: wc.GetName(), Weight: w})
				if w > heaviest {
					d.cluster, heaviest = wc.GetName(), w
				}
			}
			// One cluster for the whole split: the service's own, which
			// has every endpoint of the subsets (docs/xds.md naming).
			if host, port, ok := splitRouteName(rc.GetName()); ok && len(d.clusters) > 1 {
				d.cluster = "outbound|" + port + "||" + host
			}
			return d, nil
		}
		return routeDefault{}, nil
	}
	return routeDefault{}, nil
}

// perFilterRBAC refuses a per-route override of the HTTP RBAC filter.
func perFilterRBAC(m map[string]*anypb.Any, path string) error {
	if _, ok := m[httpRBACFilter]; ok {
		return errorf(fmt.Sprintf("%s.typed_per_filter_config[%q]", path, httpRBACFilter), "per-route RBAC is not supported by the slow path at L4")
	}
	return nil
}

func containsStar(ds []string) bool {
	for _, d := range ds {
		if d == "*" {
			return true
		}
	}
	return false
}

// catchAll reports whether a route match matches every request.
func catchAll(m *routev3.RouteMatch) bool {
	if m == nil || len(m.GetHeaders()) > 0 || len(m.GetQueryParameters()) > 0 || m.GetRuntimeFraction() != nil ||
		m.GetGrpc() != nil || m.GetTlsContext() != nil || len(m.GetDynamicMetadata()) > 0 || len(m.GetFilterState()) > 0 {
		return false
	}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		return ps.Prefix == "" || ps.Prefix == "/"
	case *routev3.RouteMatch_PathSeparatedPrefix:
		return ps.PathSeparatedPrefix == "/"
	case *routev3.RouteMatch_SafeRegex:
		return ps.SafeRegex.GetRegex() == ".*"
	}
	return false
}

// splitRouteName splits a route configuration name <host>:<port>.
func splitRouteName(name string) (host, port string, ok bool) {
	i := strings.LastIndexByte(name, ':')
	if i <= 0 {
		return "", "", false
	}
	if _, err := strconv.ParseUint(name[i+1:], 10, 16); err != nil {
		return "", "", false
	}
	return name[:i], name[i+1:], true
}
