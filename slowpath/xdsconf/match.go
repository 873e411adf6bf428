package xdsconf

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Match chooses the filter chain of a connection the way Envoy does
// (FilterChainMatch): the destination port first (chains naming the port
// beat chains without one, and a chain naming another port never
// matches), then the longest destination prefix, then the server name
// (exact, then the longest "*." wildcard, then chains without server
// names), then the longest source prefix. Each step keeps only the most
// specific chains and never backtracks: when a step leaves none, no
// chain matches and Match returns the Default chain (nil: refuse). A
// nil listener returns nil.
//
// Match takes no lock and does not allocate (but for a server name
// with upper-case letters, which it lower-cases).
func (l *Listener) Match(in MatchInput) *FilterChain {
	if l == nil {
		return nil
	}
	if i := l.index().match(in); i >= 0 {
		return l.Chains[i]
	}
	return l.Default
}

// index returns the listener's chain index, building it on first use
// for a Listener made by hand (compiled ones have it already).
func (l *Listener) index() *chainIndex {
	if ix := l.idx.Load(); ix != nil {
		return ix
	}
	ix, _ := buildIndex(l.Chains, false) // by hand: the first of two equal chains wins
	l.idx.CompareAndSwap(nil, ix)
	return l.idx.Load()
}

// chainIndex is Envoy's filter chain match tree over a listener's
// chains (by their index in Listener.Chains, so that listeners whose
// chains differ only in their resolved routes share it).
type chainIndex struct {
	ports   map[uint32]*lpm[sniLevel]
	anyPort *lpm[sniLevel]
}

// lpm is a longest-prefix match over a few prefix lengths; any is the
// entry for "no prefix given", used only when no prefix contains the
// address. Looking up an address costs one map probe per distinct
// prefix length.
type lpm[T any] struct {
	bits []int // distinct lengths, longest first
	m    map[netip.Prefix]*T
	any  *T
}

func (l *lpm[T]) lookup(a netip.Addr) *T {
	if l == nil {
		return nil
	}
	for _, b := range l.bits {
		if b > a.BitLen() {
			continue
		}
		p, err := a.Prefix(b)
		if err != nil {
			continue
		}
		if v := l.m[p]; v != nil {
			return v
		}
	}
	return l.any
}

// at returns the entry of a prefix (nil: the "any" entry), creating it.
func (l *lpm[T]) at(p *netip.Prefix) *T {
	if p == nil {
		if l.any == nil {
			l.any = new(T)
		}
		return l.any
	}
	if l.m == nil {
		l.m = map[netip.Prefix]*T{}
	}
	v := l.m[*p]
	if v == nil {
		v = new(T)
		l.m[*p] = v
		if !slices.Contains(l.bits, p.Bits()) {
			l.bits = append(l.bits, p.Bits())
			slices.SortFunc(l.bits, func(a, b int) int { return b - a })
		}
	}
	return v
}

// sniLevel chooses by server name: exact names, wildcard suffixes
// (".example.com" for "*.example.com"), and chains without names.
type sniLevel struct {
	exact map[string]*lpm[chainRef]
	wild  map[string]*lpm[chainRef]
	any   *lpm[chainRef]
}

// chainRef is a leaf: a chain's index plus one.
type chainRef struct{ i int }

func (s *sniLevel) lookup(name string) *lpm[chainRef] {
	if s == nil {
		return nil
	}
	if name != "" {
		if hasUpper(name) {
			name = strings.ToLower(name)
		}
		name = strings.TrimSuffix(name, ".")
		if v := s.exact[name]; v != nil {
			return v
		}
		if len(s.wild) > 0 {
			for i := 0; i < len(name); i++ {
				if name[i] == '.' {
					if v := s.wild[name[i:]]; v != nil {
						return v
					}
				}
			}
		}
	}
	return s.any
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

func (s *sniLevel) at(name string) *lpm[chainRef] {
	get := func(m *map[string]*lpm[chainRef], k string) *lpm[chainRef] {
		if *m == nil {
			*m = map[string]*lpm[chainRef]{}
		}
		v := (*m)[k]
		if v == nil {
			v = &lpm[chainRef]{}
			(*m)[k] = v
		}
		return v
	}
	switch {
	case name == "":
		if s.any == nil {
			s.any = &lpm[chainRef]{}
		}
		return s.any
	case strings.HasPrefix(name, "*."):
		return get(&s.wild, name[1:])
	}
	return get(&s.exact, name)
}

// match returns the index of the chain in.Destination, in.ServerName
// and in.Source select, or -1.
func (ix *chainIndex) match(in MatchInput) int {
	if ix == nil {
		return -1
	}
	dst := ix.ports[uint32(in.Destination.Port())]
	if dst == nil {
		dst = ix.anyPort
	}
	sni := dst.lookup(in.Destination.Addr().Unmap())
	src := sni.lookup(in.ServerName)
	ref := src.lookup(in.Source.Addr().Unmap())
	if ref == nil || ref.i == 0 {
		return -1
	}
	return ref.i - 1
}

// buildIndex builds the match tree. Two chains with the same match
// conditions are an error when strict (Envoy refuses such a listener);
// otherwise the first wins.
func buildIndex(chains []*FilterChain, strict bool) (*chainIndex, error) {
	ix := &chainIndex{ports: map[uint32]*lpm[sniLevel]{}}
	opt := func(ps []netip.Prefix) []*netip.Prefix {
		if len(ps) == 0 {
			return []*netip.Prefix{nil}
		}
		out := make([]*netip.Prefix, len(ps))
		for i := range ps {
			out[i] = &ps[i]
		}
		return out
	}
	for i, c := range chains {
		var dst *lpm[sniLevel]
		if c.Port == 0 {
			if ix.anyPort == nil {
				ix.anyPort = &lpm[sniLevel]{}
			}
			dst = ix.anyPort
		} else {
			if dst = ix.ports[c.Port]; dst == nil {
				dst = &lpm[sniLevel]{}
				ix.ports[c.Port] = dst
			}
		}
		names := c.ServerNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, dp := range opt(c.Prefixes) {
			sni := dst.at(dp)
			for _, n := range names {
				src := sni.at(strings.ToLower(n))
				for _, sp := range opt(c.SourcePrefixes) {
					ref := src.at(sp)
					if ref.i != 0 {
						if strict {
							return nil, fmt.Errorf("filter chains %q and %q have the same match (Envoy refuses such a listener)", chains[ref.i-1].Name, c.Name)
						}
						continue
					}
					ref.i = i + 1
				}
			}
		}
	}
	return ix, nil
}
