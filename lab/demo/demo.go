// Package demo runs the fibmesh demo on the lab: it brings the lab up,
// starts fibmesh-agent in every node as a background process, sends ICMP,
// TCP and UDP between pods on different nodes, and shows from the FIB's
// counters that the packets crossed the nodes in XDP. The lab and the
// agents stay up until StopAgents and lab.Cleanup (fibmesh-lab down).
package demo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/lab"
)

// Options configure Run.
type Options struct {
	BinDir string     // where fibmesh-agent and fibctl are (default "bin")
	Lab    lab.Config // the lab to build (defaults: 2 nodes x 2 pods)
	Out    io.Writer
}

func agentFiles(stateDir, node string) (pid, log string) {
	return filepath.Join(stateDir, "agent-"+node+".pid"), filepath.Join(stateDir, "agent-"+node+".log")
}

// PinDir is where the demo's agent for node pins its FIB.
func PinDir(n *lab.Node) string { return filepath.Join(fib.DefaultPinRoot, n.Netns) }

// Run runs the demo. It leaves the lab and the agents running.
func Run(ctx context.Context, o Options) error {
	if o.BinDir == "" {
		o.BinDir = "bin"
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	o.Lab = o.Lab.WithDefaults()
	agentBin, err := filepath.Abs(filepath.Join(o.BinDir, "fibmesh-agent"))
	if err != nil {
		return err
	}
	if _, err := os.Stat(agentBin); err != nil {
		return fmt.Errorf("%s: %w (run `make build` first)", agentBin, err)
	}
	say := func(format string, args ...any) { fmt.Fprintf(o.Out, "==> "+format+"\n", args...) }

	if err := StopAgents(o.Lab.StateDir); err != nil {
		return err
	}
	say("building the lab: %d nodes x %d pods in network namespaces %s*", o.Lab.Nodes, o.Lab.PodsPerNode, o.Lab.Prefix)
	l, err := lab.Up(ctx, o.Lab)
	if err != nil {
		return err
	}
	for _, n := range l.Nodes {
		fmt.Fprintf(o.Out, "    %s (netns %s) %s, pod CIDR %s\n", n.Name, n.Netns, n.IP, n.PodCIDR)
		for _, p := range n.Pods {
			fmt.Fprintf(o.Out, "      %-12s %s\n", p.Name, p.IP)
		}
	}
	for _, n := range l.Nodes {
		// Pins from an earlier run belong to a lab that no longer
		// exists: start clean.
		if err := fib.Remove(PinDir(n)); err != nil {
			return err
		}
		say("starting fibmesh-agent on %s (pins in %s, log in %s)", n.Name, PinDir(n), func() string { _, lg := agentFiles(o.Lab.StateDir, n.Name); return lg }())
		if err := startAgent(ctx, l, n, agentBin); err != nil {
			return err
		}
	}

	a, b := l.Nodes[0].Pods[0], l.Nodes[len(l.Nodes)-1].Pods[len(l.Nodes[len(l.Nodes)-1].Pods)-1]
	before, err := snapshot(l)
	if err != nil {
		return err
	}
	say("ICMP: ping -c 5 %s -> %s", a.Name, b.Name)
	out, err := l.Command(ctx, a.Netns, "ping", "-c", "5", "-i", "0.2", "-W", "2", b.IP.String()).CombinedOutput()
	fmt.Fprint(o.Out, indent(string(out)))
	if err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	say("TCP: %s sends 1 MiB to %s:8080 and reads it back", a.Name, b.Name)
	if err := tcpEcho(a, b, 8080, 1<<20); err != nil {
		return fmt.Errorf("tcp: %w", err)
	}
	say("UDP: %s sends 1000 datagrams to %s:5353", a.Name, b.Name)
	got, err := udpBurst(a, b, 5353, 1000)
	if err != nil {
		return fmt.Errorf("udp: %w", err)
	}
	fmt.Fprintf(o.Out, "    %d of 1000 datagrams arrived\n", got)
	after, err := snapshot(l)
	if err != nil {
		return err
	}

	say("what the nodes did with those packets")
	w := tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "    NODE\tXDP REDIRECTED\tXDP PASSED TO STACK\tKERNEL FORWARDED")
	for i, n := range l.Nodes {
		d := func(r fib.Reason) uint64 { return after[i].fib[r].Packets - before[i].fib[r].Packets }
		passed := d(fib.ReasonPassNonIPv4) + d(fib.ReasonPassIPv6) + d(fib.ReasonPassRouteMiss) + d(fib.ReasonPassMalformed)
		fmt.Fprintf(w, "    %s\t%d\t%d\t%d\n", n.Name, d(fib.ReasonRedirect), passed, after[i].fwd-before[i].fwd)
	}
	w.Flush()
	fmt.Fprintln(o.Out, "    (kernel forwarded = the node's IP ForwDatagrams: 0 means every pod packet crossed the node in XDP)")
	say("the lab stays up. Look around:")
	fmt.Fprintf(o.Out, `    %[1]s/fibmesh-lab status
    %[1]s/fibmesh-lab exec %[2]s -- ping -c 3 %[3]s
    %[1]s/fibctl --node %[4]s stats
    %[1]s/fibctl --node %[4]s fib
    %[1]s/fibctl --node %[5]s policy set %[3]s 8080 tcp STRICT   # plaintext to that port is now dropped in XDP
    make demo-down
`, o.BinDir, a.Name, b.IP, l.Nodes[0].Netns, l.Nodes[len(l.Nodes)-1].Netns)
	return nil
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

// startAgent starts fibmesh-agent in n's netns as a background process
// (its own session, output to a log file) and waits until it is ready.
func startAgent(ctx context.Context, l *lab.Lab, n *lab.Node, bin string) error {
	pidFile, logFile := agentFiles(l.Config.StateDir, n.Name)
	logf, err := os.Create(logFile)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := l.Command(context.Background(), n.Netns, bin,
		"--node", n.Name, "--cluster-state", filepath.Join(l.Config.StateDir, lab.StateFile),
		"--nic", n.NIC, "--pin-dir", PinDir(n))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start agent on %s: %w", n.Name, err)
	}
	pid := cmd.Process.Pid
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// The agent logs "msg=ready" once its FIB is attached and routed; the
	// log file is all there is to watch.
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(logFile)
		if strings.Contains(string(b), "msg=ready") {
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("agent on %s exited (%v):\n%s", n.Name, err, b)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent on %s not ready after 30s; log:\n%s", n.Name, b)
		}
	}
}

