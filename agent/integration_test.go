package agent_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/controller/model"
	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/labtest"
)

// The integration tests run the real fibmesh-agent binary in the nodes of
// a lab, driven by a controller served in the test process (on the
// fabric's bridge, over TLS), and send real traffic between pods on
// different nodes.

const prefix = "fm-ti-"

// binDir holds the fibmesh-agent binary TestMain builds.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(testenv.MainWithCommands(m, &binDir, "cmd/fibmesh-agent"))
}

// agentProc is a running fibmesh-agent.
type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  *logBuf
	node *lab.Node
}

type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) add(s string) { l.mu.Lock(); l.b.WriteString(s + "\n"); l.mu.Unlock() }
func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func pinDir(n *lab.Node) string { return filepath.Join(fib.DefaultPinRoot, n.Netns) }

// launchAgent runs fibmesh-agent in node's netns against the test's
// controller, with node's token, and returns at once.
func launchAgent(t *testing.T, e *env, n *lab.Node, extra ...string) *agentProc {
	t.Helper()
	args := append([]string{"--node", n.Name, "--nic", n.NIC, "--pin-dir", pinDir(n),
		"--controller", e.ctl.addr, "--controller-ca", e.ctl.rootFile, "--token-file", e.ctl.tokenFile[n.Name],
		"--run-dir", e.runDir, "--reconnect-max", "1s"}, extra...)
	cmd := e.lab.Command(context.Background(), n.Netns, filepath.Join(binDir, "fibmesh-agent"), args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start agent on %s: %v", n.Name, err)
	}
	p := &agentProc{cmd: cmd, done: make(chan struct{}), log: &logBuf{}, node: n}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.log.add(sc.Text())
		}
		io.Copy(io.Discard, stderr)
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("agent %s log:\n%s", n.Name, p.log)
		}
	})
	return p
}

