package xdsconf

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"
)

// Errors of Cluster.Pick, wrapped with the cluster's name.
var (
	// ErrNoAssignment: an EDS cluster whose ClusterLoadAssignment has
	// not arrived yet.
	ErrNoAssignment = errors.New("no EDS assignment yet")
	// ErrNoHealthyEndpoint: the assignment has no healthy endpoint.
	ErrNoHealthyEndpoint = errors.New("no healthy endpoint")
	// ErrAllExcluded: every healthy endpoint was excluded by the caller.
	ErrAllExcluded = errors.New("every healthy endpoint excluded")
	// ErrNotBalanced: an ORIGINAL_DST or DNS cluster, whose destination
	// the proxy finds itself (the original destination; DNSHosts).
	ErrNotBalanced = errors.New("cluster does not balance over endpoints")
)

// PickCluster chooses one of the tcp_proxy's clusters by weight, with r
// a uniformly random number the caller draws (rand.Uint32()); "" when
// there is none. It does not allocate.
func (t *TCPProxy) PickCluster(r uint32) string {
	return pickWeighted(t.Clusters, t.total, r)
}

// PickCluster chooses one of the catch-all route's clusters by weight,
// as TCPProxy.PickCluster; "" when the route is not known.
func (h *HTTPChain) PickCluster(r uint32) string {
	return pickWeighted(h.Clusters, h.total, r)
}

func (t *TCPProxy) prepare()  { t.total = sumWeights(t.Clusters) }
func (h *HTTPChain) prepare() { h.total = sumWeights(h.Clusters) }

func sumWeights(cs []WeightedCluster) uint32 {
	var s uint64
	for _, c := range cs {
		s += uint64(c.Weight)
	}
	return uint32(min(s, math.MaxUint32))
}

func pickWeighted(cs []WeightedCluster, total, r uint32) string {
	switch len(cs) {
	case 0:
		return ""
	case 1:
		return cs[0].Name
	}
	if total == 0 {
		total = sumWeights(cs) // made by hand
		if total == 0 {
			return cs[r%uint32(len(cs))].Name
		}
	}
	x := r % total
	for _, c := range cs {
		if x < c.Weight {
			return c.Name
		}
		x -= c.Weight
	}
	return cs[len(cs)-1].Name
}

// Pick chooses a healthy endpoint by the cluster's load balancing
// policy, skipping those exclude reports (nil: none; the caller's
// retry of other hosts, for one):
//   - RoundRobin: Endpoints.RR in turn, smooth weighted round robin
//     when load_balancing_weight differs;
//   - LeastRequest: the power of two random choices (by weight), the
//     one with fewer Active connections (or requests, at L7) per weight;
//   - Random: by weight;
//   - RingHash, Maglev: by the source IP (consistent: the same source
//     IP picks the same endpoint while the healthy set is unchanged),
//     over a ring (Ketama-like, 256 entries per endpoint and unit of
//     weight unless minimum_ring_size asks for more, so that a change of
//     endpoints moves only the sources of the endpoints that changed)
//     or a Maglev lookup table (maglev_lb_config.table_size, else a
//     prime size of at least 100 entries per endpoint) built once per
//     assignment; an excluded endpoint moves the pick to the next one
//     on the ring, or to a rehash.
//
// Errors wrap ErrNoAssignment, ErrNoHealthyEndpoint, ErrAllExcluded or
// ErrNotBalanced and name the cluster. Pick takes no lock and does not
// allocate (but for an error, or the first pick of an assignment made
// by hand, which builds its tables).
func (c *Cluster) Pick(src netip.AddrPort, exclude func(*Endpoint) bool) (*Endpoint, error) {
	return c.pick(src, 0, pickL4, exclude)
}

// PickRequest chooses an endpoint for an HTTP request: as Pick, but a
// RingHash or Maglev cluster uses hash, the route's key
// (Route.HashKey), when hashed is true, and a random point when it is
// false (the request has no key: Envoy picks at random too). The
// other policies ignore hash and choose as Pick does; the proxy counts
// requests in flight in Endpoint.Active for LeastRequest. It does not
// allocate.
func (c *Cluster) PickRequest(src netip.AddrPort, hash uint64, hashed bool, exclude func(*Endpoint) bool) (*Endpoint, error) {
	mode := pickRandom
	if hashed {
		mode = pickHashed
	}
	return c.pick(src, hash, mode, exclude)
}

// pickMode is where a hashing policy's hash comes from.
type pickMode int

const (
	pickL4     pickMode = iota // the source IP
	pickHashed                 // the request's key
	pickRandom                 // none: a random point
)

