package fib

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"

	xfib "github.com/fibmesh/fibmesh/xdp/fib"
)

// Routes is the FIB's route table, an LPM trie of IPv4 prefixes.
type Routes struct{ m *ebpf.Map }

func routeKey(p netip.Prefix) (xfib.FibRouteKey, error) {
	if !p.IsValid() {
		return xfib.FibRouteKey{}, fmt.Errorf("invalid prefix %s", p)
	}
	a, err := addrToBE(p.Masked().Addr())
	if err != nil {
		return xfib.FibRouteKey{}, fmt.Errorf("route %s: %w", p, err)
	}
	return xfib.FibRouteKey{Prefixlen: uint32(p.Bits()), Addr: a}, nil
}

func nexthopValue(nh NextHop) (xfib.FibNexthop, error) {
	var v xfib.FibNexthop
	if nh.Ifindex <= 0 {
		return v, fmt.Errorf("next hop ifindex %d: must be > 0", nh.Ifindex)
	}
	var err error
	if v.Smac, err = macTo6(nh.SrcMAC); err != nil {
		return v, fmt.Errorf("next hop source: %w", err)
	}
	if v.Dmac, err = macTo6(nh.DstMAC); err != nil {
		return v, fmt.Errorf("next hop destination: %w", err)
	}
	v.Ifindex = uint32(nh.Ifindex)
	if nh.PuntNew {
		v.Flags |= uint32(xfib.FibNexthopFlagsNH_F_PUNT_NEW)
	}
	return v, nil
}

func routeFromMap(k xfib.FibRouteKey, v xfib.FibNexthop) Route {
	return Route{
		Prefix: netip.PrefixFrom(beToAddr(k.Addr), int(k.Prefixlen)),
		NextHop: NextHop{
			Ifindex: int(v.Ifindex),
			SrcMAC:  net.HardwareAddr(slices.Clone(v.Smac[:])),
			DstMAC:  net.HardwareAddr(slices.Clone(v.Dmac[:])),
			PuntNew: v.Flags&uint32(xfib.FibNexthopFlagsNH_F_PUNT_NEW) != 0,
		},
	}
}

// Put adds or replaces routes. It validates all of them before writing
// any, so a bad route leaves the table untouched.
func (r *Routes) Put(routes ...Route) error {
	keys := make([]xfib.FibRouteKey, len(routes))
	vals := make([]xfib.FibNexthop, len(routes))
	for i, rt := range routes {
		var err error
		if keys[i], err = routeKey(rt.Prefix); err != nil {
			return err
		}
		if vals[i], err = nexthopValue(rt.NextHop); err != nil {
			return fmt.Errorf("route %s: %w", rt.Prefix, err)
		}
	}
	return putBatch(r.m, keys, vals)
}

// Delete removes the routes for these prefixes. Missing ones are ignored.
func (r *Routes) Delete(prefixes ...netip.Prefix) error {
	for _, p := range prefixes {
		k, err := routeKey(p)
		if err != nil {
			return err
		}
		if err := r.m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete route %s: %w", p, err)
		}
	}
	return nil
}

