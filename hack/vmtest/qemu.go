package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// vmConfig is how to boot the VM.
type vmConfig struct {
	Qemu    string
	Kernel  string // vmlinuz
	Initrd  string
	SMP     int
	Memory  string // qemu -m
	Append  string // extra kernel command line
	Nonce   string // in the init's marker lines, so test output cannot fake them
	Timeout time.Duration
	Console io.Writer // the VM's console, line by line, \r stripped
	// OnLine, if set, sees each console line after Console (the run's
	// progress: which package and test are running).
	OnLine func(string)
}

// vmResult is what the VM run showed.
type vmResult struct {
	RC       int           // the tests' status from the result marker
	Boot     time.Duration // qemu start to the first line of /init
	Total    time.Duration // qemu start to qemu exit
	GuestUp  string        // the guest's uptime when /init started
	LastSeen []string      // the console's last lines
	// Panicked is set when the guest kernel panicked (an oops panics:
	// oops=panic); Oops holds the report from its first line ("BUG:",
	// "Oops:", "general protection fault", ...), up to oopsLines lines,
	// so the faulting function and its call trace survive a long dump.
	Panicked bool
	Oops     []string
}

// oopsStart matches the first line of a kernel oops or panic report.
var oopsStart = regexp.MustCompile(`\] (BUG: |Oops: |general protection fault|kernel BUG at|Kernel panic - )`)

// oopsLines bounds the oops report kept in vmResult.Oops.
const oopsLines = 80

// errNoResult means the VM ended (or was stopped) without printing the
// result marker: a kernel panic, an init that died, a hang, an OOM kill.
var errNoResult = errors.New("the VM printed no result marker")

// qemuArgs returns the qemu command line. -nodefaults drops the VGA,
// NIC, floppy and CD-ROM the tests do not use (less to probe under
// emulation); the only device is the serial console on stdio.
func qemuArgs(cfg vmConfig) []string {
	accel := "tcg"
	if cfg.SMP > 1 {
		// One host thread per vCPU; x86-on-x86 has the memory-ordering
		// guarantees MTTCG needs, and qemu 7.2 makes it the default.
		accel = "tcg,thread=multi"
	}
	cmdline := "console=ttyS0 panic=-1 oops=panic quiet loglevel=4 rdinit=/init mitigations=off random.trust_cpu=on"
	if cfg.Append != "" {
		cmdline += " " + cfg.Append
	}
	return []string{
		"-accel", accel, "-cpu", "max", "-smp", strconv.Itoa(cfg.SMP), "-m", cfg.Memory,
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-monitor", "none",
		"-no-reboot",
		"-kernel", cfg.Kernel, "-initrd", cfg.Initrd, "-append", cmdline,
	}
}

// markers are the lines /init prints, with the run's nonce.
type markers struct {
	boot, result *regexp.Regexp
}

func newMarkers(nonce string) markers {
	q := regexp.QuoteMeta(nonce)
	return markers{
		boot:   regexp.MustCompile(`VMTEST-BOOT ` + q + ` uptime=(\S+)`),
		result: regexp.MustCompile(`VMTEST-RESULT ` + q + ` rc=(\d+)`),
	}
}

// lastLines keeps the console's last n lines for the error report.
type lastLines struct {
	n     int
	lines []string
}

func (l *lastLines) add(s string) {
	l.lines = append(l.lines, s)
	if len(l.lines) > l.n {
		l.lines = l.lines[len(l.lines)-l.n:]
	}
}

func (l *lastLines) contains(s string) bool {
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

// runVM boots the VM, copies its console to cfg.Console and returns the
// result marker's status. It returns an error wrapping errNoResult if the
// VM stops (or the timeout ends it) before the marker; the result then
// still carries the last console lines and the timings it saw.
func runVM(ctx context.Context, cfg vmConfig) (*vmResult, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.Qemu, qemuArgs(cfg)...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.Qemu, err)
	}
	res := &vmResult{RC: -1}
	mk := newMarkers(cfg.Nonce)
	last := &lastLines{n: 25}
	gotResult := false
	br := bufio.NewReaderSize(out, 64<<10)
	for {
		line, rerr := br.ReadString('\n')
		if line != "" {
			line = strings.TrimRight(line, "\r\n")
			line = strings.ReplaceAll(line, "\r", "")
			fmt.Fprintln(cfg.Console, line)
			if cfg.OnLine != nil {
				cfg.OnLine(line)
			}
			last.add(line)
			if (len(res.Oops) > 0 || oopsStart.MatchString(line)) && len(res.Oops) < oopsLines {
				res.Oops = append(res.Oops, line)
			}
			if m := mk.boot.FindStringSubmatch(line); m != nil && res.Boot == 0 {
				res.Boot, res.GuestUp = time.Since(start), m[1]
			}
			if m := mk.result.FindStringSubmatch(line); m != nil && !gotResult {
				gotResult = true
				res.RC, _ = strconv.Atoi(m[1])
				// /init powers off next; do not let a hung poweroff
				// hold the run for the whole timeout.
				go func() {
					select {
					case <-time.After(30 * time.Second):
						cancel()
					case <-ctx.Done():
					}
				}()
			}
		}
		if rerr != nil {
			break
		}
	}
	werr := cmd.Wait()
	res.Total = time.Since(start)
	res.LastSeen = last.lines
	if gotResult {
		return res, nil
	}
	why := "qemu exited"
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		why = fmt.Sprintf("timed out after %v (stopped qemu)", cfg.Timeout)
	case ctx.Err() != nil:
		why = "interrupted (stopped qemu)"
	case werr != nil:
		why = fmt.Sprintf("qemu: %v", werr)
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		why += "; qemu stderr: " + s
	}
	if last.contains("Kernel panic") {
		res.Panicked = true
		why += "; the kernel panicked"
	}
	if last.contains("Out of memory") {
		why += "; the guest ran out of memory (raise -mem)"
	}
	if res.Boot == 0 {
		why += "; /init never started"
	}
	return res, fmt.Errorf("%w: %s", errNoResult, why)
}
