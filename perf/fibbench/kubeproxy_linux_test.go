package fibbench

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/lab"
)

// TestKubeProxyRulesRestore loads the rules of three services into a
// namespace of its own with Debian's iptables-restore and reads them
// back: the KUBE-SERVICES rule of the last service, its statistic split
// and its DNAT are there as iptables-save prints them.
func TestKubeProxyRulesRestore(t *testing.T) {
	testenv.NeedRoot(t)
	if _, err := exec.LookPath("iptables-restore"); err != nil {
		t.Skip("needs iptables-restore (apt-get install iptables)")
	}
	ns := fmt.Sprintf("fm-fibt-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })

	svcs := benchServices(3, nil)
	for i := range svcs {
		svcs[i].Endpoints = []netip.AddrPort{netip.MustParseAddrPort("10.200.2.11:9"), netip.MustParseAddrPort("10.200.2.12:9")}
	}
	if err := iptablesRestore(ns, kubeProxyRules(svcs, clusterCIDR)); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nsenter", "--net="+lab.NetnsPath(ns), "iptables-save", "-t", "nat").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save: %v: %s", err, out)
	}
	last := svcs[2]
	svc, sep := kpSvcChain(last), kpSepChain(last, last.Endpoints[1])
	for _, want := range []string{
		`-A KUBE-SERVICES -d 10.96.0.12/32 -p udp -m comment --comment "bench/svc-00003:dns cluster IP" -m udp --dport 53 -j ` + svc,
		`-A ` + svc + ` -m comment --comment "bench/svc-00003:dns -> 10.200.2.11:9" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-`,
		`-A ` + sep + ` -p udp -m comment --comment "bench/svc-00003:dns" -m udp -j DNAT --to-destination 10.200.2.12:9`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("iptables-save lacks\n  %s\nin\n%s", want, out)
		}
	}
	// The last service's rule is the last but one of KUBE-SERVICES.
	var rules []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "-A KUBE-SERVICES ") {
			rules = append(rules, l)
		}
	}
	if len(rules) != 4 || !strings.Contains(rules[2], svc) || !strings.Contains(rules[3], "KUBE-NODEPORTS") {
		t.Errorf("KUBE-SERVICES: %q", rules)
	}
	if err := iptablesRestore(ns, emptyTables); err != nil {
		t.Fatal(err)
	}
}