// List returns every route, sorted by prefix.
func (r *Routes) List() ([]Route, error) {
	var out []Route
	var k xfib.FibRouteKey
	var v xfib.FibNexthop
	it := r.m.Iterate()
	for it.Next(&k, &v) {
		out = append(out, routeFromMap(k, v))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	slices.SortFunc(out, func(a, b Route) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	return out, nil
}

// Lookup returns the route the data path would pick for addr: the
// longest prefix that contains it. (The kernel's LPM lookup returns the
// next hop but not the matching prefix, so this walks the table; it is
// for tools and tests, not for per-packet work.)
func (r *Routes) Lookup(addr netip.Addr) (Route, bool, error) {
	if !addr.Is4() {
		return Route{}, false, fmt.Errorf("%s is not an IPv4 address: the FIB routes IPv4 only", addr)
	}
	all, err := r.List()
	if err != nil {
		return Route{}, false, err
	}
	best, found := Route{}, false
	for _, rt := range all {
		if rt.Prefix.Contains(addr) && (!found || rt.Prefix.Bits() > best.Prefix.Bits()) {
			best, found = rt, true
		}
	}
	return best, found, nil
}

// Replace makes the table hold exactly these routes: it writes them all,
// then deletes the ones not listed. Packets never see an empty table.
func (r *Routes) Replace(routes []Route) error {
	if err := r.Put(routes...); err != nil {
		return err
	}
	want := make(map[netip.Prefix]bool, len(routes))
	for _, rt := range routes {
		want[rt.Prefix.Masked()] = true
	}
	have, err := r.List()
	if err != nil {
		return err
	}
	var stale []netip.Prefix
	for _, rt := range have {
		if !want[rt.Prefix] {
			stale = append(stale, rt.Prefix)
		}
	}
	return r.Delete(stale...)
}

// putBatch writes keys and values with one BPF_MAP_UPDATE_BATCH where the
// map type supports it, one update per entry otherwise.
func putBatch[K, V any](m *ebpf.Map, keys []K, vals []V) error {
	if len(keys) == 0 {
		return nil
	}
	n, err := m.BatchUpdate(keys, vals, nil)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("batch update of %s (%d of %d written): %w", m, n, len(keys), err)
	}
	for i := range keys {
		if err := m.Put(&keys[i], &vals[i]); err != nil {
			return fmt.Errorf("update %s entry %d: %w", m, i, err)
		}
	}
	return nil
}

// listBatch reads a whole hash map with batch lookups.
func listBatch[K, V any](m *ebpf.Map) ([]K, []V, error) {
	var keys []K
	var vals []V
	var cursor ebpf.MapBatchCursor
	const chunk = 256
	for {
		ks := make([]K, chunk)
		vs := make([]V, chunk)
		n, err := m.BatchLookup(&cursor, ks, vs, nil)
		keys = append(keys, ks[:n]...)
		vals = append(vals, vs[:n]...)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return keys, vals, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("batch lookup of %s: %w", m, err)
		}
	}
}

// Flows is the FIB's flow table, an LRU hash of 5-tuples.
type Flows struct{ m *ebpf.Map }

func flowKey(k FlowKey) (xfib.FibFlowKey, error) {
	s, err := addrToBE(k.Src)
	if err != nil {
		return xfib.FibFlowKey{}, fmt.Errorf("flow %s: source: %w", k, err)
	}
	d, err := addrToBE(k.Dst)
	if err != nil {
		return xfib.FibFlowKey{}, fmt.Errorf("flow %s: destination: %w", k, err)
	}
	return xfib.FibFlowKey{Saddr: s, Daddr: d, Sport: portToBE(k.SrcPort), Dport: portToBE(k.DstPort), Proto: uint8(k.Proto)}, nil
}

func flowKeyFromMap(k xfib.FibFlowKey) FlowKey {
	return FlowKey{Src: beToAddr(k.Saddr), Dst: beToAddr(k.Daddr), SrcPort: beToPort(k.Sport), DstPort: beToPort(k.Dport), Proto: Proto(k.Proto)}
}

func flowFromMap(v xfib.FibFlowVal) Flow {
	f := Flow{Action: Action(v.Action), SrcID: v.SrcId, DstID: v.DstId, Packets: v.Packets, Bytes: v.Bytes, LastSeenNs: v.LastSeenNs,
		NATKind: NATKind(v.NatKind)}
	if f.NATKind != NATNone {
		f.NAT = netip.AddrPortFrom(beToAddr(v.NatAddr), beToPort(v.NatPort))
	}
	return f
}