// StopAgents stops the agents the demo started (SIGTERM, then SIGKILL
// after 10 s) and removes their pid files. Their FIBs stay pinned until
// lab.Cleanup removes them.
func StopAgents(stateDir string) error {
	pids, _ := filepath.Glob(filepath.Join(stateDir, "agent-*.pid"))
	var errs []error
	for _, f := range pids {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			os.Remove(f)
			continue
		}
		if isAgent(pid) {
			syscall.Kill(pid, syscall.SIGTERM)
			deadline := time.Now().Add(10 * time.Second)
			for isAgent(pid) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if isAgent(pid) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// isAgent says whether pid is a live fibmesh-agent (not a zombie, not a
// recycled pid).
func isAgent(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || !strings.Contains(s[:i], "fibmesh-agent") {
		return false
	}
	f := strings.Fields(s[i+1:])
	return len(f) > 0 && f[0] != "Z"
}

type nodeSnap struct {
	fib []fib.Counter
	fwd uint64
}

func snapshot(l *lab.Lab) ([]nodeSnap, error) {
	out := make([]nodeSnap, len(l.Nodes))
	for i, n := range l.Nodes {
		f, err := fib.OpenPinned(PinDir(n))
		if err != nil {
			return nil, err
		}
		out[i].fib, err = f.Stats.Read()
		f.Close()
		if err != nil {
			return nil, err
		}
		c, err := lab.Counters(n.Netns)
		if err != nil {
			return nil, err
		}
		out[i].fwd = c.ForwDatagrams
	}
	return out, nil
}

func tcpEcho(a, b *lab.Pod, port, size int) error {
	var ln net.Listener
	if err := lab.InNetns(b.Netns, func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(b.IP, uint16(port)).String())
		return err
	}); err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	var c net.Conn
	if err := lab.InNetns(a.Netns, func() (err error) {
		c, err = net.DialTimeout("tcp4", netip.AddrPortFrom(b.IP, uint16(port)).String(), 5*time.Second)
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		errc <- err
	}()
	got := make([]byte, size)
	if _, err := io.ReadFull(bufio.NewReader(c), got); err != nil {
		return err
	}
	if err := <-errc; err != nil {
		return err
	}
	if string(got) != string(payload) {
		return errors.New("echoed bytes differ from the bytes sent")
	}
	return nil
}

func udpBurst(a, b *lab.Pod, port, n int) (int, error) {
	var rx *net.UDPConn
	if err := lab.InNetns(b.Netns, func() (err error) {
		rx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: b.IP.AsSlice(), Port: port})
		return err
	}); err != nil {
		return 0, err
	}
	defer rx.Close()
	rx.SetReadBuffer(4 << 20)
	var tx *net.UDPConn
	if err := lab.InNetns(a.Netns, func() (err error) {
		tx, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: b.IP.AsSlice(), Port: port})
		return err
	}); err != nil {
		return 0, err
	}
	defer tx.Close()
	for i := range n {
		if _, err := fmt.Fprintf(tx, "datagram %d", i); err != nil {
			return 0, err
		}
	}
	buf := make([]byte, 64)
	got := 0
	for got < n {
		rx.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := rx.Read(buf); err != nil {
			break
		}
		got++
	}
	return got, nil
}
