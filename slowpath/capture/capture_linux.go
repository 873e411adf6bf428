package capture

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// loIndex is lo's interface index, 1 in every network namespace (the
// kernel registers it first, with the namespace).
const loIndex = 1

// Install writes the capture table in the network namespace netnsFD
// refers to (an open /proc/PID/ns/net, /run/netns/NAME or namespace
// handle; the caller keeps it open until Install returns). An existing
// table of that name is replaced in the same nftables transaction, so the
// namespace never has no rules, or half of them, in between: installing
// again after an agent restart does not open a window. cfg is validated
// first; a bad field is an error naming it.
func Install(netnsFD int, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	c, err := nftables.New(nftables.WithNetNSFd(netnsFD))
	if err != nil {
		return fmt.Errorf("capture: nftables in namespace fd %d: %w", netnsFD, err)
	}
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	// Add (a no-op when it exists), delete, add again: the delete never
	// fails for a missing table, and the whole batch is one transaction.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	accept := nftables.ChainPolicyAccept
	out := c.AddChain(&nftables.Chain{
		Name: OutputChain, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest, Policy: &accept,
	})
	pre := c.AddChain(&nftables.Chain{
		Name: PreroutingChain, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &accept,
	})
	for _, r := range outputRules(cfg) {
		c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: r})
	}
	for _, r := range preroutingRules(cfg) {
		c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: r})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("capture: install table inet %s in namespace fd %d: %w", TableName, netnsFD, err)
	}
	return nil
}

// Remove deletes the capture table from the network namespace netnsFD
// refers to, restoring plain connectivity. A namespace without the table
// is not an error. Call it only when the pod is removed: without the
// table, the pod's traffic bypasses the mesh.
func Remove(netnsFD int) error {
	c, err := nftables.New(nftables.WithNetNSFd(netnsFD))
	if err != nil {
		return fmt.Errorf("capture: nftables in namespace fd %d: %w", netnsFD, err)
	}
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	c.AddTable(t) // so that the delete cannot fail for a missing table
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("capture: remove table inet %s in namespace fd %d: %w", TableName, netnsFD, err)
	}
	return nil
}

// Installed reports whether the network namespace netnsFD refers to has
// the capture table with both of its chains. A table missing a chain
// (changed by hand) reports false: install again.
func Installed(netnsFD int) (bool, error) {
	c, err := nftables.New(nftables.WithNetNSFd(netnsFD))
	if err != nil {
		return false, fmt.Errorf("capture: nftables in namespace fd %d: %w", netnsFD, err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("capture: list chains in namespace fd %d: %w", netnsFD, err)
	}
	found := map[string]bool{}
	for _, ch := range chains {
		if ch.Table != nil && ch.Table.Name == TableName {
			found[ch.Name] = true
		}
	}
	return found[OutputChain] && found[PreroutingChain], nil
}

// Expression building blocks. Registers: 0 is the verdict, 1 the data.
const reg = 1

func counter() expr.Any { return &expr.Counter{} }
func acceptV() expr.Any { return &expr.Verdict{Kind: expr.VerdictAccept} }
func metaLoad(k expr.MetaKey) expr.Any {
	return &expr.Meta{Key: k, Register: reg}
}
func cmpEq(data []byte) expr.Any { return &expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: data} }

// l4proto matches the transport protocol (any IP version).
func l4proto(p byte) []expr.Any {
	return []expr.Any{metaLoad(expr.MetaKeyL4PROTO), cmpEq([]byte{p})}
}

// dport matches the transport protocol and its destination port.
func dport(p byte, port uint16) []expr.Any {
	return append(l4proto(p),
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		cmpEq(binaryutil.BigEndian.PutUint16(port)))
}

// redirect ends a rule by redirecting to port on the local host (127.0.0.1
// or ::1 for locally generated packets, the receiving interface's primary
// address for incoming ones).
func redirect(port uint16) []expr.Any {
	return []expr.Any{
		counter(),
		&expr.Immediate{Register: reg, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Redir{RegisterProtoMin: reg, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
	}
}

func acceptRule(match ...expr.Any) []expr.Any {
	return append(match, counter(), acceptV())
}

// daddr matches an IPv4 destination prefix or an IPv6 destination
// address (a /128).
func daddr(p netip.Prefix) []expr.Any {
	if p.Addr().Is4() {
		m := ^uint32(0) << (32 - p.Bits())
		a := p.Masked().Addr().As4()
		return []expr.Any{
			metaLoad(expr.MetaKeyNFPROTO), cmpEq([]byte{unix.NFPROTO_IPV4}),
			&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: 4,
				Mask: binaryutil.BigEndian.PutUint32(m), Xor: []byte{0, 0, 0, 0}},
			cmpEq(a[:]),
		}
	}
	a := p.Addr().As16()
	return []expr.Any{
		metaLoad(expr.MetaKeyNFPROTO), cmpEq([]byte{unix.NFPROTO_IPV6}),
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16},
		cmpEq(a[:]),
	}
}

// outputRules are the output chain's rules, in order (see the package
// comment).
func outputRules(cfg Config) [][]expr.Any {
	var rs [][]expr.Any
	rs = append(rs, acceptRule(metaLoad(expr.MetaKeyMARK), cmpEq(binaryutil.NativeEndian.PutUint32(cfg.Mark))))
	if cfg.DNS {
		// Before the loopback rules: DNS to a loopback resolver is
		// captured too.
		rs = append(rs, append(dport(unix.IPPROTO_UDP, 53), redirect(cfg.DNSPort)...))
		rs = append(rs, append(dport(unix.IPPROTO_TCP, 53), redirect(cfg.DNSPort)...))
	}
	rs = append(rs,
		acceptRule(metaLoad(expr.MetaKeyOIF), cmpEq(binaryutil.NativeEndian.PutUint32(loIndex))),
		acceptRule(daddr(netip.MustParsePrefix("127.0.0.0/8"))...),
		acceptRule(daddr(netip.PrefixFrom(netip.IPv6Loopback(), 128))...))
	for _, p := range cfg.ExcludeOutboundPorts {
		rs = append(rs, acceptRule(dport(unix.IPPROTO_TCP, p)...))
	}
	rs = append(rs, append(l4proto(unix.IPPROTO_TCP), redirect(cfg.OutboundPort)...))
	return rs
}

// preroutingRules are the prerouting chain's rules, in order.
func preroutingRules(cfg Config) [][]expr.Any {
	var rs [][]expr.Any
	rs = append(rs,
		acceptRule(metaLoad(expr.MetaKeyIIF), cmpEq(binaryutil.NativeEndian.PutUint32(loIndex))),
		acceptRule(dport(unix.IPPROTO_TCP, cfg.TunnelPort)...))
	if cfg.DNS {
		// The DNS server answers the pod only (its queries come through
		// lo, accepted above), not the world: it would forward for anyone.
		rs = append(rs, append(dport(unix.IPPROTO_UDP, cfg.DNSPort), counter(), &expr.Verdict{Kind: expr.VerdictDrop}))
	}
	for _, p := range cfg.ExcludeInboundPorts {
		rs = append(rs, acceptRule(dport(unix.IPPROTO_TCP, p)...))
	}
	// The node's own connections (the kubelet's probes), source-NATed
	// by SetProbePods.
	rs = append(rs, probeExemption(probeV4), probeExemption(probeV6))
	rs = append(rs, append(l4proto(unix.IPPROTO_TCP), redirect(cfg.InboundPlaintextPort)...))
	return rs
}
