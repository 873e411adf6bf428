package fibbench

import "testing"

// The summary lines are a contract with perf/report and the issue: exact
// keys, in order.
func TestLines(t *testing.T) {
	r := Report{Hop: HopCrossNode, XDPPPS: 437416.4, KernelPPS: 336751, Ratio: 1.2989, Rate: 100000, XDPNs: 1970.2, KernelNs: 2630, CostRatio: 1.3349}
	if got, want := r.Line(), "fib-forwarding: xdp_pps=437416 kernel_pps=336751 ratio=1.30 xdp_ns_per_pkt=1970 kernel_ns_per_pkt=2630 cost_ratio=1.33"; got != want {
		t.Errorf("cross-node line\n got %s\nwant %s", got, want)
	}
	r.Hop, r.Rate = HopNode, 0 // no cost measured: the saturation keys only
	if got, want := r.Line(), "fib-node-forwarding: xdp_pps=437416 kernel_pps=336751 ratio=1.30"; got != want {
		t.Errorf("node line without cost\n got %s\nwant %s", got, want)
	}
	s := ServiceReport{Services: 10000, XDPNs: 4486, IPTablesNs: 93820.4, CostRatio: 20.914}
	if got, want := s.Line("fib-services"), "fib-services: services=10000 xdp_ns_per_pkt=4486 iptables_ns_per_pkt=93820 cost_ratio=20.91"; got != want {
		t.Errorf("services line\n got %s\nwant %s", got, want)
	}
}

func TestRatioAndRotate(t *testing.T) {
	for _, tc := range []struct{ a, b, want float64 }{{2, 1, 2}, {1, 0, 0}, {-1, 2, 0}, {2, -1, 0}} {
		if got := ratio(tc.a, tc.b); got != tc.want {
			t.Errorf("ratio(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
	modes := []string{"baseline", "xdp", "kernel"}
	seen := map[string]map[int]bool{}
	for r := 0; r < 3; r++ {
		for pos, m := range rotate(modes, r) {
			if seen[m] == nil {
				seen[m] = map[int]bool{}
			}
			seen[m][pos] = true
		}
	}
	for _, m := range modes {
		if len(seen[m]) != 3 {
			t.Errorf("over 3 rounds %s took positions %v, want all three", m, seen[m])
		}
	}
}
