package fibbench

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strings"
)

// kpService is one Service port as kube-proxy's iptables mode programs
// it: a ClusterIP, a port, a protocol and the ready endpoints.
type kpService struct {
	Namespace, Name, PortName string
	VIP                       netip.Addr
	Port                      uint16
	Proto                     string // "udp" or "tcp"
	Endpoints                 []netip.AddrPort
}

// portName is kube-proxy's ServicePortName string, "ns/name:port".
func (s kpService) portName() string { return s.Namespace + "/" + s.Name + ":" + s.PortName }

// kpLargeClusterEndpoints is kube-proxy's largeClusterEndpointsThreshold:
// above it, the per-endpoint rules are written without comments.
const kpLargeClusterEndpoints = 1000

// kpHash is kube-proxy's portProtoHash: the first 16 characters of the
// base32 SHA-256 of its argument.
func kpHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(h[:])[:16]
}

// kpSvcChain and kpSepChain name the chains as kube-proxy does
// (servicePortChainName, servicePortEndpointChainName).
func kpSvcChain(s kpService) string { return "KUBE-SVC-" + kpHash(s.portName()+s.Proto) }

func kpSepChain(s kpService, ep netip.AddrPort) string {
	return "KUBE-SEP-" + kpHash(s.portName()+s.Proto+ep.String())
}

// kubeProxyRules returns the iptables-restore input that kube-proxy's
// iptables mode (Kubernetes 1.28 and later) writes for svcs, in that
// order in KUBE-SERVICES (a linear chain: the last service is matched
// last), with clusterCIDR as its --cluster-cidr. The jumps from the
// built-in chains, which kube-proxy inserts with iptables -I before its
// first restore, are in the same input, so it is meant for a netns with
// no rules of its own (iptables-restore without --noflush).
func kubeProxyRules(svcs []kpService, clusterCIDR netip.Prefix) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	nEndpoints := 0
	for _, s := range svcs {
		nEndpoints += len(s.Endpoints)
	}
	large := nEndpoints > kpLargeClusterEndpoints
	comment := func(c string) string {
		if large {
			return ""
		}
		return " -m comment --comment " + kpQuote(c)
	}

	w("*filter")
	for _, c := range []string{"KUBE-NODEPORTS", "KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FIREWALL", "KUBE-FORWARD", "KUBE-PROXY-FIREWALL"} {
		w(":%s - [0:0]", c)
	}
	w(`-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL`)
	w(`-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS`)
	w(`-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES`)
	w(`-A INPUT -j KUBE-FIREWALL`)
	w(`-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL`)
	w(`-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD`)
	w(`-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`)
	w(`-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES`)
	w(`-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL`)
	w(`-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`)
	w(`-A OUTPUT -j KUBE-FIREWALL`)
	w(`-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP`)
	w(`-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP`)
	w(`-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT`)
	w(`-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`)
	w("COMMIT")

	w("*nat")
	for _, c := range []string{"KUBE-NODEPORTS", "KUBE-SERVICES", "KUBE-MARK-MASQ", "KUBE-POSTROUTING"} {
		w(":%s - [0:0]", c)
	}
	for _, s := range svcs {
		w(":%s - [0:0]", kpSvcChain(s))
		for _, ep := range s.Endpoints {
			w(":%s - [0:0]", kpSepChain(s, ep))
		}
	}
	w(`-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`)
	w(`-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`)
	w(`-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING`)
	w(`-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000`)
	w(`-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN`)
	w(`-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000`)
	w(`-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully`)
	for _, s := range svcs {
		svc, pn := kpSvcChain(s), s.portName()
		match := fmt.Sprintf("-m %s -p %s -d %s --dport %d", s.Proto, s.Proto, s.VIP, s.Port)
		w(`-A KUBE-SERVICES -m comment --comment %s %s -j %s`, kpQuote(pn+" cluster IP"), match, svc)
		w(`-A %s -m comment --comment %s %s ! -s %s -j KUBE-MARK-MASQ`, svc, kpQuote(pn+" cluster IP"), match, clusterCIDR)
		for i, ep := range s.Endpoints {
			sep := kpSepChain(s, ep)
			if left := len(s.Endpoints) - i; left > 1 {
				w(`-A %s%s -m statistic --mode random --probability %0.10f -j %s`, svc, comment(pn+" -> "+ep.String()), 1/float64(left), sep)
			} else {
				w(`-A %s%s -j %s`, svc, comment(pn+" -> "+ep.String()), sep)
			}
		}
		for _, ep := range s.Endpoints {
			sep := kpSepChain(s, ep)
			w(`-A %s%s -s %s -j KUBE-MARK-MASQ`, sep, comment(pn), ep.Addr())
			w(`-A %s%s -m %s -p %s -j DNAT --to-destination %s`, sep, comment(pn), s.Proto, s.Proto, ep)
		}
	}
	w(`-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`)
	w("COMMIT")
	return b.String()
}

// kpQuote quotes a comment as kube-proxy does: in double quotes when it
// holds a space.
func kpQuote(s string) string {
	if strings.ContainsAny(s, " \t") {
		return `"` + s + `"`
	}
	return s
}