func (c *Cluster) pick(src netip.AddrPort, hash uint64, mode pickMode, exclude func(*Endpoint) bool) (*Endpoint, error) {
	switch c.Type {
	case ClusterOriginalDst:
		return nil, fmt.Errorf("cluster %s is ORIGINAL_DST: dial the original destination: %w", c.Name, ErrNotBalanced)
	case ClusterDNS:
		return nil, fmt.Errorf("cluster %s is a DNS cluster: resolve its hosts: %w", c.Name, ErrNotBalanced)
	}
	eps := c.Endpoints
	if eps == nil {
		return nil, fmt.Errorf("cluster %s: %w", c.Name, ErrNoAssignment)
	}
	if len(eps.Healthy) == 0 {
		return nil, fmt.Errorf("cluster %s: %w (%d listed)", c.Name, ErrNoHealthyEndpoint, len(eps.Hosts))
	}
	if c.LB == RingHash || c.LB == Maglev {
		switch mode {
		case pickL4:
			hash = hashAddr(src.Addr())
		case pickRandom:
			hash = rand.Uint64()
		}
	}
	var e *Endpoint
	switch c.LB {
	case RoundRobin:
		e = eps.pickRoundRobin(exclude)
	case Random:
		e = eps.pickRandom(exclude)
	case RingHash:
		e = eps.pickRing(c.ringSize(), hash, exclude)
	case Maglev:
		e = eps.pickMaglev(c.MaglevTableSize, hash, exclude)
	default:
		e = eps.pickLeastRequest(exclude)
	}
	if e == nil {
		return nil, fmt.Errorf("cluster %s: %w (%d healthy)", c.Name, ErrAllExcluded, len(eps.Healthy))
	}
	return e, nil
}

// ringSize are the ring's bounds: ring_hash_lb_config's, else the
// defaults (no minimum beyond ringPerWeight per unit of weight, Envoy's
// maximum).
func (c *Cluster) ringSize() ringSize {
	r := ringSize{min: c.MinRingSize, max: c.MaxRingSize}
	if r.max == 0 {
		r.max = maxRingSize
	}
	return r
}

// lbTables are built lazily and published atomically: a table is a pure
// function of Healthy, so two builders racing build the same one.
type lbTables struct {
	weights atomic.Pointer[weightTable]
	ring    atomic.Pointer[hashRing]
	maglev  atomic.Pointer[maglevTable]
}

// prepare builds the tables the cluster's policy needs, so that the
// first pick does not pay for them.
func (e *Endpoints) prepare(c *Cluster) {
	e.weightTable()
	switch c.LB {
	case RingHash:
		e.hashRing(c.ringSize())
	case Maglev:
		e.maglevTable(c.MaglevTableSize)
	}
}

func ok(e *Endpoint, exclude func(*Endpoint) bool) bool { return exclude == nil || !exclude(e) }

func weightOf(e *Endpoint) uint64 { return uint64(max(e.Weight, 1)) }

// weightTable: cumulative weights for weighted random choice and the
// smooth weighted round-robin order.
type weightTable struct {
	uniform bool
	cum     []uint64 // cum[i] = sum of the weights of Healthy[:i+1]
	sched   []uint32 // round-robin order of Healthy indexes (weighted only)
}

// maxSchedule bounds the weighted round-robin order; larger weights are
// scaled down to fit.
const maxSchedule = 4096

func (e *Endpoints) weightTable() *weightTable {
	if t := e.lb.weights.Load(); t != nil {
		return t
	}
	t := &weightTable{uniform: true, cum: make([]uint64, len(e.Healthy))}
	var sum uint64
	for i, h := range e.Healthy {
		sum += weightOf(h)
		t.cum[i] = sum
		if weightOf(h) != weightOf(e.Healthy[0]) {
			t.uniform = false
		}
	}
	if !t.uniform {
		t.sched = smoothSchedule(e.Healthy, sum)
	}
	e.lb.weights.CompareAndSwap(nil, t)
	return e.lb.weights.Load()
}

