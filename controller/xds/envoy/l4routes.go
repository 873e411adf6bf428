package envoy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fibmesh/fibmesh/controller/model"
)

// A VirtualService's tcp and tls rules become outbound filter chains.
// Envoy picks a chain by its match criteria in a fixed order, most
// specific first at each step and with no going back: destination port,
// destination IP, server name (SNI), ..., source IP. Istio's rules are
// ordered (the first that holds wins), so the translation computes, for
// each server name a tls rule names (a "level") and for connections
// without one, which rule each client gets: a chain per rule with the
// client IPs it wins (source_prefix_ranges, the pod IPs its sourceLabels
// select, less those an earlier rule took), and a last chain without
// source ranges for everyone else. Every level ends with such a chain,
// so a connection whose SNI matched never falls through to nothing.

// l4Rule is a tcp or tls rule of the route in force for a host.
type l4Rule struct {
	kind  string // "tcp" or "tls"
	index int
	rule  *model.L4Route
}

func (r l4Rule) label() string { return fmt.Sprintf("%s[%d]", r.kind, r.index) }

// l4Entry is one step of a level's decision: the clients it applies to
// (every one, or those IPs) and the filter that carries them.
type l4Entry struct {
	label  string // "tcp[0]", "tls[1]", "" for the service's default
	every  bool
	ips    []netip.Addr
	filter *listenerv3.Filter
}

