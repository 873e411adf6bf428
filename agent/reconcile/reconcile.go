// Package reconcile keeps a node's XDP FIB equal to what its flow tables
// (FDS: the shared "mesh" table and the node's own) say: the RIB → FIB
// step. Compile checks and translates the tables; a Reconciler resolves
// what only the node knows (the interface that reaches each local pod,
// the MAC addresses of next hops) through a Resolver, and writes only the
// differences through a Dataplane: entries are added or changed before
// stale ones are removed, and the maps are never flushed, so packets in
// flight never see an empty or half-built table.
//
// The Reconciler starts from what the maps hold (after an agent restart,
// the pinned FIB an earlier agent programmed) and, until it is given
// tables, changes nothing. A route whose next hop cannot be resolved yet
// is retried with backoff and whenever Kick is called (on netlink link and
// neighbour updates); while it is unresolved, an entry already in the map
// for it is left in place rather than removed.
//
// Dataplane and Resolver are the seams: fastpath/fib and netlink in the
// agent, fakes in tests.
package reconcile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	"github.com/fibmesh/fibmesh/fastpath/fib"
)

// Dataplane is the part of the FIB the reconciler writes.
type Dataplane interface {
	ListRoutes() ([]fib.Route, error)
	PutRoutes(routes ...fib.Route) error
	DeleteRoutes(prefixes ...netip.Prefix) error
	ListPolicies() ([]fib.PolicyEntry, error)
	PutPolicies(entries ...fib.PolicyEntry) error
	DeletePolicies(keys ...fib.PolicyKey) error
	// Attach attaches the FIB to an interface (and allows redirects to
	// it). Attaching an interface that has it already must be cheap and
	// harmless: it is called again when the interface's index changes.
	Attach(ifname string) error
}

// Resolver finds next hops in the kernel. A Resolver that caches kernel
// state may also have a Refresh() method: it is called at the start of
// each sync, so that one sync reads the kernel once.
type Resolver interface {
	// Pod returns the interface of this node that reaches a local pod's
	// IP (its host-side veth) and the next hop to it.
	Pod(ip netip.Addr) (dev string, nh fib.NextHop, err error)
	// Remote returns the next hop out of nic towards the neighbour via.
	Remote(nic string, via netip.Addr) (fib.NextHop, error)
}

// Config configures a Reconciler.
type Config struct {
	// Node is this node's name: its table's name and the node of routes
	// to skip in the mesh table.
	Node string
	// NIC is the node's fabric interface: remote routes leave through it,
	// and the FIB is attached to it.
	NIC       string
	Dataplane Dataplane
	Resolver  Resolver
	// Punt lists destinations whose new flows are punted for a decision
	// (fib.NextHop.PuntNew on the routes they contain).
	Punt []netip.Prefix
	// Applied, when set, is called by Apply once new tables are the
	// desired state and written (as far as they could be), with the
	// tables before (nil at the first) and after, on Apply's goroutine
	// and outside the Reconciler's lock: the agent re-decides there the
	// punted flows a policy change touches.
	Applied func(prev, next *Desired)
	// MinRetry and MaxRetry bound the backoff between attempts to resolve
	// what is unresolved (default 100ms and 5s).
	MinRetry, MaxRetry time.Duration
	// Resync is how often Run re-resolves everything even when nothing is
	// pending and no netlink event came (default 1 minute): a safety net
	// for a lost event (a neighbour's new MAC). It writes only what
	// differs, so an idle node writes nothing.
	Resync time.Duration
}

// Writes counts map entries written since the Reconciler started.
type Writes struct {
	RoutePuts, RouteDeletes, PolicyPuts, PolicyDeletes uint64
	// ServicePuts and ServiceDeletes count service tables written and
	// removed; FlowsMoved the flows whose entries were deleted because
	// their backend left the service (services.go).
	ServicePuts, ServiceDeletes, FlowsMoved uint64
}