// smoothSchedule is nginx's smooth weighted round robin over one cycle:
// each endpoint appears in proportion to its weight, spread out rather
// than in runs.
func smoothSchedule(hs []*Endpoint, sum uint64) []uint32 {
	w := make([]int64, len(hs))
	g := uint64(0)
	for i, h := range hs {
		w[i] = int64(weightOf(h))
		g = gcd(g, uint64(w[i]))
	}
	total := int64(0)
	for i := range w {
		w[i] /= int64(g)
		total += w[i]
	}
	if total > maxSchedule {
		scaled := int64(0)
		for i := range w {
			w[i] = max(1, w[i]*maxSchedule/total)
			scaled += w[i]
		}
		total = scaled
	}
	cur := make([]int64, len(hs))
	out := make([]uint32, 0, total)
	for range total {
		best := 0
		for i := range cur {
			cur[i] += w[i]
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		out = append(out, uint32(best))
	}
	return out
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func (e *Endpoints) pickRoundRobin(exclude func(*Endpoint) bool) *Endpoint {
	t := e.weightTable()
	// An excluded endpoint (ejected, or tried already) passes its turn
	// by taking the next counter value, not the next slot: its turns are
	// then shared by all the others, as Envoy's round robin over the
	// hosts left does, instead of all falling on its neighbour.
	if t.uniform {
		n := uint64(len(e.Healthy))
		for range n {
			if h := e.Healthy[(e.RR.Add(1)-1)%n]; ok(h, exclude) {
				return h
			}
		}
		return e.firstFrom(0, exclude) // concurrent pickers took the turns
	}
	n := uint64(len(t.sched))
	for range n {
		if h := e.Healthy[t.sched[(e.RR.Add(1)-1)%n]]; ok(h, exclude) {
			return h
		}
	}
	return e.firstFrom(0, exclude) // an endpoint scaled out of the schedule
}

// randomIndex draws a Healthy index by weight.
func (e *Endpoints) randomIndex(t *weightTable) int {
	if t.uniform {
		return rand.IntN(len(e.Healthy))
	}
	x := rand.Uint64N(t.cum[len(t.cum)-1])
	i, _ := slices.BinarySearch(t.cum, x+1) // the first cum[i] > x
	return i
}

// firstFrom returns the first endpoint not excluded, from index i on,
// wrapping around.
func (e *Endpoints) firstFrom(i int, exclude func(*Endpoint) bool) *Endpoint {
	n := len(e.Healthy)
	for k := range n {
		if h := e.Healthy[(i+k)%n]; ok(h, exclude) {
			return h
		}
	}
	return nil
}

func (e *Endpoints) pickRandom(exclude func(*Endpoint) bool) *Endpoint {
	return e.firstFrom(e.randomIndex(e.weightTable()), exclude)
}

// lessLoaded reports whether a has fewer active connections per unit of
// weight than b.
func lessLoaded(a, b *Endpoint) bool {
	return a.Active.Load()*int64(weightOf(b)) < b.Active.Load()*int64(weightOf(a))
}

func (e *Endpoints) pickLeastRequest(exclude func(*Endpoint) bool) *Endpoint {
	n := len(e.Healthy)
	if n == 1 {
		return e.firstFrom(0, exclude)
	}
	t := e.weightTable()
	i := e.randomIndex(t)
	j := e.randomIndex(t)
	if j == i { // two distinct candidates
		j = (i + 1 + rand.IntN(n-1)) % n
	}
	a, b := e.Healthy[i], e.Healthy[j]
	okA, okB := ok(a, exclude), ok(b, exclude)
	switch {
	case okA && okB:
		if lessLoaded(b, a) {
			return b
		}
		return a
	case okA:
		return a
	case okB:
		return b
	}
	// Both excluded: the least loaded of the rest.
	var best *Endpoint
	for _, h := range e.Healthy {
		if ok(h, exclude) && (best == nil || lessLoaded(h, best)) {
			best = h
		}
	}
	return best
}

// hashAddr hashes an IP address (FNV-1a over its 16-byte form, then a
// 64-bit finalizer for avalanche), without allocating.
func hashAddr(a netip.Addr) uint64 {
	b := a.Unmap().As16()
	return mix64(fnv1a(fnvOffset, b[:]))
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnv1a(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

// mix64 is splitmix64's finalizer.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func hashString(s string, salt uint64) uint64 {
	return mix64(fnv1a(fnvOffset^salt, []byte(s)))
}

// hashRing is a consistent hash ring: entries sorted by hash, each the
// Healthy index of its endpoint.
type hashRing struct {
	size   ringSize // what it was built for
	hashes []uint64
	hosts  []uint32
}

// ringSize bounds a ring's number of entries.
type ringSize struct{ min, max uint64 }

// Ring sizing: each endpoint gets ringPerWeight entries per unit of
// weight relative to the lightest endpoint (about 6% imbalance), whatever
// the number of endpoints, so that adding or removing one moves only the
// sources of that one; a ring has at most maxRingSize entries (Envoy's
// maximum). A minimum_ring_size above that total raises the entries per
// unit of weight (then they depend on the number of endpoints, as in
// Envoy).
const (
	ringPerWeight = 256
	maxRingSize   = 8 << 20
)

func (e *Endpoints) hashRing(size ringSize) *hashRing {
	if r := e.lb.ring.Load(); r != nil && r.size == size {
		return r
	}
	var total, minW uint64 = 0, math.MaxUint64
	for _, h := range e.Healthy {
		total += weightOf(h)
		minW = min(minW, weightOf(h))
	}
	units := float64(total) / float64(minW) // ring entries per unit of weight, times
	perWeight := max(float64(ringPerWeight), math.Ceil(float64(size.min)/units))
	perWeight = min(perWeight, float64(size.max)/units)
	type entry struct {
		h    uint64
		host uint32
	}
	var entries []entry
	for i, h := range e.Healthy {
		n := max(1, int(math.Round(float64(weightOf(h))/float64(minW)*perWeight)))
		key := h.Addr.String() + "_"
		for k := range n {
			entries = append(entries, entry{hashString(key+strconv.Itoa(k), 0), uint32(i)})
		}
	}
	slices.SortFunc(entries, func(a, b entry) int {
		switch {
		case a.h < b.h:
			return -1
		case a.h > b.h:
			return 1
		}
		return int(a.host) - int(b.host)
	})
	r := &hashRing{size: size, hashes: make([]uint64, len(entries)), hosts: make([]uint32, len(entries))}
	for i, en := range entries {
		r.hashes[i], r.hosts[i] = en.h, en.host
	}
	// Clusters sharing an assignment with other ring sizes (which the
	// controller never sends) each get theirs, the last one cached.
	e.lb.ring.Store(r)
	return r
}

func (e *Endpoints) pickRing(size ringSize, h uint64, exclude func(*Endpoint) bool) *Endpoint {
	r := e.hashRing(size)
	n := len(r.hashes)
	i, _ := slices.BinarySearch(r.hashes, h) // the first entry at or after h
	for k := range n {
		if ep := e.Healthy[r.hosts[(i+k)%n]]; ok(ep, exclude) {
			return ep
		}
	}
	return nil
}

// maglevTable is a Maglev lookup table (Eisenbud et al., NSDI 2016)
// of Healthy indexes, weighted as Envoy's.
type maglevTable struct {
	size  uint64 // the table_size it was built for (0: by the number of endpoints)
	slots []uint32
}

// maglevSizes are primes; a table is the smallest with at least 100
// slots per endpoint (Envoy's default is 65537 whatever the size),
// unless maglev_lb_config.table_size says.
var maglevSizes = []uint64{251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521}

func (e *Endpoints) maglevTable(size uint64) *maglevTable {
	if t := e.lb.maglev.Load(); t != nil && t.size == size {
		return t
	}
	n := len(e.Healthy)
	if n == 0 { // nothing to pick (Pick returns before); no table to fill
		t := &maglevTable{size: size}
		e.lb.maglev.Store(t)
		return t
	}
	m := size
	if m == 0 {
		m = maglevSizes[len(maglevSizes)-1]
		for _, s := range maglevSizes {
			if s >= 100*uint64(n) {
				m = s
				break
			}
		}
	}
	offset, skip, next, count := make([]uint64, n), make([]uint64, n), make([]uint64, n), make([]float64, n)
	norm := make([]float64, n)
	var maxW uint64
	for _, h := range e.Healthy {
		maxW = max(maxW, weightOf(h))
	}
	for i, h := range e.Healthy {
		key := h.Addr.String()
		offset[i] = hashString(key, 0) % m
		skip[i] = hashString(key, 0x9e3779b97f4a7c15)%(m-1) + 1
		norm[i] = float64(weightOf(h)) / float64(maxW)
	}
	const empty = math.MaxUint32
	slots := make([]uint32, m)
	for i := range slots {
		slots[i] = empty
	}
	filled := uint64(0)
	for iter := 1; filled < m; iter++ {
		for i := 0; i < n && filled < m; i++ {
			if float64(iter)*norm[i] < count[i] {
				continue // a lighter endpoint skips turns
			}
			count[i]++
			c := (offset[i] + skip[i]*next[i]) % m
			for slots[c] != empty {
				next[i]++
				c = (offset[i] + skip[i]*next[i]) % m
			}
			slots[c] = uint32(i)
			next[i]++
			filled++
		}
	}
	t := &maglevTable{size: size, slots: slots}
	e.lb.maglev.Store(t)
	return t
}

func (e *Endpoints) pickMaglev(size uint64, h uint64, exclude func(*Endpoint) bool) *Endpoint {
	t := e.maglevTable(size)
	m := uint64(len(t.slots))
	for k := range uint64(2 * len(e.Healthy)) {
		if ep := e.Healthy[t.slots[mix64(h+k)%m]]; ok(ep, exclude) {
			return ep
		}
	}
	return e.firstFrom(int(t.slots[h%m]), exclude)
}
