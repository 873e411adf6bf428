package xdsconf

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"testing"
)

// endpoints builds an assignment of healthy endpoints 10.0.0.<i+1>:80
// with the given weights.
func endpoints(weights ...uint32) *Endpoints {
	e := &Endpoints{}
	for i, w := range weights {
		ep := &Endpoint{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 80), Healthy: true, Weight: w}
		e.Hosts = append(e.Hosts, ep)
		e.Healthy = append(e.Healthy, ep)
	}
	return e
}

func cluster(lb LBPolicy, eps *Endpoints) *Cluster {
	return &Cluster{Name: "c", Type: ClusterEDS, LB: lb, Endpoints: eps}
}

// source returns the i-th client address.
func source(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}), 40000)
}

func index(eps *Endpoints, e *Endpoint) int {
	for i, h := range eps.Hosts {
		if h == e {
			return i
		}
	}
	return -1
}

func counts(t *testing.T, c *Cluster, n int, src func(int) netip.AddrPort) []int {
	t.Helper()
	out := make([]int, len(c.Endpoints.Hosts))
	for i := range n {
		e, err := c.Pick(src(i), nil)
		if err != nil {
			t.Fatal(err)
		}
		out[index(c.Endpoints, e)]++
	}
	return out
}

func fixedSource(int) netip.AddrPort { return source(0) }

func TestPickRoundRobin(t *testing.T) {
	c := cluster(RoundRobin, endpoints(1, 1, 1))
	var order []int
	for range 6 {
		e, err := c.Pick(source(0), nil)
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, index(c.Endpoints, e))
	}
	if fmt.Sprint(order) != "[0 1 2 0 1 2]" {
		t.Errorf("order %v", order)
	}
	// Weighted: exactly in proportion over whole cycles, and spread out.
	c = cluster(RoundRobin, endpoints(1, 3))
	if got := counts(t, c, 400, fixedSource); got[0] != 100 || got[1] != 300 {
		t.Errorf("weights 1:3 over 400 picks: %v", got)
	}
	// An excluded endpoint (ejected) is skipped, and its turns are
	// shared by the others: 1:1, not 2:1 to its neighbour.
	for _, weights := range [][]uint32{{1, 1, 1}, {2, 2, 2}} {
		c = cluster(RoundRobin, endpoints(weights...))
		seen := map[int]int{}
		for range 300 {
			e, err := c.Pick(source(0), func(e *Endpoint) bool { return e == c.Endpoints.Hosts[1] })
			if err != nil || e == c.Endpoints.Hosts[1] {
				t.Fatalf("Pick = %v, %v", e, err)
			}
			seen[index(c.Endpoints, e)]++
		}
		if seen[0] != 150 || seen[2] != 150 {
			t.Errorf("weights %v, endpoint 1 excluded: %v, want 150 each", weights, seen)
		}
	}
}

func TestPickRandom(t *testing.T) {
	c := cluster(Random, endpoints(1, 3))
	got := counts(t, c, 40000, fixedSource)
	// 0.75 expected; 0.02 is over 9 standard deviations.
	if share := float64(got[1]) / 40000; math.Abs(share-0.75) > 0.02 {
		t.Errorf("weights 1:3: share %.3f of the heavier, counts %v", share, got)
	}
}

func TestPickLeastRequest(t *testing.T) {
	// Two endpoints: the two choices are both, the less loaded wins.
	eps := endpoints(1, 1)
	eps.Hosts[0].Active.Store(10)
	c := cluster(LeastRequest, eps)
	if got := counts(t, c, 100, fixedSource); got[1] != 100 {
		t.Errorf("active 10 vs 0: %v", got)
	}
	// Per weight: 3 active on weight 1 is busier than 8 on weight 4.
	eps = endpoints(1, 4)
	eps.Hosts[0].Active.Store(3)
	eps.Hosts[1].Active.Store(8)
	c = cluster(LeastRequest, eps)
	if got := counts(t, c, 100, fixedSource); got[1] != 100 {
		t.Errorf("3/1 vs 8/4: %v", got)
	}
	// Many endpoints at equal load: all are used.
	c = cluster(LeastRequest, endpoints(1, 1, 1, 1, 1))
	for i, n := range counts(t, c, 5000, fixedSource) {
		if n < 700 {
			t.Errorf("endpoint %d picked %d of 5000 times", i, n)
		}
	}
	// The busiest of three is never picked (one of the two choices is
	// always less loaded).
	eps = endpoints(1, 1, 1)
	eps.Hosts[2].Active.Store(5)
	c = cluster(LeastRequest, eps)
	if got := counts(t, c, 1000, fixedSource); got[2] != 0 {
		t.Errorf("busiest picked: %v", got)
	}
	// Both choices excluded: the least loaded of the rest.
	eps = endpoints(1, 1, 1)
	eps.Hosts[0].Active.Store(7)
	c = cluster(LeastRequest, eps)
	e, err := c.Pick(source(0), func(e *Endpoint) bool { return e != eps.Hosts[0] })
	if err != nil || e != eps.Hosts[0] {
		t.Errorf("only 0 allowed: %v, %v", e, err)
	}
}

