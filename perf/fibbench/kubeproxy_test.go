package fibbench

import (
	"net/netip"
	"strings"
	"testing"
)

func TestKubeProxyChainNames(t *testing.T) {
	// Names from kube-proxy's own tests (pkg/proxy/iptables).
	s := kpService{Namespace: "ns1", Name: "svc1", PortName: "p80", Proto: "tcp"}
	if got := kpSvcChain(s); got != "KUBE-SVC-XPGD46QRK7WJZT7O" {
		t.Errorf("service chain %s, want KUBE-SVC-XPGD46QRK7WJZT7O", got)
	}
	if got := kpSepChain(s, netip.MustParseAddrPort("10.180.0.1:80")); got != "KUBE-SEP-SXIVWICOYRO3J4NJ" {
		t.Errorf("endpoint chain %s, want KUBE-SEP-SXIVWICOYRO3J4NJ", got)
	}
}

func TestKubeProxyRules(t *testing.T) {
	svc := kpService{
		Namespace: "bench", Name: "svc-1", PortName: "dns", Proto: "udp",
		VIP: netip.MustParseAddr("10.96.0.10"), Port: 53,
		Endpoints: []netip.AddrPort{netip.MustParseAddrPort("10.200.2.11:9"), netip.MustParseAddrPort("10.200.2.12:9")},
	}
	got := kubeProxyRules([]kpService{svc}, netip.MustParsePrefix("10.200.0.0/16"))
	svcChain := kpSvcChain(svc)
	sep1 := kpSepChain(svc, svc.Endpoints[0])
	sep2 := kpSepChain(svc, svc.Endpoints[1])
	for _, want := range []string{
		"*nat\n",
		`-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
		`-A KUBE-SERVICES -m comment --comment "bench/svc-1:dns cluster IP" -m udp -p udp -d 10.96.0.10 --dport 53 -j ` + svcChain,
		`-A ` + svcChain + ` -m comment --comment "bench/svc-1:dns cluster IP" -m udp -p udp -d 10.96.0.10 --dport 53 ! -s 10.200.0.0/16 -j KUBE-MARK-MASQ`,
		`-A ` + svcChain + ` -m comment --comment "bench/svc-1:dns -> 10.200.2.11:9" -m statistic --mode random --probability 0.5000000000 -j ` + sep1,
		`-A ` + svcChain + ` -m comment --comment "bench/svc-1:dns -> 10.200.2.12:9" -j ` + sep2,
		`-A ` + sep1 + ` -m comment --comment bench/svc-1:dns -s 10.200.2.11 -j KUBE-MARK-MASQ`,
		`-A ` + sep2 + ` -m comment --comment bench/svc-1:dns -m udp -p udp -j DNAT --to-destination 10.200.2.12:9`,
		`-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("rules lack %q:\n%s", want, got)
		}
	}
	if strings.Count(got, "COMMIT\n") != 2 {
		t.Errorf("want two tables, each committed:\n%s", got)
	}
	// The nodeports rule stays last in KUBE-SERVICES.
	last := strings.LastIndex(got, "-A KUBE-SERVICES ")
	if !strings.Contains(got[last:], "kubernetes service nodeports") {
		t.Errorf("last KUBE-SERVICES rule is not the nodeports one:\n%s", got[last:])
	}

	// Above 1,000 endpoints, per-endpoint rules lose their comments.
	many := make([]kpService, 501)
	for i := range many {
		many[i] = svc
		many[i].Name = "svc-x" + string(rune('a'+i%26)) + string(rune('a'+i/26))
	}
	big := kubeProxyRules(many, netip.MustParsePrefix("10.200.0.0/16"))
	if strings.Contains(big, " -> 10.200.2.11:9") || !strings.Contains(big, "-m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-") {
		t.Errorf("large cluster mode: endpoint comments kept or statistic rules lost")
	}
}
