package reconcile

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/fastpath/maglev"
)

// Service is one service VIP:port/proto of the flow tables, as the FIB
// load-balances it.
type Service struct {
	Key fib.ServiceKey
	// Hostname is the service's name (FDS ServiceVIP.hostname).
	Hostname string
	// Backends are the ready endpoints in the table's order, each
	// address:port once. None: the FIB answers the VIP's new flows with
	// ICMP port unreachable (UDP) or a TCP RST.
	Backends []ServiceBackend
}

// ServiceBackend is one backend of a Service.
type ServiceBackend struct {
	fib.Backend
	// Weight is the backend's relative share as FDS gives it (0 means 1).
	Weight uint32
	// Node is the node the backend runs on ("" when FDS does not say).
	Node string
}

// Name is the backend's Maglev name, "IP:port": its slots follow from it.
func (b ServiceBackend) Name() string {
	return netip.AddrPortFrom(b.Addr, b.Port).String()
}

// ServiceDataplane is the part of the FIB that serves service VIPs: their
// Maglev tables and the flow entries of the flows they translated. A
// Dataplane that also implements it gets the tables' services programmed;
// with one that does not, services are reported pending.
type ServiceDataplane interface {
	ListServices() ([]fib.ServiceEntry, error)
	// PutService installs or replaces k's table atomically.
	PutService(k fib.ServiceKey, table []fib.Backend) error
	DeleteServices(keys ...fib.ServiceKey) error
	ListFlows() ([]fib.FlowEntry, error)
	// DeleteFlows removes flow entries, in order; missing ones are
	// ignored.
	DeleteFlows(keys ...fib.FlowKey) error
}

// compileServices checks table name's service VIPs and adds them to d.
// IPv4 only, as routes: a service with an IPv6 VIP is skipped, as is an
// IPv6 backend of an IPv4 VIP. Where a VIP:port/proto is listed twice,
// the first in the tables' order (by table name, then within the table)
// wins; a backend address:port listed twice in one service counts once,
// with its first weight.
func compileServices(d *Desired, name string, t *fibv1.FlowTable) error {
	for i, s := range t.GetServices() {
		where := fmt.Sprintf("flow table %q: services[%d] (%s)", name, i, s.GetHostname())
		vip, err := netip.ParseAddr(s.GetVip())
		if err != nil {
			return fmt.Errorf("%s.vip %q: want an IP address: %w", where, s.GetVip(), err)
		}
		if s.GetPort() == 0 || s.GetPort() > 65535 {
			return fmt.Errorf("%s.port %d: want 1-65535", where, s.GetPort())
		}
		proto, err := protoOf(s.GetProtocol())
		if err != nil {
			return fmt.Errorf("%s.%w", where, err)
		}
		svc := Service{Key: fib.ServiceKey{VIP: vip.Unmap(), Port: uint16(s.GetPort()), Proto: proto}, Hostname: s.GetHostname()}
		seen := map[fib.Backend]bool{}
		for j, b := range s.GetBackends() {
			ip, err := netip.ParseAddr(b.GetIp())
			if err != nil {
				return fmt.Errorf("%s.backends[%d].ip %q: want an IP address: %w", where, j, b.GetIp(), err)
			}
			if b.GetPort() == 0 || b.GetPort() > 65535 {
				return fmt.Errorf("%s.backends[%d].port %d: want 1-65535", where, j, b.GetPort())
			}
			fb := fib.Backend{Addr: ip.Unmap(), Port: uint16(b.GetPort())}
			if !fb.Addr.Is4() || seen[fb] {
				continue // the FIB translates IPv4; a duplicate counts once
			}
			seen[fb] = true
			svc.Backends = append(svc.Backends, ServiceBackend{Backend: fb, Weight: b.GetWeight(), Node: b.GetNode()})
		}
		if len(svc.Backends) > maglev.MaxBackends {
			return fmt.Errorf("%s.backends: %d backends: at most %d per service port", where, len(svc.Backends), maglev.MaxBackends)
		}
		if !svc.Key.VIP.Is4() {
			continue // the FIB translates IPv4; the kernel keeps IPv6
		}
		if _, dup := d.Services[svc.Key]; dup {
			continue
		}
		d.Services[svc.Key] = svc
	}
	return nil
}