// l4Chains are the outbound chains of one service port: on the VIP (vip
// valid), the chain of connections without a matching SNI (named
// <vip>_<port>, which is the service's only chain where its route has no
// tcp or tls rule for the port) and the chains its rules add; without a
// VIP (a ServiceEntry without addresses), only the chains of its tls
// rules, matched on the port and SNI alone, whose default is the
// passthrough cluster. sni reports whether a chain matches on SNI (the
// port then needs the tls_inspector).
func (b *builder) l4Chains(ix *index, svc *model.Service, p model.Port, vip netip.Addr) (chains []*listenerv3.FilterChain, sni bool, err error) {
	pn := uint32(p.Port)
	base := "*_" + port(pn)
	defCluster := OutboundPassthroughCluster
	if vip.IsValid() {
		base, defCluster = vip.String()+"_"+port(pn), ClusterName(svc.Hostname, pn, "")
	}
	var tcpRules, tlsRules []l4Rule
	if r := ix.routes[svc.Hostname]; r != nil {
		if vip.IsValid() {
			for i := range r.TCP {
				tcpRules = append(tcpRules, l4Rule{"tcp", i, &r.TCP[i]})
			}
		}
		if p.Protocol == model.ProtocolTLS || p.Protocol == model.ProtocolHTTPS {
			for i := range r.TLS {
				tlsRules = append(tlsRules, l4Rule{"tls", i, &r.TLS[i]})
			}
		}
	}
	filters := map[string]*listenerv3.Filter{}
	filterOf := func(rl l4Rule) (*listenerv3.Filter, error) {
		if f, ok := filters[rl.label()]; ok {
			return f, nil
		}
		f, err := b.l4Proxy(ix, rl.rule.Destinations, pn, ClusterName(svc.Hostname, pn, ""))
		if err != nil {
			r := ix.routes[svc.Hostname]
			return nil, fmt.Errorf("outbound listener: virtual service %s/%s %s: %w", r.Namespace, r.Name, rl.label(), err)
		}
		filters[rl.label()] = f
		return f, nil
	}
	// entries is a level's decision: the rules whose matches hold there
	// (applies says which of a rule's matches can), in order, then the
	// default.
	entries := func(rules []l4Rule, applies func(rl l4Rule, m *model.L4Match) bool) ([]l4Entry, error) {
		var out []l4Entry
		for _, rl := range rules {
			e := l4Entry{label: rl.label()}
			if len(rl.rule.Matches) == 0 {
				e.every = rl.kind == "tcp" // a tls rule needs sniHosts
			}
			held := false
			for i := range rl.rule.Matches {
				m := &rl.rule.Matches[i]
				if !applies(rl, m) {
					continue
				}
				held = true
				if !m.SelectsSources() {
					e.every = true
					break
				}
				e.ips = append(e.ips, ix.sourceIPs(m)...)
			}
			if !held && !e.every {
				continue
			}
			f, err := filterOf(rl)
			if err != nil {
				return nil, err
			}
			e.filter = f
			out = append(out, e)
			if e.every {
				return out, nil // later rules are never reached
			}
		}
		return append(out, l4Entry{every: true, filter: b.tcpProxy(defCluster, defCluster)}), nil
	}
	level := func(server string, es []l4Entry) {
		name := base
		if server != "" {
			name += "|" + server
		}
		claimed := map[netip.Addr]bool{}
		for _, e := range es {
			var ips []netip.Addr
			if !e.every {
				for _, ip := range e.ips {
					if !claimed[ip] {
						claimed[ip] = true
						ips = append(ips, ip)
					}
				}
				if len(ips) == 0 {
					continue
				}
				slices.SortFunc(ips, netip.Addr.Compare)
			}
			match := &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(pn)}
			if vip.IsValid() {
				match.PrefixRanges = []*corev3.CidrRange{hostRange(vip)}
			}
			if server != "" {
				match.ServerNames = []string{server}
			}
			fc := &listenerv3.FilterChain{Name: name, FilterChainMatch: match, Filters: []*listenerv3.Filter{e.filter}}
			for _, ip := range ips {
				match.SourcePrefixRanges = append(match.SourcePrefixRanges, hostRange(ip))
			}
			if len(ips) > 0 {
				fc.Name += "|" + e.label
			}
			chains = append(chains, fc)
			if e.every {
				return
			}
		}
	}
	holds := func(m *model.L4Match) bool { return l4MatchHolds(m, vip, pn) }

	// Connections without a server name a tls rule names: tls rules
	// with sniHosts "*" (any), then tcp rules, then the default.
	if vip.IsValid() {
		es, err := entries(append(slices.Clone(tlsRules), tcpRules...), func(rl l4Rule, m *model.L4Match) bool {
			return holds(m) && (rl.kind == "tcp" || slices.Contains(m.SNIHosts, "*"))
		})
		if err != nil {
			return nil, false, err
		}
		level("", es)
	}
	// Each server name a tls rule names: the tls rules whose sniHosts
	// cover it, then what connections without it get.
	var servers []string
	for _, rl := range tlsRules {
		for i := range rl.rule.Matches {
			if m := &rl.rule.Matches[i]; holds(m) {
				for _, h := range m.SNIHosts {
					if h != "*" && h != "" && !slices.Contains(servers, h) {
						servers = append(servers, h)
					}
				}
			}
		}
	}
	slices.Sort(servers)
	for _, server := range servers {
		es, err := entries(append(slices.Clone(tlsRules), tcpRules...), func(rl l4Rule, m *model.L4Match) bool {
			if !holds(m) {
				return false
			}
			if rl.kind == "tcp" {
				return true
			}
			return slices.ContainsFunc(m.SNIHosts, func(pattern string) bool { return sniCovers(pattern, server) })
		})
		if err != nil {
			return nil, false, err
		}
		level(server, es)
		sni = true
	}
	return chains, sni, nil
}

// l4MatchHolds reports whether a tcp or tls match can hold for
// connections to vip:pn (vip invalid: to any address on port pn, which
// a match naming destination subnets does not cover).
func l4MatchHolds(m *model.L4Match, vip netip.Addr, pn uint32) bool {
	if m.Port != 0 && m.Port != pn {
		return false
	}
	if len(m.DestinationSubnets) == 0 {
		return true
	}
	if !vip.IsValid() {
		return false
	}
	for _, s := range m.DestinationSubnets {
		if p, ok := parsePrefix(s); ok && p.Contains(vip) {
			return true
		}
	}
	return false // analyze reports subnets that do not parse
}

