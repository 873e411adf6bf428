// Command bench-all is make bench: it runs every benchmark (make
// bench-fib, bench-fds, bench-l4, bench-l7, bench-offload, bench-xds,
// bench-ktls) one after the other with one progress line per step, keeps
// each one's output in perf/out/logs/, writes perf/out/report.json and
// perf/out/report.html (package perf/report), and prints the summary
// lines last.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fibmesh/fibmesh/perf/report"
)

// bench is one step: its make target and what it needs.
type bench struct {
	name     string
	needRoot bool
	samples  string // its own JSON file under the out directory
}

// benches are the steps in their order: the quick data-plane ones first,
// the long ones (xds at 5,000 agents, the VM) last.
var benches = []bench{
	{"fib", true, "bench-fib.json"},
	{"fds", true, ""},
	{"l4", true, "bench-l4.json"},
	{"l7", true, "bench-l7.json"},
	{"offload", true, "bench-offload.json"},
	{"xds", false, "bench-xds.json"},
	{"ktls", true, "bench-ktls.json"},
}

const usage = `bench-all (make bench): every benchmark in sequence, then the report.

Usage:
  go run ./perf/cmd/bench-all [--only fib,fds,...] [--out perf/out] [--from-logs]

Runs make bench-NAME for fib, fds, l4, l7, offload, xds and ktls (needs
root but for xds; a step that needs root is skipped without it, with the
reason in the report), printing one line per step. Each step's output goes
to OUT/logs/bench-NAME.log; its summary line (NAME: key=value ...) is what
the report is built from. Writes OUT/report.json and OUT/report.html (the
machine and kernel, each comparison as a chart with its aim, what could
not run and why) and prints every summary line last. Exit 1 when a step
failed.

--from-logs builds the report from the logs of an earlier run without
running anything (e.g. after editing the report's code).

Flags:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is bench-all with args, printing to stdout and stderr; it returns
// the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench-all", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	only := fs.String("only", "", "comma-separated benches to run (default: all): "+names())
	out := fs.String("out", "perf/out", "where the logs and the report go")
	fromLogs := fs.Bool("from-logs", false, "build the report from OUT/logs of an earlier run; run nothing")
	makeCmd := fs.String("make", "make", "the make to run the bench targets with")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	steps := benches
	if *only != "" {
		steps = nil
		for _, n := range strings.Split(*only, ",") {
			i := slices.IndexFunc(benches, func(b bench) bool { return b.name == strings.TrimSpace(n) })
			if i < 0 {
				fmt.Fprintf(stderr, "bench-all: --only %q: unknown bench %q: want some of %s\n", *only, n, names())
				return 2
			}
			steps = append(steps, benches[i])
		}
	}
	logDir := filepath.Join(*out, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		log.Error("create the log directory", "dir", logDir, "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	r := &report.Report{Started: time.Now(), Machine: report.ReadMachine()}
	failed := false
	for i, b := range steps {
		st := report.Step{Name: b.name, Command: "make bench-" + b.name, Log: filepath.Join(logDir, "bench-"+b.name+".log")}
		fmt.Fprintf(stdout, "[%d/%d] %-8s %s ... ", i+1, len(steps), b.name, st.Command)
		start := time.Now()
		switch {
		case *fromLogs:
			st.Status, st.Reason = fromLog(&st)
		case ctx.Err() != nil:
			st.Status, st.Reason = report.StatusSkipped, "interrupted"
		case b.needRoot && !isRoot():
			st.Status, st.Reason = report.StatusSkipped, "needs root (network namespaces, BPF): run make bench as root"
		default:
			st.Status, st.Reason = runStep(ctx, *makeCmd, b, &st)
			st.Seconds = time.Since(start).Seconds()
		}
		if b.samples != "" {
			if p := filepath.Join(*out, b.samples); exists(p) {
				st.Samples = p
			}
		}
		failed = failed || st.Status == report.StatusFailed
		line := st.Status
		if st.Seconds > 0 {
			line += " in " + time.Duration(st.Seconds*float64(time.Second)).Round(time.Second).String()
		}
		if st.Reason != "" {
			line += ": " + firstLine(st.Reason)
		} else if len(st.Summaries) > 0 {
			line += ": " + st.Summaries[len(st.Summaries)-1].Line
		}
		fmt.Fprintln(stdout, line)
		r.Steps = append(r.Steps, st)
	}
	r.Finished = time.Now()
	r.Build()
	if err := write(*out, r); err != nil {
		log.Error("write the report", "err", err)
		return 1
	}
	fmt.Fprintf(stdout, "report: %s, %s\n", filepath.Join(*out, "report.html"), filepath.Join(*out, "report.json"))
	for _, n := range r.NotRun {
		fmt.Fprintln(stdout, "not run:", firstLine(n))
	}
	for _, l := range r.SummaryLines() {
		fmt.Fprintln(stdout, l)
	}
	if failed {
		return 1
	}
	return 0
}

// runStep runs make bench-NAME with its output in st.Log and reads its
// summary lines.
func runStep(ctx context.Context, makeCmd string, b bench, st *report.Step) (status, reason string) {
	f, err := os.Create(st.Log)
	if err != nil {
		return report.StatusFailed, err.Error()
	}
	defer f.Close()
	cmd := exec.CommandContext(ctx, makeCmd, "--no-print-directory", "bench-"+b.name)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so that an interrupt stops the bench's
	// children (labs, VMs) through make, which forwards nothing.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGINT) }
	cmd.WaitDelay = 2 * time.Minute
	runErr := cmd.Run()
	status, reason = fromLog(st)
	if runErr != nil {
		tail := lastLines(st.Log, 3)
		if ctx.Err() != nil {
			return report.StatusFailed, "interrupted: " + tail
		}
		return report.StatusFailed, fmt.Sprintf("%s: %v: %s", st.Command, runErr, tail)
	}
	return status, reason
}

// fromLog reads st.Log's summary lines into st.
func fromLog(st *report.Step) (status, reason string) {
	f, err := os.Open(st.Log)
	if err != nil {
		return report.StatusSkipped, fmt.Sprintf("no log %s (not run)", st.Log)
	}
	defer f.Close()
	st.Summaries, err = report.Summaries(f)
	if err != nil {
		return report.StatusFailed, fmt.Sprintf("reading %s: %v", st.Log, err)
	}
	if len(st.Summaries) == 0 {
		return report.StatusFailed, fmt.Sprintf("no summary line (NAME: key=value ...) in %s: %s", st.Log, lastLines(st.Log, 3))
	}
	return report.StatusOK, ""
}

// write writes the report's two files, each through a temporary file.
func write(dir string, r *report.Report) error {
	for _, o := range []struct {
		name string
		fn   func(*os.File) error
	}{
		{"report.json", func(f *os.File) error { return report.WriteJSON(f, r) }},
		{"report.html", func(f *os.File) error { return report.WriteHTML(f, r) }},
	} {
		path := filepath.Join(dir, o.name)
		tmp, err := os.CreateTemp(dir, "."+o.name)
		if err != nil {
			return err
		}
		if err := o.fn(tmp); err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			return err
		}
		if err := tmp.Chmod(0o644); err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			return err
		}
		if err := tmp.Close(); err != nil {
			os.Remove(tmp.Name())
			return err
		}
		if err := os.Rename(tmp.Name(), path); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}

// lastLines returns the last n non-empty lines of a file, joined by " | ".
func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, l := range slices.Backward(strings.Split(string(b), "\n")) {
		if l = strings.TrimSpace(l); l != "" {
			out = append([]string{l}, out...)
			if len(out) == n {
				break
			}
		}
	}
	return strings.Join(out, " | ")
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	if len(l) > 160 {
		l = l[:157] + "..."
	}
	return l
}

// isRoot is whether the benches that need root can run; a variable for
// the tests.
var isRoot = func() bool { return os.Geteuid() == 0 }

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func names() string {
	var n []string
	for _, b := range benches {
		n = append(n, b.name)
	}
	return strings.Join(n, ",")
}