// Table builds s's Maglev table of size m: table[i] serves the flows
// whose fib.FlowHash modulo m is i. No backend gives an empty table.
func (s Service) Table(m uint32) ([]fib.Backend, error) {
	bs := make([]maglev.Backend, len(s.Backends))
	for i, b := range s.Backends {
		bs[i] = maglev.Backend{Name: b.Name(), Weight: b.Weight}
	}
	idx, err := maglev.Build(bs, m)
	if err != nil {
		return nil, fmt.Errorf("service %s (%s): %w", s.Key.String(), s.Hostname, err)
	}
	table := make([]fib.Backend, len(idx))
	for i, j := range idx {
		table[i] = s.Backends[j].Backend
	}
	return table, nil
}

// TableShares returns the distinct backends of a table as the FIB holds
// it, in address order, with the number of slots each holds and its
// Maglev share (slots / len(table)).
func TableShares(table []fib.Backend) (backends []fib.Backend, slots []int, shares []float64) {
	index := map[fib.Backend]int{}
	for _, b := range table {
		if _, ok := index[b]; !ok {
			index[b] = 0
			backends = append(backends, b)
		}
	}
	slices.SortFunc(backends, compareBackend)
	for i, b := range backends {
		index[b] = i
	}
	idx := make([]int, len(table))
	slots = make([]int, len(backends))
	for i, b := range table {
		idx[i] = index[b]
		slots[idx[i]]++
	}
	return backends, slots, maglev.Shares(idx, len(backends))
}

// PendingService is the key of Status.Pending that says why service k's
// table is not written yet.
func PendingService(k fib.ServiceKey) string { return "service " + k.String() }

func compareBackend(a, b fib.Backend) int {
	return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port))
}

func compareServiceKey(a, b fib.ServiceKey) int {
	return cmp.Or(a.VIP.Compare(b.VIP), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto))
}

// sortedServiceKeys returns m's keys in VIP, port, protocol order.
func sortedServiceKeys[V any](m map[fib.ServiceKey]V) []fib.ServiceKey {
	out := make([]fib.ServiceKey, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, compareServiceKey)
	return out
}

// backendSet is the distinct backends of a table.
func backendSet(table []fib.Backend) map[fib.Backend]bool {
	s := make(map[fib.Backend]bool, 8)
	for _, b := range table {
		s[b] = true
	}
	return s
}

// loadServices reads the service tables the FIB holds (a restarted
// agent's predecessor's), so that Apply writes only what differs.
func (r *Reconciler) loadServices() error {
	sd, ok := r.cfg.Dataplane.(ServiceDataplane)
	if !ok {
		return nil
	}
	es, err := sd.ListServices()
	if err != nil {
		return fmt.Errorf("reconcile: read the FIB's services: %w", err)
	}
	for _, e := range es {
		r.services[e.Key] = e.Table
	}
	return nil
}

// syncServicesLocked makes the FIB's service tables those of d: a table
// is put only when it differs from the one held, tables of services gone
// are deleted, and the flows of backends that left a service are moved:
// their flow entries (both directions) are deleted after the new table
// is in place, so that their next packet picks again from it, while
// flows on the backends that stay keep their entries and their backend.
// What fails is reported in pending and retried.
func (r *Reconciler) syncServicesLocked(d *Desired, pending map[string]string) {
	sd, ok := r.cfg.Dataplane.(ServiceDataplane)
	if !ok {
		if len(d.Services) > 0 {
			pending["services"] = "this FIB has no service maps: service VIPs are not load-balanced in XDP"
		}
		return
	}
	for _, k := range sortedServiceKeys(d.Services) {
		s := d.Services[k]
		held, had := r.services[k]
		if built, ok := r.built[k]; had && ok && slices.Equal(built, s.Backends) {
			// The table held was built from these backends: a sync
			// (every netlink event) does not rebuild 10,000 tables.
			continue
		}
		m, err := maglev.Fit(uint32(len(held)), len(s.Backends))
		if err != nil {
			pending[PendingService(k)] = err.Error()
			continue
		}
		var table []fib.Backend
		if len(s.Backends) > 0 {
			if table, err = s.Table(m); err != nil {
				pending[PendingService(k)] = err.Error()
				continue
			}
		}
		if had && slices.Equal(held, table) {
			r.built[k] = s.Backends
			continue
		}
		if err := sd.PutService(k, table); err != nil {
			pending[PendingService(k)] = err.Error()
			continue
		}
		r.writes.ServicePuts++
		r.services[k] = table
		r.built[k] = s.Backends
		r.noteGone(k, held, backendSet(table))
	}
	var dels []fib.ServiceKey
	for _, k := range sortedServiceKeys(r.services) {
		if _, ok := d.Services[k]; !ok {
			dels = append(dels, k)
		}
	}
	if len(dels) > 0 {
		if err := sd.DeleteServices(dels...); err != nil {
			pending["services"] = err.Error()
		} else {
			r.writes.ServiceDeletes += uint64(len(dels))
			for _, k := range dels {
				r.noteGone(k, r.services[k], nil)
				delete(r.services, k)
				delete(r.built, k)
			}
		}
	}
	if len(r.gone) > 0 {
		if err := r.moveFlowsLocked(sd); err != nil {
			pending["service flows"] = err.Error()
		}
	}
}