// startAgent launches an agent and waits until its /readyz says ready
// (the first flow table applied), failing the test if it exits first.
func startAgent(t *testing.T, e *env, n *lab.Node, extra ...string) *agentProc {
	t.Helper()
	p := launchAgent(t, e, n, extra...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, err := adminGet(n, "/readyz")
		if err == nil && code == 200 {
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("agent on %s exited before ready:\n%s", n.Name, p.log)
		default:
		}
		if time.Now().After(deadline) {
			p.kill()
			t.Fatalf("agent on %s not ready after 30s (/readyz: %d %q %v):\n%s", n.Name, code, body, err, p.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// adminGet GETs path from the admin API of the agent in n's netns
// (127.0.0.1:15000 there).
func adminGet(n *lab.Node, path string) (int, string, error) {
	return nsGet(n, "http://127.0.0.1:15000"+path)
}

// nsGet GETs url with a socket made in n's netns.
func nsGet(n *lab.Node, url string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := lab.InNetns(n.Netns, func() (err error) {
				var d net.Dialer
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// adminJSON decodes the admin API's answer to path into v.
func adminJSON(t *testing.T, n *lab.Node, path string, v any) {
	t.Helper()
	code, body, err := adminGet(n, path)
	if err != nil || code != 200 {
		t.Fatalf("GET %s on %s: %d %v\n%s", path, n.Name, code, err, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s on %s: %v\n%s", path, n.Name, err, body)
	}
}

func (p *agentProc) stop() {
	if p.cmd.Process != nil {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.kill()
	}
}

func (p *agentProc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// counters reads a node's FIB counters through its pinned maps.
func counters(t *testing.T, n *lab.Node) []fib.Counter {
	t.Helper()
	f, err := fib.OpenPinned(pinDir(n))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := f.Stats.Read()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func forwarded(t *testing.T, n *lab.Node) uint64 {
	t.Helper()
	c, err := lab.Counters(n.Netns)
	if err != nil {
		t.Fatal(err)
	}
	return c.ForwDatagrams
}

// snapshot holds both nodes' FIB and kernel forwarding counters.
type snapshot struct {
	fib [2][]fib.Counter
	fwd [2]uint64
}

func snap(t *testing.T, nodes [2]*lab.Node) snapshot {
	var s snapshot
	for i, n := range nodes {
		s.fib[i] = counters(t, n)
		s.fwd[i] = forwarded(t, n)
	}
	return s
}

func (s snapshot) delta(before snapshot, node int, r fib.Reason) uint64 {
	return s.fib[node][r].Packets - before.fib[node][r].Packets
}

type env struct {
	lab        *lab.Lab
	ctl        *controller
	runDir     string
	nodes      [2]*lab.Node
	podA, podB *lab.Pod // node1-pod1, node2-pod2
	agents     [2]*agentProc
}

func setup(t *testing.T, agentArgs ...string) *env {
	return setupPerNode(t, agentArgs, agentArgs)
}

func setupPerNode(t *testing.T, node1Args, node2Args []string) *env {
	t.Helper()
	testenv.NeedRoot(t)
	l := labtest.Up(t, lab.Config{Nodes: 2, PodsPerNode: 2, Prefix: prefix, StateDir: t.TempDir()})
	e := &env{lab: l, runDir: t.TempDir()}
	var err error
	for i, name := range []string{"node1", "node2"} {
		if e.nodes[i], err = l.Node(name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fib.Remove(pinDir(e.nodes[i])) })
	}
	if e.podA, err = l.Pod("node1-pod1"); err != nil {
		t.Fatal(err)
	}
	if e.podB, err = l.Pod("node2-pod2"); err != nil {
		t.Fatal(err)
	}
	e.ctl = startController(t, l)
	e.agents[0] = startAgent(t, e, e.nodes[0], node1Args...)
	e.agents[1] = startAgent(t, e, e.nodes[1], node2Args...)
	return e
}

// inPod runs fn in pod's netns; sockets made there stay there.
func inPod(t *testing.T, p *lab.Pod, fn func() error) {
	t.Helper()
	if err := lab.InNetns(p.Netns, fn); err != nil {
		t.Fatalf("in %s: %v", p.Name, err)
	}
}

// udpExchange sends n datagrams from a to b:port and requires all of them
// to arrive. With first > 0, the first datagrams are sent and received
// before the rest are sent.
func udpExchange(t *testing.T, a, b *lab.Pod, port int, counts ...int) {
	t.Helper()
	var rx *net.UDPConn
	inPod(t, b, func() (err error) {
		rx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: b.IP.AsSlice(), Port: port})
		return err
	})
	defer rx.Close()
	var tx *net.UDPConn
	inPod(t, a, func() (err error) {
		tx, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: b.IP.AsSlice(), Port: port})
		return err
	})
	defer tx.Close()
	buf := make([]byte, 1500)
	sent := 0
	for _, upto := range counts {
		for i := sent; i < upto; i++ {
			if _, err := fmt.Fprintf(tx, "datagram %d", i); err != nil {
				t.Fatal(err)
			}
		}
		rx.SetReadDeadline(time.Now().Add(5 * time.Second))
		for i := sent; i < upto; i++ {
			k, err := rx.Read(buf)
			if err != nil {
				t.Fatalf("datagram %d of %d: %v", i, upto, err)
			}
			if !strings.HasPrefix(string(buf[:k]), "datagram ") {
				t.Fatalf("datagram %d: got %q", i, buf[:k])
			}
		}
		sent = upto
	}
}

// tcpEcho opens a TCP connection from a to b:port, echoes rounds
// messages, and returns the segments both ends sent (TCP_INFO).
func tcpEcho(t *testing.T, a, b *lab.Pod, port, rounds int) (segs uint64) {
	t.Helper()
	var ln net.Listener
	inPod(t, b, func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(b.IP, uint16(port)).String())
		return err
	})
	defer ln.Close()
	srvSegs := make(chan uint64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvSegs <- 0
			return
		}
		defer c.Close()
		buf := make([]byte, 64)
		for range rounds {
			n, err := c.Read(buf)
			if err != nil {
				break
			}
			c.Write(buf[:n])
		}
		srvSegs <- segsOut(c)
	}()
	var c net.Conn
	inPod(t, a, func() (err error) {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err = d.Dial("tcp4", netip.AddrPortFrom(b.IP, uint16(port)).String())
		return err
	})
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	for i := range rounds {
		msg := fmt.Sprintf("ping %04d", i)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if string(buf[:len(msg)]) != msg {
			t.Fatalf("round %d: echo %q, want %q", i, buf[:len(msg)], msg)
		}
	}
	return segsOut(c) + <-srvSegs
}

func segsOut(c net.Conn) uint64 {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return 0
	}
	var info *unix.TCPInfo
	raw.Control(func(fd uintptr) { info, _ = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if info == nil {
		return 0
	}
	return uint64(info.Segs_out)
}

func ping(t *testing.T, l *lab.Lab, from, to *lab.Pod, n int) {
	t.Helper()
	out, err := l.Command(context.Background(), from.Netns, "ping", "-c", fmt.Sprint(n), "-i", "0.01", "-W", "2", to.IP.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("ping %s -> %s: %v\n%s", from.Name, to.Name, err, out)
	}
}

func TestCrossNodeTrafficGoesThroughXDP(t *testing.T) {
	e := setup(t)
	check := func(t *testing.T, before, after snapshot, minRedirects [2]uint64, exact bool) {
		t.Helper()
		for i := range 2 {
			if d := after.fwd[i] - before.fwd[i]; d != 0 {
				t.Errorf("%s: kernel forwarded %d packets; want 0 (all through XDP)", e.nodes[i].Name, d)
			}
			got := after.delta(before, i, fib.ReasonRedirect)
			if exact && got != minRedirects[i] || got < minRedirects[i] {
				t.Errorf("%s: XDP redirects rose by %d; want %d", e.nodes[i].Name, got, minRedirects[i])
			}
		}
	}
	t.Run("icmp", func(t *testing.T) {
		before := snap(t, e.nodes)
		ping(t, e.lab, e.podA, e.podB, 20)
		// Each node redirects 20 requests one way and 20 replies back.
		check(t, before, snap(t, e.nodes), [2]uint64{40, 40}, true)
	})
	t.Run("udp", func(t *testing.T) {
		before := snap(t, e.nodes)
		udpExchange(t, e.podA, e.podB, 5353, 100)
		check(t, before, snap(t, e.nodes), [2]uint64{100, 100}, true)
	})
	t.Run("tcp", func(t *testing.T) {
		before := snap(t, e.nodes)
		segs := tcpEcho(t, e.podA, e.podB, 8080, 50)
		// Every segment either end sent crossed both nodes.
		check(t, before, snap(t, e.nodes), [2]uint64{segs, segs}, false)
	})
}

func dialTCP(p *lab.Pod, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := lab.InNetns(p.Netns, func() (err error) {
		d := net.Dialer{Timeout: timeout}
		c, err = d.Dial("tcp4", addr)
		return err
	})
	return c, err
}

// hasPolicy reports whether n's FIB holds e.
func hasPolicy(t *testing.T, n *lab.Node, e fib.PolicyEntry) bool {
	t.Helper()
	f, err := fib.OpenPinned(pinDir(n))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ps, err := f.Policy.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p == e {
			return true
		}
	}
	return false
}

func TestStrictPortDropsPlaintext(t *testing.T) {
	e := setup(t)
	const port = 7100
	var ln net.Listener
	inPod(t, e.podB, func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(e.podB.IP, port).String())
		return err
	})
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	addr := ln.Addr().String()

	// Reachable before the policy.
	c, err := dialTCP(e.podA, addr, 5*time.Second)
	if err != nil {
		t.Fatalf("before STRICT: %v", err)
	}
	c.Close()

	// STRICT on pod B's TCP port and UDP port 7000 (a UDP service it
	// backs), from the controller: programmed by pod B's node's agent.
	e.ctl.update(t, func(m *model.Model) {
		workload(m, e.podB.Name).PortModes = map[uint32]model.Mode{port: model.ModeStrict, 7000: model.ModeStrict}
		m.Services = append(m.Services, &model.Service{
			Hostname: "udp-echo.default.svc.cluster.local", Namespace: "default", Name: "udp-echo", VIPs: []string{"10.96.0.10"},
			Ports: []model.Port{{Name: "udp", Port: 7000, Protocol: model.ProtocolUDP}},
			Endpoints: []*model.Endpoint{{Address: e.podB.IP.String(), Ready: true, Node: e.podB.Node, Workload: e.podB.Namespace + "/" + e.podB.Name,
				Identity: workload(m, e.podB.Name).Identity}},
		})
	})
	strictTCP := fib.PolicyEntry{Key: fib.PolicyKey{Addr: e.podB.IP, Port: port, Proto: fib.ProtoTCP}, Mode: fib.ModeStrict}
	strictUDP := fib.PolicyEntry{Key: fib.PolicyKey{Addr: e.podB.IP, Port: 7000, Proto: fib.ProtoUDP}, Mode: fib.ModeStrict}
	testenv.Until(t, 5*time.Second, "condition", func() bool { return hasPolicy(t, e.nodes[1], strictTCP) && hasPolicy(t, e.nodes[1], strictUDP) })
	before := snap(t, e.nodes)
	if c, err := dialTCP(e.podA, addr, 1500*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("plaintext connection to a STRICT port succeeded")
	}
	after := snap(t, e.nodes)
	if d := after.delta(before, 1, fib.ReasonDropStrict); d == 0 {
		t.Errorf("node2 drop_strict_plaintext did not rise")
	}
	if d := after.fwd[1] - before.fwd[1]; d != 0 {
		t.Errorf("node2 kernel forwarded %d packets of a STRICT flow", d)
	}

	// UDP STRICT: nothing arrives, every datagram is counted.
	var rx *net.UDPConn
	inPod(t, e.podB, func() (err error) {
		rx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: e.podB.IP.AsSlice(), Port: 7000})
		return err
	})
	defer rx.Close()
	before = snap(t, e.nodes)
	var tx *net.UDPConn
	inPod(t, e.podA, func() (err error) {
		tx, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: e.podB.IP.AsSlice(), Port: 7000})
		return err
	})
	defer tx.Close()
	for range 10 {
		tx.Write([]byte("plaintext"))
	}
	// The sender's datagrams have left pod A once node1 has redirected
	// them; node2 must have dropped exactly those.
	testenv.Until(t, 5*time.Second, "condition", func() bool { return snap(t, e.nodes).delta(before, 1, fib.ReasonDropStrict) >= 10 })
	if d := snap(t, e.nodes).delta(before, 1, fib.ReasonDropStrict); d != 10 {
		t.Errorf("node2 drop_strict_plaintext rose by %d; want 10", d)
	}
	rx.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := rx.Read(make([]byte, 64)); err == nil {
		t.Error("a datagram to a STRICT UDP port arrived")
	}

	// Other ports of the same pod are untouched.
	udpExchange(t, e.podA, e.podB, 7001, 10)
}