// Status is what a Reconciler holds and what it is waiting for.
type Status struct {
	// Applied is true once tables have been applied.
	Applied bool
	// Versions of the tables applied last, by table name.
	Versions map[string]string
	// Routes and Policies are the entries the maps hold (as written or
	// read back at start).
	Routes   []fib.Route
	Policies []fib.PolicyEntry
	// Services are the service tables the FIB holds, in VIP, port,
	// protocol order; the tables are shared: read only.
	Services []fib.ServiceEntry
	// Attached maps each interface the FIB was attached to by this
	// Reconciler to its ifindex.
	Attached map[string]int
	// Pending maps what is not programmed yet (a route's prefix, an
	// interface) to why; it is retried.
	Pending map[string]string
	Writes  Writes
}

// Reconciler keeps the FIB equal to the last tables it accepted.
type Reconciler struct {
	cfg  Config
	kick chan struct{}

	mu       sync.Mutex
	desired  *Desired // last good; nil before the first Apply
	routes   map[netip.Prefix]fib.Route
	policies map[fib.PolicyKey]fib.PolicyEntry
	attached map[string]int
	pending  map[string]string
	writes   Writes
	services map[fib.ServiceKey][]fib.Backend        // the tables the FIB holds
	gone     map[fib.ServiceKey]map[fib.Backend]bool // backends whose flows must move
	built    map[fib.ServiceKey][]ServiceBackend     // the backends each held table was built from
}

// New reads the maps' current contents through cfg.Dataplane (the FIB as
// the previous agent left it) and returns a Reconciler that starts from
// them. It writes nothing.
func New(cfg Config) (*Reconciler, error) {
	if cfg.Node == "" || cfg.NIC == "" || cfg.Dataplane == nil || cfg.Resolver == nil {
		return nil, errors.New("reconcile: Node, NIC, Dataplane and Resolver are required")
	}
	if cfg.MinRetry <= 0 {
		cfg.MinRetry = 100 * time.Millisecond
	}
	if cfg.MaxRetry <= 0 {
		cfg.MaxRetry = 5 * time.Second
	}
	cfg.MaxRetry = max(cfg.MaxRetry, cfg.MinRetry)
	if cfg.Resync <= 0 {
		cfg.Resync = time.Minute
	}
	r := &Reconciler{
		cfg: cfg, kick: make(chan struct{}, 1),
		routes: map[netip.Prefix]fib.Route{}, policies: map[fib.PolicyKey]fib.PolicyEntry{},
		attached: map[string]int{}, pending: map[string]string{},
		services: map[fib.ServiceKey][]fib.Backend{}, gone: map[fib.ServiceKey]map[fib.Backend]bool{},
		built: map[fib.ServiceKey][]ServiceBackend{},
	}
	rs, err := cfg.Dataplane.ListRoutes()
	if err != nil {
		return nil, fmt.Errorf("reconcile: read the FIB's routes: %w", err)
	}
	for _, rt := range rs {
		r.routes[rt.Prefix] = rt
	}
	ps, err := cfg.Dataplane.ListPolicies()
	if err != nil {
		return nil, fmt.Errorf("reconcile: read the FIB's policy: %w", err)
	}
	for _, p := range ps {
		r.policies[p.Key] = p
	}
	if err := r.loadServices(); err != nil {
		return nil, err
	}
	return r, nil
}

// Validate checks tables as Apply would, without applying them.
func (r *Reconciler) Validate(tables map[string]*fibv1.FlowTable) error {
	_, err := Compile(r.cfg.Node, tables)
	return err
}

// Apply compiles tables and, if they are valid, makes them the desired
// state and writes the differences. A compile error (the reason to NACK)
// changes nothing: the last good tables stay programmed. Once the tables
// are accepted, what cannot be written yet (an unresolved neighbour, a
// map write that failed) is retried by Run and reported by Status; Apply
// returns nil.
func (r *Reconciler) Apply(tables map[string]*fibv1.FlowTable) error {
	d, err := Compile(r.cfg.Node, tables)
	if err != nil {
		return err
	}
	r.mu.Lock()
	prev := r.desired
	r.desired = d
	r.syncLocked()
	pending := len(r.pending) > 0
	r.mu.Unlock()
	if pending {
		r.Kick() // let Run re-arm its retry timer for what is pending
	}
	if r.cfg.Applied != nil {
		r.cfg.Applied(prev, d)
	}
	return nil
}

