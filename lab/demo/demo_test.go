package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/labtest"
)

// testPrefix names this package's lab namespaces, apart from other
// packages' labs that tests may run at the same time.
const testPrefix = "fm-td-"

// procState returns the command name and state letter of pid from
// /proc/PID/stat; ok is false when there is no such process.
func procState(pid int) (comm, state string, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", "", false
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", "", false
	}
	f := strings.Fields(s[end+1:])
	if len(f) == 0 {
		return "", "", false
	}
	return s[open+1 : end], f[0], true
}

// alive says whether pid is a running (not zombie) process.
func alive(pid int) bool {
	_, st, ok := procState(pid)
	return ok && st != "Z"
}

// readPid reads a pid file.
func readPid(t testing.TB, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %s holds %q: %v", path, b, err)
	}
	return pid
}

// demoTable returns the rows of the "what the nodes did" table, by node
// name: XDP REDIRECTED, XDP PASSED TO STACK, KERNEL FORWARDED.
func demoTable(t testing.TB, out string) map[string][3]uint64 {
	t.Helper()
	lines := strings.Split(out, "\n")
	start := -1
	for i, l := range lines {
		if strings.Join(strings.Fields(l), " ") == "NODE XDP REDIRECTED XDP PASSED TO STACK KERNEL FORWARDED" {
			start = i + 1
			break
		}
	}
	if start < 0 {
		t.Fatalf("no counter table header in the output:\n%s", out)
	}
	rows := map[string][3]uint64{}
	for _, l := range lines[start:] {
		f := strings.Fields(l)
		if len(f) != 4 || !strings.HasPrefix(f[0], "node") {
			break
		}
		var r [3]uint64
		for i := range r {
			n, err := strconv.ParseUint(f[i+1], 10, 64)
			if err != nil {
				t.Fatalf("table row %q: column %d: %v", l, i+2, err)
			}
			r[i] = n
		}
		rows[f[0]] = r
	}
	return rows
}

// buildAgent builds fibmesh-agent into dir.
func buildAgent(t testing.TB, dir string) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the test builds fibmesh-agent and needs the go command: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", filepath.Join(dir, "fibmesh-agent"), "github.com/fibmesh/fibmesh/cmd/fibmesh-agent")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build fibmesh-agent: %v\n%s", err, out)
	}
}