// flowValue is the map value of a flow without counters.
func flowValue(k FlowKey, f Flow) (xfib.FibFlowVal, error) {
	if int(f.Action) >= len(actionNames) {
		return xfib.FibFlowVal{}, fmt.Errorf("flow %s: unknown action %d", k, f.Action)
	}
	v := xfib.FibFlowVal{Action: uint32(f.Action), SrcId: f.SrcID, DstId: f.DstID}
	switch f.NATKind {
	case NATNone:
	case NATDst, NATSrc:
		a, err := addrToBE(f.NAT.Addr())
		if err != nil {
			return v, fmt.Errorf("flow %s: %s to %s: %w", k, f.NATKind, f.NAT, err)
		}
		if f.NAT.Port() == 0 {
			return v, fmt.Errorf("flow %s: %s to %s: port must be 1-65535", k, f.NATKind, f.NAT)
		}
		v.NatKind, v.NatAddr, v.NatPort = uint8(f.NATKind), a, portToBE(f.NAT.Port())
	default:
		return v, fmt.Errorf("flow %s: unknown translation %d", k, f.NATKind)
	}
	return v, nil
}

// FlowEntry is a key and its flow, as listed.
type FlowEntry struct {
	Key  FlowKey
	Flow Flow
}

// Put installs or replaces flow entries. Counters start at zero.
func (f *Flows) Put(entries ...FlowEntry) error {
	keys := make([]xfib.FibFlowKey, len(entries))
	vals := make([]xfib.FibFlowVal, len(entries))
	for i, e := range entries {
		var err error
		if keys[i], err = flowKey(e.Key); err != nil {
			return err
		}
		if vals[i], err = flowValue(e.Key, e.Flow); err != nil {
			return err
		}
	}
	return putBatch(f.m, keys, vals)
}

// SetAction changes the action of an existing flow and keeps its counters.
// It returns ebpf.ErrKeyNotExist (wrapped) if the flow is not there.
func (f *Flows) SetAction(k FlowKey, a Action) error {
	key, err := flowKey(k)
	if err != nil {
		return err
	}
	var v xfib.FibFlowVal
	if err := f.m.Lookup(&key, &v); err != nil {
		return fmt.Errorf("flow %s: %w", k, err)
	}
	v.Action = uint32(a)
	if err := f.m.Update(&key, &v, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("flow %s: set action %s: %w", k, a, err)
	}
	return nil
}

// Get returns one flow entry.
func (f *Flows) Get(k FlowKey) (Flow, bool, error) {
	key, err := flowKey(k)
	if err != nil {
		return Flow{}, false, err
	}
	var v xfib.FibFlowVal
	if err := f.m.Lookup(&key, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Flow{}, false, nil
		}
		return Flow{}, false, fmt.Errorf("flow %s: %w", k, err)
	}
	return flowFromMap(v), true, nil
}

// Delete removes flow entries; missing ones are ignored.
func (f *Flows) Delete(keys ...FlowKey) error {
	for _, k := range keys {
		key, err := flowKey(k)
		if err != nil {
			return err
		}
		if err := f.m.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete flow %s: %w", k, err)
		}
	}
	return nil
}

// List returns every flow entry, in no particular order.
func (f *Flows) List() ([]FlowEntry, error) {
	keys, vals, err := listBatch[xfib.FibFlowKey, xfib.FibFlowVal](f.m)
	if err != nil {
		return nil, err
	}
	out := make([]FlowEntry, len(keys))
	for i := range keys {
		out[i] = FlowEntry{Key: flowKeyFromMap(keys[i]), Flow: flowFromMap(vals[i])}
	}
	return out, nil
}

// Policy holds the mTLS mode of pod ports.
type Policy struct{ m *ebpf.Map }

func policyKey(k PolicyKey) (xfib.FibPolicyKey, error) {
	a, err := addrToBE(k.Addr)
	if err != nil {
		return xfib.FibPolicyKey{}, fmt.Errorf("policy %s: %w", k, err)
	}
	if k.Proto != ProtoTCP && k.Proto != ProtoUDP {
		return xfib.FibPolicyKey{}, fmt.Errorf("policy %s: protocol must be tcp or udp", k)
	}
	if k.Port == 0 {
		return xfib.FibPolicyKey{}, fmt.Errorf("policy %s: port must be 1-65535", k)
	}
	return xfib.FibPolicyKey{Addr: a, Port: portToBE(k.Port), Proto: uint8(k.Proto)}, nil
}