// Desired returns the last tables accepted, compiled; nil before the
// first. It must not be modified.
func (r *Reconciler) Desired() *Desired {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.desired
}

// Kick asks Run to re-resolve and re-sync now (a link or neighbour
// changed). It never blocks.
func (r *Reconciler) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run re-syncs on Kick, while something is pending on a backoff timer
// (MinRetry doubling to MaxRetry), and every Resync, until ctx is done.
func (r *Reconciler) Run(ctx context.Context) error {
	backoff := r.cfg.MinRetry
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	resync := time.NewTicker(r.cfg.Resync)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
			backoff = r.cfg.MinRetry
		case <-timer.C:
			backoff = min(2*backoff, r.cfg.MaxRetry)
		case <-resync.C:
		}
		r.mu.Lock()
		r.syncLocked()
		pending := len(r.pending) > 0
		r.mu.Unlock()
		timer.Stop()
		if pending {
			timer.Reset(backoff)
		}
	}
}

// Sync re-resolves and writes the differences once.
func (r *Reconciler) Sync() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.syncLocked()
}

func (r *Reconciler) syncLocked() {
	d := r.desired
	if d == nil {
		return
	}
	if rf, ok := r.cfg.Resolver.(interface{ Refresh() }); ok {
		rf.Refresh()
	}
	pending := map[string]string{}
	if err := r.attachLocked(r.cfg.NIC, 0); err != nil {
		pending["interface "+r.cfg.NIC] = err.Error()
	}
	// Resolve every route; unresolved ones keep whatever the map holds.
	want := make(map[netip.Prefix]fib.Route, len(d.Routes))
	remote := map[netip.Addr]fib.NextHop{} // one lookup per next hop
	remoteErr := map[netip.Addr]error{}
	for _, p := range sortedPrefixes(d.Routes) {
		in := d.Routes[p]
		var nh fib.NextHop
		var err error
		if in.Local() {
			var dev string
			dev, nh, err = r.cfg.Resolver.Pod(in.Via)
			if err == nil {
				if aerr := r.attachLocked(dev, nh.Ifindex); aerr != nil {
					err = fmt.Errorf("pod %s: %w", in.Pod, aerr)
				}
			}
		} else if n, ok := remote[in.Via]; ok {
			nh = n
		} else if e, ok := remoteErr[in.Via]; ok {
			err = e
		} else {
			nh, err = r.cfg.Resolver.Remote(r.cfg.NIC, in.Via)
			if err != nil {
				remoteErr[in.Via] = err
			} else {
				remote[in.Via] = nh
			}
		}
		if err != nil {
			pending["route "+p.String()] = err.Error()
			continue
		}
		nh.PuntNew = r.punts(p)
		want[p] = fib.Route{Prefix: p, NextHop: nh}
	}
	var puts []fib.Route
	for _, p := range sortedPrefixes(want) {
		if have, ok := r.routes[p]; !ok || !sameNextHop(have.NextHop, want[p].NextHop) {
			puts = append(puts, want[p])
		}
	}
	var dels []netip.Prefix
	for _, p := range sortedPrefixes(r.routes) {
		if _, ok := d.Routes[p]; !ok {
			dels = append(dels, p)
		}
	}
	// Additions and changes first, removals after: a packet finds either
	// the old or the new route, never none.
	if len(puts) > 0 {
		if err := r.cfg.Dataplane.PutRoutes(puts...); err != nil {
			pending["routes"] = err.Error()
		} else {
			r.writes.RoutePuts += uint64(len(puts))
			for _, rt := range puts {
				r.routes[rt.Prefix] = rt
			}
		}
	}
	if len(dels) > 0 {
		if err := r.cfg.Dataplane.DeleteRoutes(dels...); err != nil {
			pending["routes"] = err.Error()
		} else {
			r.writes.RouteDeletes += uint64(len(dels))
			for _, p := range dels {
				delete(r.routes, p)
			}
		}
	}

	var pputs []fib.PolicyEntry
	for k, m := range d.Policies {
		_, punt := d.Punt[k] // an L4 policy covers the port (punt.go)
		want := fib.PolicyEntry{Key: k, Mode: m, Punt: punt}
		if have, ok := r.policies[k]; !ok || have != want {
			pputs = append(pputs, want)
		}
	}
	var pdels []fib.PolicyKey
	for k := range r.policies {
		if _, ok := d.Policies[k]; !ok {
			pdels = append(pdels, k)
		}
	}
	sortPolicy(pputs)
	if len(pputs) > 0 {
		if err := r.cfg.Dataplane.PutPolicies(pputs...); err != nil {
			pending["policy"] = err.Error()
		} else {
			r.writes.PolicyPuts += uint64(len(pputs))
			for _, e := range pputs {
				r.policies[e.Key] = e
			}
		}
	}
	if len(pdels) > 0 {
		if err := r.cfg.Dataplane.DeletePolicies(pdels...); err != nil {
			pending["policy"] = err.Error()
		} else {
			r.writes.PolicyDeletes += uint64(len(pdels))
			for _, k := range pdels {
				delete(r.policies, k)
			}
		}
	}
	r.syncServicesLocked(d, pending)
	r.pending = pending
}

