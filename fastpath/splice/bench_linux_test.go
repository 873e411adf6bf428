package splice

import (
	"testing"

	"github.com/fibmesh/fibmesh/internal/testenv"
)

// BenchmarkEngines moves b.N MiB each way between endpoints in a child
// process through each engine, over plain TCP and over kTLS (where the
// kernel has it), and reports the throughput both ways together and the CPU
// per GiB moved: the joining process's own (getrusage) and the whole
// machine's (/proc/stat, which includes the kernel work queues that send a
// sockmap's redirected bytes, and the endpoints). The copy engine, read and
// write through userspace, is the baseline. Ratios are what to compare; run
// the engines side by side in one invocation:
//
//	go test -run '^$' -bench Engines -benchtime 256x ./fastpath/splice/
func BenchmarkEngines(b *testing.B) {
	for _, withKTLS := range []bool{false, true} {
		wire := "plain"
		if withKTLS {
			wire = "ktls"
		}
		for _, eng := range []engine{{name: "splice", mode: ModeSplice}, {name: "sockmap", mode: ModeSockmap}, copyEngine} {
			b.Run(wire+"/"+eng.name, func(b *testing.B) {
				testenv.NeedRoot(b)
				if withKTLS {
					needKTLS(b)
					if eng.mode == ModeSockmap {
						needSockmapKTLS(b, false)
					}
				}
				n := int64(b.N) << 20
				m := transfer(b, eng, n, withKTLS)
				gib := float64(2*n) / (1 << 30)
				b.SetBytes(2 << 20)
				b.ReportMetric(float64(2*n)*8/m.Elapsed.Seconds()/1e9, "Gbit/s")
				b.ReportMetric(m.ProcCPU.Seconds()/gib, "joiner-cpu-s/GiB")
				b.ReportMetric(m.SysCPU.Seconds()/gib, "system-cpu-s/GiB")
				b.ReportMetric(float64(m.ReadSyscalls+m.WriteSyscalls)/float64(2*n), "userspace-B/B")
			})
		}
	}
}
