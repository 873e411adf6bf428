package fib

import (
	"errors"
	"fmt"
	"math/bits"
	"net/netip"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	xfib "github.com/fibmesh/fibmesh/xdp/fib"
)

// MaxServiceTable bounds a service's table (its Maglev size): the largest
// table fastpath/maglev builds (4096 backends x 100, rounded up to a
// prime) with room to spare.
const MaxServiceTable = 1 << 20

// ServiceKey names a service port: a VIP, a port and a protocol.
type ServiceKey struct {
	VIP   netip.Addr
	Port  uint16
	Proto Proto
}

func (k ServiceKey) String() string {
	return fmt.Sprintf("%s %s", k.Proto, netip.AddrPortFrom(k.VIP, k.Port))
}

// Backend is a service endpoint.
type Backend struct {
	Addr netip.Addr
	Port uint16
}

// AddrPort returns the backend as an address and port.
func (b Backend) AddrPort() netip.AddrPort { return netip.AddrPortFrom(b.Addr, b.Port) }

func (b Backend) String() string { return b.AddrPort().String() }

// ServiceEntry is a service port and its lookup table, as the map holds
// it.
type ServiceEntry struct {
	Key ServiceKey
	// Table is the Maglev lookup table: Table[FlowHash(k) % len(Table)]
	// serves the flow k. Empty: the service has no ready backend.
	Table []Backend
}

// Services is the FIB's service map: per service port, its lookup table.
// It is a map of maps (BPF_MAP_TYPE_HASH_OF_MAPS): each table is an array
// map of its own, built whole before it replaces the old one, so the data
// path sees one table or the other, never a mix.
type Services struct {
	m *ebpf.Map
}

func serviceKey(k ServiceKey) (xfib.FibSvcKey, error) {
	a, err := addrToBE(k.VIP)
	if err != nil {
		return xfib.FibSvcKey{}, fmt.Errorf("service %s: VIP: %w", k, err)
	}
	if k.Proto != ProtoTCP && k.Proto != ProtoUDP {
		return xfib.FibSvcKey{}, fmt.Errorf("service %s: protocol must be tcp or udp", k)
	}
	if k.Port == 0 {
		return xfib.FibSvcKey{}, fmt.Errorf("service %s: port must be 1-65535", k)
	}
	return xfib.FibSvcKey{Vip: a, Port: portToBE(k.Port), Proto: uint8(k.Proto)}, nil
}

func serviceKeyFromMap(k xfib.FibSvcKey) ServiceKey {
	return ServiceKey{VIP: beToAddr(k.Vip), Port: beToPort(k.Port), Proto: Proto(k.Proto)}
}

// tableSpec is the inner map of a table of n backends: slot 0 is the
// header (struct svc_backend with addr = n), slots 1..n the backends.
// BPF_F_INNER_MAP must match the program's inner map template.
func tableSpec(n int) *ebpf.MapSpec {
	return &ebpf.MapSpec{
		Name:       "maglev",
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: uint32(n + 1),
		Flags:      unix.BPF_F_INNER_MAP,
	}
}

// svcSlot mirrors struct svc_backend (xdp/headers/structs.h): address and
// port in network order. Slot 0 of a table holds its size in Addr.
type svcSlot struct {
	Addr uint32
	Port uint16
	Pad  uint16
}

// Put installs or replaces the table of k. table[i] serves the flows whose
// FlowHash modulo len(table) is i; fastpath/maglev builds it. An empty
// table says the service has no ready backend: the data path answers its
// new flows with ICMP port unreachable (UDP) or a RST (TCP).
//
// Flows that already have entries keep their backend: Put moves no flow
// by itself: to move the flows of a backend that is gone, delete their
// entries (FlowEntry.ServiceFlow reads them).
func (s *Services) Put(k ServiceKey, table []Backend) error {
	key, err := serviceKey(k)
	if err != nil {
		return err
	}
	if len(table) > MaxServiceTable {
		return fmt.Errorf("service %s: table of %d slots, more than %d", k, len(table), MaxServiceTable)
	}
	idx := make([]uint32, len(table)+1)
	slots := make([]svcSlot, len(table)+1)
	slots[0] = svcSlot{Addr: uint32(len(table))}
	for i, b := range table {
		a, err := addrToBE(b.Addr)
		if err != nil {
			return fmt.Errorf("service %s: table[%d]: %w", k, i, err)
		}
		if a == 0 || b.Port == 0 {
			return fmt.Errorf("service %s: table[%d] %s: want a backend address and port 1-65535", k, i, b)
		}
		idx[i+1], slots[i+1] = uint32(i+1), svcSlot{Addr: a, Port: portToBE(b.Port)}
	}
	inner, err := ebpf.NewMap(tableSpec(len(table)))
	if err != nil {
		return fmt.Errorf("service %s: create its table of %d slots: %w", k, len(table), err)
	}
	defer inner.Close()
	if err := putBatch(inner, idx, slots); err != nil {
		return fmt.Errorf("service %s: fill its table: %w", k, err)
	}
	if err := s.m.Put(&key, inner); err != nil {
		return fmt.Errorf("service %s: install its table: %w", k, err)
	}
	return nil
}