// noteGone records the backends of old that are not in kept: their flows
// of service k must move.
func (r *Reconciler) noteGone(k fib.ServiceKey, old []fib.Backend, kept map[fib.Backend]bool) {
	for b := range backendSet(old) {
		if kept[b] {
			continue
		}
		if r.gone[k] == nil {
			r.gone[k] = map[fib.Backend]bool{}
		}
		r.gone[k][b] = true
	}
}

// moveFlowsLocked deletes the flow entries of the flows r.gone names: the
// forward entry {client, VIP, cport, vport} whose DNAT goes to a backend
// that left the service, then its reply entry {backend, client, bport,
// cport}. Forward entries go first, so that no packet of a flow sees its
// reply entry gone while its forward entry still sends to the old
// backend. A backend back in the service's table since keeps its flows.
func (r *Reconciler) moveFlowsLocked(sd ServiceDataplane) error {
	for k, bs := range r.gone {
		for b := range backendSet(r.services[k]) {
			delete(bs, b)
		}
		if len(bs) == 0 {
			delete(r.gone, k)
		}
	}
	if len(r.gone) == 0 {
		return nil
	}
	flows, err := sd.ListFlows()
	if err != nil {
		return fmt.Errorf("list the flow entries of moved backends: %w", err)
	}
	held := make(map[fib.FlowKey]fib.Flow, len(flows))
	for _, e := range flows {
		held[e.Key] = e.Flow
	}
	var fwd, rev []fib.FlowKey
	for _, e := range flows {
		k, b, _, rk, ok := e.ServiceFlow()
		if !ok || !r.gone[k][b] {
			continue
		}
		fwd = append(fwd, e.Key)
		if f, ok := held[rk]; ok && f.NATKind == fib.NATSrc && f.NAT == netip.AddrPortFrom(k.VIP, k.Port) {
			rev = append(rev, rk)
		}
	}
	if err := sd.DeleteFlows(append(fwd, rev...)...); err != nil {
		return fmt.Errorf("delete the flow entries of moved backends: %w", err)
	}
	r.writes.FlowsMoved += uint64(len(fwd))
	clear(r.gone)
	return nil
}

// servicesStatus returns the tables held, in key order. The tables are
// shared, not copied (a table is replaced, never changed in place, and
// one can hold 400,000 slots): read only.
func (r *Reconciler) servicesStatus() []fib.ServiceEntry {
	out := make([]fib.ServiceEntry, 0, len(r.services))
	for _, k := range sortedServiceKeys(r.services) {
		out = append(out, fib.ServiceEntry{Key: k, Table: r.services[k]})
	}
	return out
}

func (d fibDataplane) ListServices() ([]fib.ServiceEntry, error) { return d.f.Services.List() }
func (d fibDataplane) PutService(k fib.ServiceKey, table []fib.Backend) error {
	return d.f.Services.Put(k, table)
}
func (d fibDataplane) DeleteServices(ks ...fib.ServiceKey) error { return d.f.Services.Delete(ks...) }
func (d fibDataplane) ListFlows() ([]fib.FlowEntry, error)       { return d.f.Flows.List() }
func (d fibDataplane) DeleteFlows(ks ...fib.FlowKey) error       { return d.f.Flows.Delete(ks...) }