// sniCovers reports whether an sniHosts pattern matches every server
// name that Envoy matches at server: the same name, "*" (any), or a
// wildcard "*.x" whose suffix every such name has ("*.example.com"
// covers "api.example.com" and "*.eu.example.com").
func sniCovers(pattern, server string) bool {
	if pattern == server || pattern == "*" {
		return true
	}
	suffix, ok := strings.CutPrefix(pattern, "*")
	if !ok || !strings.HasPrefix(suffix, ".") {
		return false
	}
	if rest, wild := strings.CutPrefix(server, "*"); wild {
		return strings.HasSuffix(rest, suffix)
	}
	return len(server) > len(suffix) && strings.HasSuffix(server, suffix)
}

// parsePrefix parses a CIDR or a bare address (a host prefix).
func parsePrefix(s string) (netip.Prefix, bool) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err == nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, a.BitLen()), true
}

// hostRange is the /32 (/128) of an address.
func hostRange(a netip.Addr) *corev3.CidrRange {
	return &corev3.CidrRange{AddressPrefix: a.String(), PrefixLen: wrapperspb.UInt32(uint32(a.BitLen()))}
}

// l4Proxy is the tcp_proxy of a rule's destinations: one cluster, or
// weighted_clusters with Istio's weights (weight 0 left out). Its stat
// prefix is the cluster's name, or the service port's cluster's (stat)
// where it is weighted.
func (b *builder) l4Proxy(ix *index, ds []model.Destination, pn uint32, stat string) (*listenerv3.Filter, error) {
	var wc []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight
	for _, d := range ds {
		if d.Weight <= 0 && len(ds) > 1 {
			continue
		}
		wc = append(wc, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{
			Name: ClusterName(d.Host, destPort(ix, d, pn), d.Subset), Weight: uint32(max(d.Weight, 1)),
		})
	}
	switch len(wc) {
	case 0:
		return nil, fmt.Errorf("no destination with a weight")
	case 1:
		return b.tcpProxy(wc[0].Name, wc[0].Name), nil
	}
	return &listenerv3.Filter{Name: wkTCPProxy, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: b.any(&tcpproxyv3.TcpProxy{
		StatPrefix: stat,
		ClusterSpecifier: &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{
			Clusters: wc,
		}},
	})}}, nil
}

// tlsInspector reads the SNI of connections to the given ports (sorted,
// not empty) and of no other: filter_disabled is "not (destination port
// is one of them)", so that server-first protocols on other ports are
// not held waiting for a ClientHello.
func (b *builder) tlsInspector(ports []uint32) *listenerv3.ListenerFilter {
	rules := make([]*listenerv3.ListenerFilterChainMatchPredicate, 0, len(ports))
	for _, p := range ports {
		rules = append(rules, &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_DestinationPortRange{
			DestinationPortRange: &typev3.Int32Range{Start: int32(p), End: int32(p) + 1},
		}})
	}
	enabled := rules[0]
	if len(rules) > 1 {
		enabled = &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_OrMatch{
			OrMatch: &listenerv3.ListenerFilterChainMatchPredicate_MatchSet{Rules: rules},
		}}
	}
	return &listenerv3.ListenerFilter{
		Name:       wkTLSInspector,
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: b.any(&tlsinspectorv3.TlsInspector{})},
		FilterDisabled: &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_NotMatch{
			NotMatch: enabled,
		}},
	}
}

// sourceIPs are the pod IPs of the client workloads a match selects:
// in the mesh (only captured pods reach the outbound listener) and with
// an IP, sorted; cached per match.
func (ix *index) sourceIPs(m *model.L4Match) []netip.Addr {
	if ips, ok := ix.sources[m]; ok {
		return ips
	}
	var ips []netip.Addr
	for _, w := range ix.m.Workloads {
		if w.OutsideMesh || !m.SelectsSource(w) {
			continue
		}
		if a, err := netip.ParseAddr(w.IP); err == nil && !slices.Contains(ips, a) {
			ips = append(ips, a)
		}
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	if ix.sources == nil {
		ix.sources = map[*model.L4Match][]netip.Addr{}
	}
	ix.sources[m] = ips
	return ips
}