func TestPuntDecidesAndReinjects(t *testing.T) {
	// node1's agent punts new flows to node2's pod CIDR.
	testenv.NeedRoot(t)
	e := setupPerNode(t, []string{"--punt", "10.200.2.0/24"}, nil)
	before := snap(t, e.nodes)
	// The first datagram is punted; once it has arrived the agent has
	// installed the flow (it installs before it re-injects), and the
	// other 49 stay in XDP.
	udpExchange(t, e.podA, e.podB, 6000, 1, 50)
	after := snap(t, e.nodes)
	if d := after.delta(before, 0, fib.ReasonPunt); d != 1 {
		t.Errorf("node1 punted %d packets; want 1 (the flow's first)", d)
	}
	if d := after.delta(before, 0, fib.ReasonRedirect); d != 49 {
		t.Errorf("node1 redirected %d packets; want 49 (all but the punted one)", d)
	}
	if d := after.fwd[0] - before.fwd[0]; d != 0 {
		t.Errorf("node1 kernel forwarded %d packets; want 0", d)
	}
	// The agent logs its decision before it installs the flow; the log
	// reaches us through a pipe.
	testenv.Until(t, 5*time.Second, "condition", func() bool { return strings.Contains(e.agents[0].log.String(), "punt decision") })
	f, err := fib.OpenPinned(pinDir(e.nodes[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flows, err := f.Flows.List()
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, fl := range flows {
		if fl.Key.Dst == e.podB.IP && fl.Key.DstPort == 6000 && fl.Key.Proto == fib.ProtoUDP {
			found = true
			if fl.Flow.Action != fib.ActionForward || fl.Flow.Packets != 49 {
				t.Errorf("flow %s: action %s, %d packets; want forward, 49", fl.Key, fl.Flow.Action, fl.Flow.Packets)
			}
		}
	}
	if !found {
		t.Errorf("no flow entry installed for the punted flow; flows: %v", flows)
	}

	// Fail closed: with node1's agent stopped, a new flow that needs a
	// decision is dropped in XDP, not passed to the kernel in the clear.
	e.agents[0].stop()
	before = snap(t, e.nodes)
	var tx *net.UDPConn
	inPod(t, e.podA, func() (err error) {
		tx, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: e.podB.IP.AsSlice(), Port: 6001})
		return err
	})
	defer tx.Close()
	for range 5 {
		tx.Write([]byte("no agent"))
	}
	testenv.Until(t, 5*time.Second, "condition", func() bool { return snap(t, e.nodes).delta(before, 0, fib.ReasonDropPuntNoSocket) >= 5 })
	after = snap(t, e.nodes)
	if d := after.fwd[0] - before.fwd[0]; d != 0 {
		t.Errorf("node1 kernel forwarded %d packets with its agent down; want 0", d)
	}
}

func TestAgentRestartKeepsTCPConnection(t *testing.T) {
	e := setup(t)
	var ln net.Listener
	inPod(t, e.podB, func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(e.podB.IP, 9000).String())
		return err
	})
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c) // echo
	}()
	c, err := dialTCP(e.podA, ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Traffic runs the whole time: one echo round trip after another.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var rounds sync.WaitGroup
	var mu sync.Mutex
	var echoes int
	var echoErr error
	rounds.Add(1)
	go func() {
		defer rounds.Done()
		buf := make([]byte, 16)
		for i := 0; ctx.Err() == nil; i++ {
			msg := fmt.Sprintf("msg %08d", i)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte(msg)); err != nil {
				mu.Lock()
				echoErr = err
				mu.Unlock()
				return
			}
			if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil || string(buf[:len(msg)]) != msg {
				mu.Lock()
				echoErr = fmt.Errorf("echo %d: %q, %v", i, buf[:len(msg)], err)
				mu.Unlock()
				return
			}
			mu.Lock()
			echoes++
			mu.Unlock()
		}
	}()
	progress := func() int { mu.Lock(); defer mu.Unlock(); return echoes }
	alive := func(what string) {
		t.Helper()
		n := progress()
		testenv.Until(t, 5*time.Second, "condition", func() bool { return progress() >= n+100 })
		mu.Lock()
		defer mu.Unlock()
		if echoErr != nil {
			t.Fatalf("%s: connection broke: %v", what, echoErr)
		}
	}
	alive("before restart")

	before := snap(t, e.nodes)
	e.agents[0].kill() // SIGKILL: no clean shutdown
	alive("agent down")
	down := snap(t, e.nodes)
	if d := down.delta(before, 0, fib.ReasonRedirect); d < 200 {
		t.Errorf("node1 redirected only %d packets while its agent was down", d)
	}
	e.agents[0] = startAgent(t, e, e.nodes[0])
	alive("after restart")
	after := snap(t, e.nodes)
	if d := after.fwd[0] - before.fwd[0]; d != 0 {
		t.Errorf("node1 kernel forwarded %d packets across the restart; want 0 (XDP never stopped)", d)
	}
	cancel()
	rounds.Wait()
	if echoErr != nil {
		t.Fatal(echoErr)
	}
	// It re-read its pinned FIB: the controller's tables were already
	// programmed, so it wrote nothing.
	var f admin.FIB
	adminJSON(t, e.nodes[0], "/fib", &f)
	if f.Writes != (admin.Writes{}) {
		t.Errorf("restarted agent wrote %+v to a FIB that already held its tables; want nothing", f.Writes)
	}
}
