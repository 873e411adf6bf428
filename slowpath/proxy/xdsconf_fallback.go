package proxy

// The compiled config's methods ((*xdsconf.Listener).Match, (*RBAC).Evaluate,
// (*TCPProxy).PickCluster, (*Cluster).Pick) are being written in
// slowpath/xdsconf in parallel; until they land, these stand in for them
// with the same contracts. Replace each body with the method call once it
// exists.

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/netip"
	"strings"

	"github.com/fibmesh/fibmesh/slowpath/xdsconf"
)

// listenerMatch returns the chain for in: the most specific matching
// chain (destination port, then destination prefix length, then server
// name, then source prefix length), else the default (nil: refuse).
func listenerMatch(l *xdsconf.Listener, in xdsconf.MatchInput) *xdsconf.FilterChain {
	if l == nil {
		return nil
	}
	var best *xdsconf.FilterChain
	var bestScore [4]int
	for _, fc := range l.Chains {
		score, ok := chainScore(fc, in)
		if !ok {
			continue
		}
		if best == nil || less(bestScore, score) {
			best, bestScore = fc, score
		}
	}
	if best != nil {
		return best
	}
	return l.Default
}

func less(a, b [4]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

func chainScore(fc *xdsconf.FilterChain, in xdsconf.MatchInput) ([4]int, bool) {
	var s [4]int
	if fc.Port != 0 {
		if uint32(in.Destination.Port()) != fc.Port {
			return s, false
		}
		s[0] = 1
	}
	if n, ok := prefixMatch(fc.Prefixes, in.Destination.Addr()); ok {
		s[1] = n
	} else {
		return s, false
	}
	if len(fc.ServerNames) > 0 {
		ok := false
		for _, sn := range fc.ServerNames {
			if serverNameMatch(sn, in.ServerName) {
				ok = true
				s[2] = max(s[2], len(sn))
			}
		}
		if !ok {
			return s, false
		}
	}
	if n, ok := prefixMatch(fc.SourcePrefixes, in.Source.Addr()); ok {
		s[3] = n
	} else {
		return s, false
	}
	return s, true
}

// prefixMatch returns the longest matching prefix's length + 1 (0 when
// there are no prefixes: any matches).
func prefixMatch(ps []netip.Prefix, a netip.Addr) (int, bool) {
	if len(ps) == 0 {
		return 0, true
	}
	a = a.Unmap()
	best, ok := 0, false
	for _, p := range ps {
		if p.Contains(a) {
			ok = true
			best = max(best, p.Bits()+1)
		}
	}
	return best, ok
}

func serverNameMatch(pattern, name string) bool {
	if name == "" {
		return false
	}
	pattern, name = strings.ToLower(pattern), strings.ToLower(name)
	if rest, ok := strings.CutPrefix(pattern, "*"); ok {
		return strings.HasSuffix(name, rest) && len(name) > len(rest)
	}
	return pattern == name
}

// rbacEvaluate applies DENY then ALLOW; nil allows.
func rbacEvaluate(r *xdsconf.RBAC, in xdsconf.AuthzInput) xdsconf.Decision {
	if r == nil {
		return xdsconf.Decision{Allowed: true}
	}
	if r.Deny != nil {
		for _, p := range r.Deny.Policies {
			if p.Match != nil && p.Match(in) {
				return xdsconf.Decision{Allowed: false, Policy: p.Name}
			}
		}
	}
	if r.Allow == nil {
		return xdsconf.Decision{Allowed: true}
	}
	for _, p := range r.Allow.Policies {
		if p.Match != nil && p.Match(in) {
			return xdsconf.Decision{Allowed: true, Policy: p.Name}
		}
	}
	return xdsconf.Decision{Allowed: false}
}

// pickCluster chooses among a tcp_proxy's weighted clusters with r.
func pickCluster(t *xdsconf.TCPProxy, r uint32) string {
	switch len(t.Clusters) {
	case 0:
		return ""
	case 1:
		return t.Clusters[0].Name
	}
	var total uint64
	for _, c := range t.Clusters {
		total += uint64(c.Weight)
	}
	if total == 0 {
		return t.Clusters[int(r)%len(t.Clusters)].Name
	}
	x := uint64(r) % total
	for _, c := range t.Clusters {
		if x < uint64(c.Weight) {
			return c.Name
		}
		x -= uint64(c.Weight)
	}
	return t.Clusters[len(t.Clusters)-1].Name
}

var errNoEndpoint = errors.New("no healthy endpoint")

// clusterPick chooses an endpoint of c by its LB policy among the healthy
// ones exclude lets through.
func clusterPick(c *xdsconf.Cluster, src netip.AddrPort, exclude func(*xdsconf.Endpoint) bool) (*xdsconf.Endpoint, error) {
	if c.Endpoints == nil {
		return nil, fmt.Errorf("cluster %s: %w (no assignment yet)", c.Name, errNoEndpoint)
	}
	var cands []*xdsconf.Endpoint
	for _, e := range c.Endpoints.Healthy {
		if exclude == nil || !exclude(e) {
			cands = append(cands, e)
		}
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("cluster %s: %w", c.Name, errNoEndpoint)
	}
	switch c.LB {
	case xdsconf.RoundRobin:
		return cands[int(c.Endpoints.RR.Add(1)-1)%len(cands)], nil
	case xdsconf.Random:
		return cands[rand.IntN(len(cands))], nil
	case xdsconf.RingHash, xdsconf.Maglev:
		h := fnv.New32a()
		b := src.Addr().AsSlice()
		h.Write(b)
		return cands[int(h.Sum32())%len(cands)], nil
	default: // least request, power of two choices
		a, b := cands[rand.IntN(len(cands))], cands[rand.IntN(len(cands))]
		if b.Active.Load() < a.Active.Load() {
			return b, nil
		}
		return a, nil
	}
}