// Delete removes service ports; missing ones are ignored. Packets to a
// deleted VIP port are no longer translated (they are routed as they
// are); flows that have entries keep them until they are deleted.
func (s *Services) Delete(keys ...ServiceKey) error {
	for _, k := range keys {
		key, err := serviceKey(k)
		if err != nil {
			return err
		}
		if err := s.m.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete service %s: %w", k, err)
		}
	}
	return nil
}

// Get returns the table of one service port; ok is false when the map
// does not hold it.
func (s *Services) Get(k ServiceKey) (table []Backend, ok bool, err error) {
	key, err := serviceKey(k)
	if err != nil {
		return nil, false, err
	}
	var inner *ebpf.Map
	if err := s.m.Lookup(&key, &inner); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("service %s: %w", k, err)
	}
	defer inner.Close()
	table, err = readTable(inner)
	if err != nil {
		return nil, false, fmt.Errorf("service %s: %w", k, err)
	}
	return table, true, nil
}

// List returns every service port and its table, in no particular order.
func (s *Services) List() ([]ServiceEntry, error) {
	var (
		key   xfib.FibSvcKey
		inner *ebpf.Map
		out   []ServiceEntry
	)
	it := s.m.Iterate()
	for it.Next(&key, &inner) {
		k := serviceKeyFromMap(key)
		table, err := readTable(inner)
		if err != nil {
			inner.Close()
			return nil, fmt.Errorf("service %s: %w", k, err)
		}
		out = append(out, ServiceEntry{Key: k, Table: table})
	}
	if inner != nil {
		inner.Close()
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	return out, nil
}

func readTable(m *ebpf.Map) ([]Backend, error) {
	idx, slots, err := listBatch[uint32, svcSlot](m)
	if err != nil {
		return nil, fmt.Errorf("read its table: %w", err)
	}
	if len(slots) == 0 || len(slots) != int(m.MaxEntries()) {
		return nil, fmt.Errorf("read its table: %d of %d slots", len(slots), m.MaxEntries())
	}
	byIdx := make([]svcSlot, len(slots))
	for i, j := range idx {
		if int(j) >= len(byIdx) {
			return nil, fmt.Errorf("read its table: slot %d of %d", j, len(byIdx))
		}
		byIdx[j] = slots[i]
	}
	n := byIdx[0].Addr
	if n+1 != m.MaxEntries() {
		return nil, fmt.Errorf("its table's header says %d slots, the map has %d", n, m.MaxEntries()-1)
	}
	table := make([]Backend, n)
	for i := range table {
		sl := byIdx[i+1]
		table[i] = Backend{Addr: beToAddr(sl.Addr), Port: beToPort(sl.Port)}
	}
	return table, nil
}

// FlowHash is the data path's hash of a flow (flow_hash in
// xdp/headers/service.h: MurmurHash3 x86_32 over the 16 bytes of struct
// flow_key as they lie in memory). A new flow to a service port goes to
// Table[FlowHash(k) % len(Table)], k being the 5-tuple as the client
// sent it (destination: the VIP), unless that is the client itself
// (Pick).
func FlowHash(k FlowKey) uint32 {
	key, err := flowKey(k)
	if err != nil {
		return 0
	}
	h := uint32(0x6d61676c)
	for _, w := range [4]uint32{key.Saddr, key.Daddr, uint32(key.Sport) | uint32(key.Dport)<<16, uint32(key.Proto)} {
		w *= 0xcc9e2d51
		w = bits.RotateLeft32(w, 15)
		w *= 0x1b873593
		h ^= w
		h = bits.RotateLeft32(h, 13)
		h = h*5 + 0xe6546b64
	}
	h ^= 16
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// svcSelfProbes must match SVC_SELF_PROBES in xdp/headers/service.h.
const svcSelfProbes = 8

// Pick returns the backend the data path gives a new flow k (the key as
// the client sent it) from table: slot FlowHash(k) mod len(table), or,
// when that backend is the client itself (its packets would come back
// from its own address, a martian its kernel drops), the first of the
// next svcSelfProbes slots holding another backend. ok is false for an
// empty table.
func Pick(table []Backend, k FlowKey) (b Backend, ok bool) {
	if len(table) == 0 {
		return Backend{}, false
	}
	m := uint32(len(table))
	idx := FlowHash(k) % m
	b = table[idx]
	if b.Addr != k.Src {
		return b, true
	}
	for i := uint32(1); i <= svcSelfProbes; i++ {
		if alt := table[(idx+i)%m]; alt.Addr != k.Src {
			return alt, true
		}
	}
	return b, true
}

// ServiceFlow reads a service flow's way-out entry (NATDst, keyed as the
// client sent it): the service port it translates, its backend, the flow
// as the backend receives it (destination: the backend) and the key of
// its way-back entry. ok is false for any other entry.
func (e FlowEntry) ServiceFlow() (svc ServiceKey, b Backend, translated, back FlowKey, ok bool) {
	if e.Flow.NATKind != NATDst {
		return svc, b, translated, back, false
	}
	svc = ServiceKey{VIP: e.Key.Dst, Port: e.Key.DstPort, Proto: e.Key.Proto}
	b = Backend{Addr: e.Flow.NAT.Addr(), Port: e.Flow.NAT.Port()}
	translated = e.Key
	translated.Dst, translated.DstPort = b.Addr, b.Port
	return svc, b, translated, translated.Reverse(), true
}
