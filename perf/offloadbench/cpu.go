package offloadbench

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/fibmesh/fibmesh/perf/benchlab"
)

// MachineCPU returns the machine's busy CPU seconds so far, all CPUs
// together (/proc/stat).
func MachineCPU() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return ParseProcStat(line)
}

// ParseProcStat returns the busy CPU seconds of /proc/stat's first line
// ("cpu user nice system idle iowait irq softirq steal ..."): user, nice,
// system, irq and softirq, so that crypto done in softirq or in a kernel
// thread counts; not idle, iowait or steal (guest fields are already in
// user).
func ParseProcStat(line string) (float64, error) {
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: first line %q: want \"cpu\" and at least 7 counters", benchlab.Clip(line, 80))
	}
	var busy uint64
	for i, v := range f[1:8] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: counter %d %q: %w", i+1, v, err)
		}
		busy += n
	}
	return float64(busy) / benchlab.ClockTicks, nil
}

// cpuReading is the CPU time counted at one instant: the machine's and
// the agents' (their processes, all threads, user and kernel).
type cpuReading struct {
	machine, agents float64
}

// readCPU reads the machine's busy time and the agents' (pids).
func readCPU(pids []int) (cpuReading, error) {
	m, err := MachineCPU()
	if err != nil {
		return cpuReading{}, err
	}
	a, err := benchlab.CPUSeconds(pids)
	if err != nil {
		return cpuReading{}, err
	}
	return cpuReading{machine: m, agents: a}, nil
}
