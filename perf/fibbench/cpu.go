package fibbench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// busyTime returns the machine's busy CPU time so far, all CPUs together,
// from /proc/stat.
func busyTime() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return parseBusy(line, clockTicks)
}

// clockTicks is USER_HZ, the unit of /proc/stat: 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// parseBusy returns the busy time in /proc/stat's first line ("cpu user
// nice system idle iowait irq softirq steal ..."): user + nice + system +
// irq + softirq + steal. Packet forwarding runs in softirq (or in
// ksoftirqd, counted as system), so both count; idle and iowait do not;
// guest and guest_nice are already inside user and nice.
func parseBusy(line string, hz int) (time.Duration, error) {
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: first line %q: want \"cpu\" and at least 8 counters", clip(line, 80))
	}
	var ticks uint64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: counter %d %q: %w", i+1, v, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / time.Duration(hz), nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// attributedTime returns the CPU time of this process (every thread,
// live or exited, user and kernel: getrusage) and of the ksoftirqd
// threads (pids; their schedstat run time): the generator, the kernel
// work its transmits set off in its own context (softirq run on the
// way out of a syscall is charged to the running task when, as here,
// the kernel has no IRQ time accounting) and the softirq work deferred
// to ksoftirqd. It leaves out what other processes on a shared machine
// run, which busyTime cannot; both count in nanoseconds, not ticks.
func attributedTime(ksoftirqd []int) (time.Duration, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	t := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	for _, pid := range ksoftirqd {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/schedstat")
		if err != nil {
			return 0, err
		}
		k, err := parseSchedstat(string(b))
		if err != nil {
			return 0, fmt.Errorf("ksoftirqd %d: %w", pid, err)
		}
		t += k
	}
	return t, nil
}

// parseSchedstat returns the run time in /proc/<pid>/schedstat ("run_ns
// wait_ns slices").
func parseSchedstat(s string) (time.Duration, error) {
	f := strings.Fields(s)
	if len(f) < 1 {
		return 0, fmt.Errorf("schedstat %q: empty", s)
	}
	n, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("schedstat %q: %w", clip(s, 80), err)
	}
	return time.Duration(n), nil
}

// ksoftirqdPIDs returns the pids of the ksoftirqd/N kernel threads.
func ksoftirqdPIDs() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err == nil && strings.HasPrefix(string(comm), "ksoftirqd/") {
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("no ksoftirqd thread in /proc")
	}
	return pids, nil
}
