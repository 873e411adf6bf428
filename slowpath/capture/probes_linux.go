package capture

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/slowpath"
)

// ProbeTable is the inet table SetProbePods writes in the node's network
// namespace.
const ProbeTable = "fibmesh-probes"

// ProbeChain is ProbeTable's one chain.
const ProbeChain = "postrouting"

// Probe sources, parsed (slowpath.ProbeSourceV4, slowpath.ProbeSourceV6).
var (
	probeV4 = netip.MustParseAddr(slowpath.ProbeSourceV4)
	probeV6 = netip.MustParseAddr(slowpath.ProbeSourceV6)
)

// SetProbePods writes ProbeTable in the node's network namespace
// (netnsFD), replacing it in one transaction: TCP that a process of that
// namespace opens to one of pods (the node's captured pods) leaves with
// the probe source address, so that the pod's capture lets it reach the
// app (the kubelet's probes; see slowpath.ProbeSourceV4). Only packets of
// a local socket match (the kubelet's, say): forwarded and routed traffic
// has none. With no pods the table is removed. As nft(8) lists it:
//
//	table inet fibmesh-probes {
//	  chain postrouting {
//	    type nat hook postrouting priority srcnat - 10; policy accept;
//	    ip daddr 10.200.1.11 meta l4proto tcp meta skuid >= 0 counter snat ip to 169.254.7.127
//	    ...
//	  }
//	}
//
// The chain runs before other source NAT (kube-proxy's masquerade), and
// only for a connection's first packet.
func SetProbePods(netnsFD int, pods []netip.Addr) error {
	c, err := nftables.New(nftables.WithNetNSFd(netnsFD))
	if err != nil {
		return fmt.Errorf("capture: nftables in namespace fd %d: %w", netnsFD, err)
	}
	t := &nftables.Table{Name: ProbeTable, Family: nftables.TableFamilyINet}
	c.AddTable(t)
	c.DelTable(t)
	if len(pods) > 0 {
		c.AddTable(t)
		accept := nftables.ChainPolicyAccept
		prio := nftables.ChainPriorityRef(*nftables.ChainPriorityNATSource - 10)
		ch := c.AddChain(&nftables.Chain{
			Name: ProbeChain, Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: prio, Policy: &accept,
		})
		pods = slices.Clone(pods)
		slices.SortFunc(pods, func(a, b netip.Addr) int { return a.Compare(b) })
		for _, ip := range slices.Compact(pods) {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: probeSNATRule(ip.Unmap())})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("capture: write table inet %s in namespace fd %d: %w", ProbeTable, netnsFD, err)
	}
	return nil
}

// probeSNATRule: TCP from a local socket to pod leaves from the probe
// source of pod's family.
func probeSNATRule(pod netip.Addr) []expr.Any {
	bits := 32
	src, fam := probeV4, byte(unix.NFPROTO_IPV4)
	if pod.Is6() {
		bits, src, fam = 128, probeV6, unix.NFPROTO_IPV6
	}
	r := daddr(netip.PrefixFrom(pod, bits))
	r = append(r, l4proto(unix.IPPROTO_TCP)...)
	// Loading the socket's uid fails, and ends the rule, for a packet
	// without a full local socket: only locally opened connections match.
	r = append(r, metaLoad(expr.MetaKeySKUID),
		&expr.Cmp{Op: expr.CmpOpGte, Register: reg, Data: binaryutil.NativeEndian.PutUint32(0)},
		counter(),
		&expr.Immediate{Register: reg, Data: src.AsSlice()},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(fam), RegAddrMin: reg})
	return r
}

// probeExemption is the prerouting rule that lets TCP from the probe
// sources reach the pod's app unredirected.
func probeExemption(src netip.Addr) []expr.Any {
	fam, off, n := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if src.Is6() {
		fam, off, n = unix.NFPROTO_IPV6, 8, 16
	}
	r := []expr.Any{
		metaLoad(expr.MetaKeyNFPROTO), cmpEq([]byte{fam}),
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		cmpEq(src.AsSlice()),
	}
	r = append(r, l4proto(unix.IPPROTO_TCP)...)
	return acceptRule(r...)
}