// TestRun runs the demo on a lab of its own and checks what it claims:
// every datagram arrived, each node redirected packets in XDP and its
// kernel forwarded none; the agents keep running after Run and
// StopAgents stops them.
func TestRun(t *testing.T) {
	labtest.NeedRoot(t)
	bin, stateDir := t.TempDir(), t.TempDir()
	buildAgent(t, bin)

	cfg := lab.Config{Prefix: testPrefix, StateDir: stateDir}
	nodes := []string{"node1", "node2"} // the default lab
	t.Cleanup(func() {
		if err := StopAgents(stateDir); err != nil {
			t.Errorf("StopAgents: %v", err)
		}
		for _, n := range nodes {
			if err := fib.Remove(filepath.Join(fib.DefaultPinRoot, testPrefix+n)); err != nil {
				t.Errorf("fib.Remove: %v", err)
			}
		}
		if err := lab.Cleanup(testPrefix); err != nil {
			t.Errorf("lab.Cleanup: %v", err)
		}
		for _, n := range nodes {
			if lab.NetnsExists(testPrefix + n) {
				t.Errorf("network namespace %s%s left behind", testPrefix, n)
			}
		}
		if pins, _ := filepath.Glob(filepath.Join(fib.DefaultPinRoot, testPrefix+"*")); len(pins) > 0 {
			t.Errorf("pins left behind: %v", pins)
		}
	})
	logAgents := func() {
		for _, n := range nodes {
			_, lg := agentFiles(stateDir, n)
			b, err := os.ReadFile(lg)
			t.Logf("agent log of %s (%v):\n%s", n, err, b)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var buf bytes.Buffer
	if err := Run(ctx, Options{BinDir: bin, Lab: cfg, Out: &buf}); err != nil {
		logAgents()
		t.Fatalf("Run: %v\noutput:\n%s", err, buf.String())
	}
	out := buf.String()
	t.Logf("demo output:\n%s", out)

	if !strings.Contains(out, "    1000 of 1000 datagrams arrived\n") {
		t.Errorf("the output does not say that every datagram arrived")
	}
	rows := demoTable(t, out)
	if len(rows) != len(nodes) {
		t.Errorf("counter table has rows for %d nodes, want %d (%v)", len(rows), len(nodes), rows)
	}
	for _, n := range nodes {
		r, ok := rows[n]
		if !ok {
			t.Errorf("counter table has no row for %s", n)
			continue
		}
		if r[0] == 0 {
			t.Errorf("%s: XDP REDIRECTED = 0, want > 0 (the traffic crossed %s)", n, n)
		}
		if r[2] != 0 {
			t.Errorf("%s: KERNEL FORWARDED = %d, want 0 (XDP forwards every pod packet)", n, r[2])
		}
	}

	pids := map[string]int{}
	for _, n := range nodes {
		pidFile, _ := agentFiles(stateDir, n)
		pid := readPid(t, pidFile)
		comm, st, ok := procState(pid)
		if !ok || st == "Z" || comm != "fibmesh-agent" {
			logAgents()
			t.Fatalf("agent of %s (pid %d from %s): comm %q state %q exists %v; want a running fibmesh-agent", n, pid, pidFile, comm, st, ok)
		}
		pids[n] = pid
	}

	if err := StopAgents(stateDir); err != nil {
		t.Errorf("StopAgents: %v", err)
	}
	for n, pid := range pids {
		// StopAgents returns once the agents are gone or zombies; the
		// demo's Wait goroutine reaps them soon after.
		if alive(pid) {
			t.Errorf("agent of %s (pid %d) still running after StopAgents", n, pid)
		}
		pidFile, _ := agentFiles(stateDir, n)
		if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pid file %s still there after StopAgents (stat: %v)", pidFile, err)
		}
	}
	// The FIBs stay pinned after the agents stop (until lab cleanup).
	for _, n := range nodes {
		dir := filepath.Join(fib.DefaultPinRoot, testPrefix+n)
		f, err := fib.OpenPinned(dir)
		if err != nil {
			t.Errorf("FIB of %s after StopAgents: %v", n, err)
			continue
		}
		f.Close()
	}
}

// startProcess starts a process that is killed when the test ends.
func startProcess(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// fakeAgent copies sleep(1) to DIR/fibmesh-agent, so that the process it
// runs is named like an agent, and returns the copy's path.
func fakeAgent(t *testing.T) string {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skipf("needs sleep(1): %v", err)
	}
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "fibmesh-agent")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitExit waits for cmd (which StopAgents signalled) and returns the
// signal that ended it.
func waitExit(t *testing.T, cmd *exec.Cmd) syscall.Signal {
	t.Helper()
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("process %d: Wait = %v, want it ended by a signal", cmd.Process.Pid, err)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() {
		t.Fatalf("process %d exited with %v, want it ended by a signal", cmd.Process.Pid, ws)
	}
	return ws.Signal()
}

// TestStopAgentsStale: StopAgents only signals processes named
// fibmesh-agent; it removes every pid file it reads, stale or garbage,
// and leaves other files alone. Needs no root.
func TestStopAgentsStale(t *testing.T) {
	dir := t.TempDir()
	other := startProcess(t, "sleep", "60")
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"agent-self.pid":    strconv.Itoa(os.Getpid()) + "\n", // this test: not an agent
		"agent-sleep.pid":   strconv.Itoa(other.Process.Pid),  // a live process that is not an agent
		"agent-gone.pid":    strconv.Itoa(gone.Process.Pid),   // an exited, reaped process
		"agent-garbage.pid": "not a pid\n",
		"agent-empty.pid":   "",
		"agent-init.pid":    "1\n",  // never signal init
		"agent-zero.pid":    "0\n",  // kill(0) would signal our process group
		"agent-minus.pid":   "-1\n", // kill(-1) would signal every process
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	keep := []string{"cluster.yaml", "agent-node1.log", "other.pid"}
	for _, name := range keep {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	start := time.Now()
	if err := StopAgents(dir); err != nil {
		t.Fatalf("StopAgents: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("StopAgents took %v with no agent to stop", d)
	}
	if !alive(other.Process.Pid) {
		t.Errorf("StopAgents stopped pid %d (sleep), which is not an agent", other.Process.Pid)
	}
	for name := range files {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after StopAgents (stat: %v)", name, err)
		}
	}
	for _, name := range keep {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("StopAgents removed %s, which is not a pid file: %v", name, err)
		}
	}
	// The test process itself was not signalled, or it would not be here.

	if err := StopAgents(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("StopAgents on a missing state directory = %v, want nil", err)
	}
}

// TestStopAgentsStops: a live process named fibmesh-agent gets SIGTERM;
// one that ignores SIGTERM gets SIGKILL after StopAgents' grace period.
// Needs no root.
func TestStopAgentsStops(t *testing.T) {
	bin := fakeAgent(t)
	t.Run("SIGTERM", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		cmd := startProcess(t, bin, "60")
		waitRunning(t, cmd.Process.Pid)
		if err := os.WriteFile(filepath.Join(dir, "agent-node1.pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := StopAgents(dir); err != nil {
			t.Fatalf("StopAgents: %v", err)
		}
		if sig := waitExit(t, cmd); sig != syscall.SIGTERM {
			t.Errorf("agent ended by %v, want SIGTERM", sig)
		}
		if _, err := os.Stat(filepath.Join(dir, "agent-node1.pid")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pid file still there after StopAgents (stat: %v)", err)
		}
	})
	t.Run("SIGKILL", func(t *testing.T) {
		t.Parallel()
		if testing.Short() {
			t.Skip("waits StopAgents' 10 s grace period")
		}
		dir := t.TempDir()
		// Ignored signals stay ignored across exec.
		cmd := startProcess(t, "sh", "-c", `trap "" TERM; exec "$0" 60`, bin)
		waitRunning(t, cmd.Process.Pid)
		if err := os.WriteFile(filepath.Join(dir, "agent-node2.pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := StopAgents(dir); err != nil {
			t.Fatalf("StopAgents: %v", err)
		}
		if d := time.Since(start); d < 9*time.Second {
			t.Errorf("StopAgents returned after %v, want the 10 s grace period before SIGKILL", d)
		}
		if sig := waitExit(t, cmd); sig != syscall.SIGKILL {
			t.Errorf("agent ignoring SIGTERM ended by %v, want SIGKILL", sig)
		}
	})
}

// waitRunning waits until pid runs the fake agent (after exec).
func waitRunning(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if comm, st, ok := procState(pid); ok && comm == "fibmesh-agent" && st != "Z" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d never ran as fibmesh-agent", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