// Consistent hashing by source IP: stable, balanced, and removing an
// endpoint moves (almost) only its own sources.
func TestPickConsistentHash(t *testing.T) {
	const sources = 10000
	for _, tc := range []struct {
		lb LBPolicy
		// minStay is the share of sources of the remaining endpoints
		// that keep their endpoint when one of four is removed.
		minStay float64
	}{
		{RingHash, 1},  // a ring moves only the removed host's sources
		{Maglev, 0.90}, // Maglev trades a little disruption for balance
	} {
		t.Run(fmt.Sprint(tc.lb), func(t *testing.T) {
			c := cluster(tc.lb, endpoints(1, 1, 1, 1))
			first := make([]netip.AddrPort, sources)
			got := make([]int, 4)
			for i := range sources {
				e, err := c.Pick(source(i), nil)
				if err != nil {
					t.Fatal(err)
				}
				first[i] = e.Addr
				got[index(c.Endpoints, e)]++
				// Same source, other port: same endpoint.
				again, _ := c.Pick(netip.AddrPortFrom(source(i).Addr(), 1), nil)
				if again != e {
					t.Fatalf("source %v: %v then %v", source(i), e.Addr, again.Addr)
				}
			}
			for i, n := range got {
				if n < sources/4*8/10 || n > sources/4*12/10 {
					t.Errorf("endpoint %d has %d of %d sources: %v", i, n, sources, got)
				}
			}
			// Weighted 1:3.
			w := cluster(tc.lb, endpoints(1, 3))
			if share := float64(counts(t, w, sources, source)[1]) / sources; math.Abs(share-0.75) > 0.05 {
				t.Errorf("weights 1:3: share %.3f", share)
			}
			// Remove the last endpoint (a new assignment, as from EDS).
			smaller := cluster(tc.lb, endpoints(1, 1, 1))
			stay, moved := 0, 0
			for i := range sources {
				if first[i] == c.Endpoints.Hosts[3].Addr {
					continue
				}
				e, _ := smaller.Pick(source(i), nil)
				if e.Addr == first[i] {
					stay++
				} else {
					moved++
				}
			}
			if share := float64(stay) / float64(stay+moved); share < tc.minStay {
				t.Errorf("%.3f of the sources stayed, want at least %.2f", share, tc.minStay)
			}
			// An excluded endpoint sends its sources elsewhere, always to
			// the same one.
			ex := func(e *Endpoint) bool { return e.Addr == first[0] }
			e1, err1 := c.Pick(source(0), ex)
			e2, err2 := c.Pick(source(0), ex)
			if err1 != nil || err2 != nil || e1 != e2 || e1.Addr == first[0] {
				t.Errorf("excluded: %v %v, %v %v", e1, err1, e2, err2)
			}
		})
	}
}

func TestPickErrors(t *testing.T) {
	unhealthy := endpoints(1)
	unhealthy.Healthy = nil
	for _, tc := range []struct {
		name    string
		c       *Cluster
		exclude func(*Endpoint) bool
		want    error
	}{
		{"no assignment", cluster(LeastRequest, nil), nil, ErrNoAssignment},
		{"no healthy endpoint", cluster(RoundRobin, unhealthy), nil, ErrNoHealthyEndpoint},
		{"all excluded", cluster(Maglev, endpoints(1, 1)), func(*Endpoint) bool { return true }, ErrAllExcluded},
		{"all excluded, ring", cluster(RingHash, endpoints(1, 1)), func(*Endpoint) bool { return true }, ErrAllExcluded},
		{"all excluded, least request", cluster(LeastRequest, endpoints(1, 1, 1)), func(*Endpoint) bool { return true }, ErrAllExcluded},
		{"original destination", &Cluster{Name: "c", Type: ClusterOriginalDst, LB: ClusterProvided}, nil, ErrNotBalanced},
		{"DNS", &Cluster{Name: "c", Type: ClusterDNS, DNSHosts: []string{"a:1"}}, nil, ErrNotBalanced},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := tc.c.Pick(source(1), tc.exclude)
			if !errors.Is(err, tc.want) || e != nil {
				t.Errorf("Pick = %v, %v; want %v", e, err, tc.want)
			}
			if err != nil && !containsWord(err.Error(), "cluster c") {
				t.Errorf("error %q does not name the cluster", err)
			}
		})
	}
}

func containsWord(s, w string) bool {
	for i := 0; i+len(w) <= len(s); i++ {
		if s[i:i+len(w)] == w {
			return true
		}
	}
	return false
}

func TestPickCluster(t *testing.T) {
	tp := &TCPProxy{Clusters: []WeightedCluster{{"a", 1}, {"b", 2}, {"c", 7}}}
	got := map[string]int{}
	for r := range uint32(1000) {
		got[tp.PickCluster(r)]++
	}
	if got["a"] != 100 || got["b"] != 200 || got["c"] != 700 {
		t.Errorf("by hand: %v", got)
	}
	tp.prepare()
	if tp.PickCluster(math.MaxUint32) == "" || (&TCPProxy{}).PickCluster(1) != "" {
		t.Error("edge cases")
	}
}