// PolicyEntry is a pod port and its mode.
type PolicyEntry struct {
	Key  PolicyKey
	Mode Mode
	// Punt: an L4 policy covers the port, so the data path punts each
	// flow without a flow entry to the agent for a decision (a service
	// flow to the port too: its way out's entry starts as ActionPunt).
	Punt bool
}

// Put sets the mode of pod ports.
func (p *Policy) Put(entries ...PolicyEntry) error {
	keys := make([]xfib.FibPolicyKey, len(entries))
	vals := make([]xfib.FibPolicyVal, len(entries))
	for i, e := range entries {
		var err error
		if keys[i], err = policyKey(e.Key); err != nil {
			return err
		}
		if int(e.Mode) >= len(modeNames) {
			return fmt.Errorf("policy %s: unknown mode %d", e.Key, e.Mode)
		}
		vals[i] = xfib.FibPolicyVal{Mode: uint32(e.Mode)}
		if e.Punt {
			vals[i].Flags |= uint32(xfib.FibPolicyFlagsPOLICY_F_PUNT)
		}
	}
	return putBatch(p.m, keys, vals)
}

// Delete removes pod ports; missing ones are ignored.
func (p *Policy) Delete(keys ...PolicyKey) error {
	for _, k := range keys {
		key, err := policyKey(k)
		if err != nil {
			return err
		}
		if err := p.m.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete policy %s: %w", k, err)
		}
	}
	return nil
}

// List returns every policy entry.
func (p *Policy) List() ([]PolicyEntry, error) {
	keys, vals, err := listBatch[xfib.FibPolicyKey, xfib.FibPolicyVal](p.m)
	if err != nil {
		return nil, err
	}
	out := make([]PolicyEntry, len(keys))
	for i := range keys {
		out[i] = PolicyEntry{
			Key:  PolicyKey{Addr: beToAddr(keys[i].Addr), Port: beToPort(keys[i].Port), Proto: Proto(keys[i].Proto)},
			Mode: Mode(vals[i].Mode),
			Punt: vals[i].Flags&uint32(xfib.FibPolicyFlagsPOLICY_F_PUNT) != 0,
		}
	}
	return out, nil
}

// Stats reads the per-CPU counters.
type Stats struct{ m *ebpf.Map }

// Read returns every counter, summed over CPUs, indexed by Reason.
func (s *Stats) Read() ([]Counter, error) {
	out := make([]Counter, NumReasons)
	var perCPU []xfib.FibStatVal
	for i := range out {
		if err := s.m.Lookup(uint32(i), &perCPU); err != nil {
			return nil, fmt.Errorf("read counter %s: %w", Reason(i), err)
		}
		for _, c := range perCPU {
			out[i].Packets += c.Packets
			out[i].Bytes += c.Bytes
		}
	}
	return out, nil
}

// TxPorts is the devmap of devices the FIB may redirect to.
type TxPorts struct{ m *ebpf.Map }

// Add allows redirects to these interfaces.
func (t *TxPorts) Add(ifindexes ...int) error {
	for _, i := range ifindexes {
		v := xfib.FibBpfDevmapVal{Ifindex: uint32(i)}
		if err := t.m.Put(uint32(i), &v); err != nil {
			return fmt.Errorf("add ifindex %d to tx_ports: %w", i, err)
		}
	}
	return nil
}

// Remove forbids redirects to these interfaces; missing ones are ignored.
func (t *TxPorts) Remove(ifindexes ...int) error {
	for _, i := range ifindexes {
		if err := t.m.Delete(uint32(i)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove ifindex %d from tx_ports: %w", i, err)
		}
	}
	return nil
}

// List returns the ifindexes in the devmap, sorted.
func (t *TxPorts) List() ([]int, error) {
	var out []int
	var k uint32
	var v xfib.FibBpfDevmapVal
	it := t.m.Iterate()
	for it.Next(&k, &v) {
		out = append(out, int(k))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list tx_ports: %w", err)
	}
	slices.Sort(out)
	return out, nil
}
