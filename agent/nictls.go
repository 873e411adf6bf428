package agent

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	nicprofiles "github.com/fibmesh/fibmesh/nic-profiles"
)

// NICTLSFlag is the fibmesh-agent flag that sets Config.NICKTLSOffload.
const NICTLSFlag = "nic-ktls-offload"

// NICTLSMode says how the agent decides whether its node's NIC offloads
// kTLS record crypto (--nic-ktls-offload). Mainline device offload is
// TLS 1.2 AES-128-GCM only: where both ends' NICs offload, the client's
// tunnel offers that suite alone (proxy.Offload.NICTLS), elsewhere TLS
// 1.3. The agent reports its answer to the controller in its xDS node
// metadata (api/fib/v1 NodeMetadataNICTLS), which marks every route to
// the node in FDS (Route.nic_tls_offload).
//
// The mode changes the suite negotiated, nothing else: where the NIC
// cannot do the crypto (a veth, or any NIC without tlsdev_ops), the
// kernel runs the record crypto of a TLS 1.2 connection in software kTLS
// as it would TLS 1.3's (TlsCurrTxSw, not TlsCurrTxDevice, in
// /proc/net/tls_stat). docs/ktls.md says which path ran.
type NICTLSMode string

// The choices of --nic-ktls-offload. The zero NICTLSMode is NICTLSAuto.
const (
	// NICTLSAuto: the NIC profile of Config.NIC, reconciled with the
	// interface's tls-hw-tx-offload and tls-hw-rx-offload features
	// (nicprofiles.Detect, as `fibctl nic` shows it): offload where it
	// offloads TLS 1.2 AES-128-GCM in either direction.
	NICTLSAuto NICTLSMode = "auto"
	// NICTLSOn forces the capability (testing the suite choice where no
	// NIC offloads: the crypto then runs in software kTLS).
	NICTLSOn NICTLSMode = "on"
	// NICTLSOff never offers the device-offload suite.
	NICTLSOff NICTLSMode = "off"
)

var nicTLSModes = []NICTLSMode{NICTLSAuto, NICTLSOn, NICTLSOff}

// ParseNICTLSMode parses a --nic-ktls-offload value; the error names the
// flag and the choices.
func ParseNICTLSMode(s string) (NICTLSMode, error) {
	m := NICTLSMode(s)
	if !slices.Contains(nicTLSModes, m) {
		return "", fmt.Errorf("--%s=%q: want auto (from the NIC profile), on (force: the suite changes, the crypto stays in software where the NIC cannot do it) or off", NICTLSFlag, s)
	}
	return m, nil
}

// String returns the mode's flag value.
func (m *NICTLSMode) String() string {
	if m == nil {
		return ""
	}
	return string(*m)
}

