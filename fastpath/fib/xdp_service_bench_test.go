package fib

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// BenchmarkXDPServiceNewFlow runs new UDP flows to a VIP through the
// program, with the flow table empty and full (its LRU evicting on every
// insert), and reports the program's own run time per packet from the
// kernel's BPF run-time stats (the syscall of each test run excluded).
func BenchmarkXDPServiceNewFlow(b *testing.B) {
	for _, tc := range []struct {
		name      string
		size, put int
	}{{"empty-4096", 4096, 0}, {"full-4096", 4096, 4096}, {"full-262144", 262144, 262144}} {
		b.Run(tc.name, func(b *testing.B) {
			f, err := Open(Options{MaxFlows: uint32(tc.size)})
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			svc := ServiceKey{netip.MustParseAddr("10.96.0.40"), 9000, ProtoUDP}
			if err := f.Services.Put(svc, []Backend{be("10.1.0.41:9000"), be("10.1.0.42:9000"), be("10.1.0.43:9000")}); err != nil {
				b.Fatal(err)
			}
			var es []FlowEntry
			for i := range tc.put {
				es = append(es, FlowEntry{Key: FlowKey{Src: netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), Dst: svc.VIP, SrcPort: uint16(i >> 16), DstPort: 2, Proto: ProtoUDP}, Flow: Flow{Action: ActionForward}})
			}
			if err := f.Flows.Put(es...); err != nil {
				b.Fatal(err)
			}
			stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
			if err != nil {
				b.Skipf("BPF run-time stats: %v", err)
			}
			defer stats.Close()
			prog := f.Program()
			frames := make([][]byte, 1024)
			for i := range frames {
				frames[i] = svcUDP("10.2.9.9", uint16(1024+i), svc.VIP.String(), svc.Port)
			}
			before, err := prog.Stats()
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := range b.N {
				fr := frames[i%len(frames)]
				fr[14+20] = byte(i >> 16) // a new source port each run
				fr[14+20+1] = byte(i >> 8)
				fr[14+20+6], fr[14+20+7] = 0, 0
				if _, _, err := runXDP(prog, fr, loIfindex, 0); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			after, err := prog.Stats()
			if err != nil {
				b.Fatal(err)
			}
			if n := after.RunCount - before.RunCount; n > 0 {
				b.ReportMetric(float64(after.Runtime-before.Runtime)/float64(n), "prog-ns/pkt")
			}
		})
	}
}
