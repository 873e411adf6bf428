package report

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ReadMachine describes this machine: kernel (uname), OS
// (/etc/os-release), CPU model (/proc/cpuinfo), CPUs, memory
// (/proc/meminfo), Go (go version, else the runtime's), kTLS
// (/proc/sys/net/ipv4/tcp_available_ulp) and the load average
// (/proc/loadavg). What cannot be read is left empty.
func ReadMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	m.Hostname, _ = os.Hostname()
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Machine[:])
	}
	if v := fileField("/etc/os-release", "PRETTY_NAME="); v != "" {
		m.OS = strings.Trim(v, `"`)
	}
	if v := fileField("/proc/cpuinfo", "model name"); v != "" {
		m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
	}
	if v := fileField("/proc/meminfo", "MemTotal:"); v != "" {
		if kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64); err == nil {
			m.MemoryGiB = kb / (1 << 20)
		}
	}
	if out, err := exec.Command("go", "version").Output(); err == nil {
		m.GoVersion = strings.TrimSpace(string(out))
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_ulp"); err == nil {
		for _, f := range strings.Fields(string(b)) {
			m.KTLS = m.KTLS || f == "tls"
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			m.LoadAverage, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	return m
}

// fileField returns what follows prefix on the first line of path that
// starts with it.
func fileField(path, prefix string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			return rest
		}
	}
	return ""
}