// Set parses a flag value (flag.Value).
func (m *NICTLSMode) Set(s string) error {
	v, err := ParseNICTLSMode(s)
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// NICTLSDecision is the agent's answer, taken once at start-up, to
// whether its node's NIC offloads kTLS record crypto.
type NICTLSDecision struct {
	// Offload: the NIC offloads (or the flag forces it).
	Offload bool
	// Mode is the flag's value.
	Mode NICTLSMode
	// Reason says where the answer came from: "forced by
	// --nic-ktls-offload=on", or the profile, the measured features and
	// what was missing.
	Reason string
}

// DecideNICTLS answers for mode and the node's NIC; detect is
// nicprofiles.Detect (a parameter for tests). Only auto calls it.
func DecideNICTLS(mode NICTLSMode, nic string, detect func(string) (*nicprofiles.Detection, error)) NICTLSDecision {
	switch mode {
	case NICTLSOn:
		return NICTLSDecision{Offload: true, Mode: mode, Reason: fmt.Sprintf("forced by --%s=on", NICTLSFlag)}
	case NICTLSOff:
		return NICTLSDecision{Mode: mode, Reason: fmt.Sprintf("turned off by --%s=off", NICTLSFlag)}
	}
	d := NICTLSDecision{Mode: NICTLSAuto}
	det, err := detect(nic)
	if err != nil {
		d.Reason = fmt.Sprintf("NIC %s not detected (%v): no offload", nic, err)
		return d
	}
	c := det.Capabilities
	suite := slices.Contains(c.TLSVersions, nicprofiles.TLS12) && slices.Contains(c.Ciphers, nicprofiles.CipherAES128GCM)
	d.Offload = (c.KTLSTX || c.KTLSRX) && suite
	name := "?"
	if det.Profile != nil {
		name = det.Profile.Name
	}
	switch {
	case d.Offload:
		d.Reason = fmt.Sprintf("NIC %s (profile %s) offloads kTLS TLS 1.2 AES-128-GCM (tx=%v rx=%v)", nic, name, c.KTLSTX, c.KTLSRX)
	case c.KTLSTX || c.KTLSRX:
		d.Reason = fmt.Sprintf("NIC %s (profile %s) offloads kTLS but not TLS 1.2 AES-128-GCM (versions %v, ciphers %v)", nic, name, c.TLSVersions, c.Ciphers)
	default:
		d.Reason = fmt.Sprintf("NIC %s (profile %s) does not offload kTLS", nic, name)
	}
	d.Reason += "; " + det.Reason
	return d
}

// nicTLS answers the proxy's NIC kTLS questions (proxy.Offload.NICTLS,
// LocalNICTLS) from the start-up decision and the flow tables: a peer
// pod's node offloads where the route to it carries nic_tls_offload.
type nicTLS struct {
	node string
	dec  NICTLSDecision
	// gen and tables read the flow tables in force (the xDS client's
	// Generation and Resources of FDS); gen moves whenever they change.
	gen    func() uint64
	tables func() map[string]proto.Message

	mu  sync.Mutex // serialises rebuilding ix
	cur atomic.Pointer[nicIndexAt]
}

// nicIndexAt is an index and the generation of the tables it was built
// from.
type nicIndexAt struct {
	gen uint64
	ix  *nicIndex
}

// newNICTLS decides for the agent's Config, logs the decision once, and
// reads the flow tables from the agent's xDS client once there is one.
func (a *Agent) newNICTLS() *nicTLS {
	dec := DecideNICTLS(a.cfg.NICKTLSOffload, a.cfg.NIC, nicprofiles.Detect)
	if dec.Mode == "" {
		dec.Mode = NICTLSAuto
	}
	a.log.Info("NIC kTLS offload", "offload", dec.Offload, "mode", string(dec.Mode), "reason", dec.Reason,
		"suite", map[bool]string{true: "TLS 1.2 AES-128-GCM with peers whose NIC offloads too, TLS 1.3 elsewhere", false: "TLS 1.3"}[dec.Offload])
	return &nicTLS{node: a.cfg.Node, dec: dec,
		gen: func() uint64 {
			if a.xds == nil {
				return 0
			}
			return a.xds.Generation(xdsapi.FlowTableType)
		},
		tables: func() map[string]proto.Message {
			if a.xds == nil {
				return nil
			}
			return a.xds.Resources(xdsapi.FlowTableType)
		},
	}
}

// metadata is the xDS node metadata that reports the decision.
func (n *nicTLS) metadata() *structpb.Struct { return fibv1.NICTLSMetadata(n.dec.Offload) }

// local is proxy.Offload.LocalNICTLS.
func (n *nicTLS) local() bool { return n.dec.Offload }

// peer is proxy.Offload.NICTLS: this node's NIC offloads and so does the
// NIC of the node of the pod at addr, as the flow tables say. A pod on
// this node is false: its tunnel never crosses the NIC.
func (n *nicTLS) peer(addr netip.Addr) bool {
	if !n.dec.Offload {
		return false
	}
	return n.index().offloads(addr)
}

// index returns the index of the flow tables in force, rebuilt when
// their generation moved.
func (n *nicTLS) index() *nicIndex {
	g := n.gen()
	if c := n.cur.Load(); c != nil && c.gen == g {
		return c.ix
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if c := n.cur.Load(); c != nil && c.gen == g {
		return c.ix
	}
	tables := map[string]*fibv1.FlowTable{}
	for name, m := range n.tables() {
		if t, ok := m.(*fibv1.FlowTable); ok {
			tables[name] = t
		}
	}
	ix := buildNICIndex(n.node, tables)
	n.cur.Store(&nicIndexAt{gen: g, ix: ix})
	return ix
}

// nicIndex is, for every route of the flow tables, whether its node's
// NIC offloads kTLS.
type nicIndex struct {
	prefixes map[netip.Prefix]bool
	bits     []int // the prefix lengths present, longest first
}

// buildNICIndex indexes the routes of node's flow tables (every mesh
// table or shard, and the node's own). A route to node itself, and a
// local pod's address, count as no offload; where two routes of one
// prefix disagree, no offload.
func buildNICIndex(node string, tables map[string]*fibv1.FlowTable) *nicIndex {
	ix := &nicIndex{prefixes: map[netip.Prefix]bool{}}
	set := func(p netip.Prefix, off bool) {
		if prev, ok := ix.prefixes[p]; ok {
			off = off && prev
		} else if !slices.Contains(ix.bits, p.Bits()) {
			ix.bits = append(ix.bits, p.Bits())
		}
		ix.prefixes[p] = off
	}
	for _, t := range tables {
		for _, r := range t.GetRoutes() {
			p, err := netip.ParsePrefix(r.GetPrefix())
			if err != nil {
				continue // the reconciler refuses such a table
			}
			set(p.Masked(), r.GetNicTlsOffload() && r.GetNode() != node)
		}
	}
	if own, ok := tables[node]; ok {
		for _, lp := range own.GetLocalPods() {
			if a, err := netip.ParseAddr(lp.GetIp()); err == nil {
				set(netip.PrefixFrom(a, a.BitLen()), false)
			}
		}
	}
	slices.SortFunc(ix.bits, func(a, b int) int { return b - a })
	return ix
}

// offloads returns the mark of the longest prefix holding addr, false
// where none does.
func (ix *nicIndex) offloads(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, b := range ix.bits {
		if b > addr.BitLen() {
			continue
		}
		p, err := addr.Prefix(b)
		if err != nil {
			continue
		}
		if off, ok := ix.prefixes[p]; ok {
			return off
		}
	}
	return false
}