// attachLocked attaches the FIB to dev unless this Reconciler did so for
// the same ifindex (0: any) already.
func (r *Reconciler) attachLocked(dev string, ifindex int) error {
	if have, ok := r.attached[dev]; ok && (ifindex == 0 || have == ifindex) {
		return nil
	}
	if err := r.cfg.Dataplane.Attach(dev); err != nil {
		return err
	}
	r.attached[dev] = ifindex
	return nil
}

func (r *Reconciler) punts(p netip.Prefix) bool {
	return slices.ContainsFunc(r.cfg.Punt, func(q netip.Prefix) bool {
		return q.Bits() <= p.Bits() && q.Contains(p.Addr())
	})
}

func sameNextHop(a, b fib.NextHop) bool {
	return a.Ifindex == b.Ifindex && bytes.Equal(a.SrcMAC, b.SrcMAC) && bytes.Equal(a.DstMAC, b.DstMAC) && a.PuntNew == b.PuntNew
}

func sortPolicy(es []fib.PolicyEntry) {
	slices.SortFunc(es, func(a, b fib.PolicyEntry) int {
		if c := a.Key.Addr.Compare(b.Key.Addr); c != 0 {
			return c
		}
		if a.Key.Port != b.Key.Port {
			return int(a.Key.Port) - int(b.Key.Port)
		}
		return int(a.Key.Proto) - int(b.Key.Proto)
	})
}

// Status returns a copy of what the Reconciler holds.
func (r *Reconciler) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Status{
		Applied:  r.desired != nil,
		Attached: maps.Clone(r.attached),
		Pending:  maps.Clone(r.pending),
		Writes:   r.writes,
	}
	if r.desired != nil {
		s.Versions = maps.Clone(r.desired.Versions)
	}
	for _, p := range sortedPrefixes(r.routes) {
		s.Routes = append(s.Routes, r.routes[p])
	}
	for _, e := range r.policies {
		s.Policies = append(s.Policies, e)
	}
	sortPolicy(s.Policies)
	s.Services = r.servicesStatus()
	return s
}

// FIB returns the Dataplane of a loaded fastpath FIB; attach attaches the
// FIB to an interface (the agent's also opens the interface's punt
// socket).
func FIB(f *fib.FIB, attach func(ifname string) error) Dataplane {
	return fibDataplane{f, attach}
}

type fibDataplane struct {
	f      *fib.FIB
	attach func(string) error
}

func (d fibDataplane) ListRoutes() ([]fib.Route, error)         { return d.f.Routes.List() }
func (d fibDataplane) PutRoutes(rs ...fib.Route) error          { return d.f.Routes.Put(rs...) }
func (d fibDataplane) DeleteRoutes(ps ...netip.Prefix) error    { return d.f.Routes.Delete(ps...) }
func (d fibDataplane) ListPolicies() ([]fib.PolicyEntry, error) { return d.f.Policy.List() }
func (d fibDataplane) PutPolicies(es ...fib.PolicyEntry) error  { return d.f.Policy.Put(es...) }
func (d fibDataplane) DeletePolicies(ks ...fib.PolicyKey) error { return d.f.Policy.Delete(ks...) }
func (d fibDataplane) Attach(ifname string) error               { return d.attach(ifname) }
