package benchlab

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// ClockTicks is the unit of utime and stime in /proc/<pid>/stat
// (USER_HZ, sysconf(_SC_CLK_TCK)): 100 on every Linux architecture Go
// supports.
const ClockTicks = 100

// ParseStatCPU returns the CPU time, in seconds, that a /proc/<pid>/stat
// line reports the process (all its threads) spent in user and kernel
// mode: utime + stime, fields 14 and 15. The command name (field 2) may
// hold spaces and parentheses, so fields are counted after its last ')'.
func ParseStatCPU(stat string) (float64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc stat line %q: no ')' after the command name", Clip(stat, 80))
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state), so utime (14) is f[11] and stime (15) f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc stat line %q: %d fields after the command name, want at least 13", Clip(stat, 80), len(f))
	}
	var ticks uint64
	for _, s := range f[11:13] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc stat line: utime/stime %q: %w", s, err)
		}
		ticks += n
	}
	return float64(ticks) / ClockTicks, nil
}

// CPUSeconds returns the CPU seconds the processes have used so far, all
// together.
func CPUSeconds(pids []int) (float64, error) {
	var sum float64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, fmt.Errorf("CPU time of pid %d: %w", pid, err)
		}
		s, err := ParseStatCPU(string(b))
		if err != nil {
			return 0, fmt.Errorf("pid %d: %w", pid, err)
		}
		sum += s
	}
	return sum, nil
}

// ParseStatusRSS returns the resident set (VmRSS) and its peak (VmHWM),
// in bytes, from a /proc/<pid>/status file.
func ParseStatusRSS(status string) (rss, peak uint64, err error) {
	found := 0
	for l := range strings.Lines(status) {
		name, v, ok := strings.Cut(l, ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("/proc status %s: %q, want \"<n> kB\"", name, strings.TrimSpace(v))
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc status %s: %w", name, err)
		}
		if name == "VmRSS" {
			rss = n * 1024
		} else {
			peak = n * 1024
		}
		found++
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("/proc status: no VmRSS and VmHWM lines (a kernel thread, or not a status file)")
	}
	return rss, peak, nil
}

// RSS returns the resident set and its peak, in bytes, of each process,
// in the order of pids.
func RSS(pids []int) (rss, peak []uint64, err error) {
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return nil, nil, fmt.Errorf("resident memory of pid %d: %w", pid, err)
		}
		r, p, err := ParseStatusRSS(string(b))
		if err != nil {
			return nil, nil, fmt.Errorf("pid %d: %w", pid, err)
		}
		rss, peak = append(rss, r), append(peak, p)
	}
	return rss, peak, nil
}

// Loadavg returns the 1-minute load average, 0 if unreadable.
func Loadavg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// MissingPorts returns the ports of want that no socket in ss -Hltn's
// output listens on.
func MissingPorts(ssOut string, want []int) []int {
	have := map[int]bool{}
	for l := range strings.Lines(ssOut) {
		f := strings.Fields(l)
		// State Recv-Q Send-Q Local:Port Peer:Port
		if len(f) >= 4 {
			have[Port(f[3])] = true
		}
	}
	var out []int
	for _, p := range want {
		if !have[p] {
			out = append(out, p)
		}
	}
	return out
}

// Port returns the port of host:port, or -1.
func Port(hostport string) int {
	ap, err := netip.ParseAddrPort(hostport)
	if err == nil {
		return int(ap.Port())
	}
	i := strings.LastIndexByte(hostport, ':')
	if i < 0 {
		return -1
	}
	p, err := strconv.Atoi(hostport[i+1:])
	if err != nil {
		return -1
	}
	return p
}
