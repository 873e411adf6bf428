package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/agent/reconcile"
	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/echo"
	"github.com/fibmesh/fibmesh/lab/kubelet"
)

const servicesPrefix = "fm-sv-"

// The service VIPs of servicesLab.
var (
	lbVIP       = netip.MustParseAddr("10.96.50.10")
	lbNobodyVIP = netip.MustParseAddr("10.96.50.20")
)

// backendPod is one backend of the echo Service: a TCP echo (HTTP) on
// 8080 and a UDP echo on 7777, in the mesh (captured), on node.
func backendPod(name, node string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: lb
  labels: {app: echo}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers:
  - name: http
    command: [fibmesh-lab, app, echo, --port, "8080", --name, echo]
  - name: udp
    command: [fibmesh-lab, app, udp-echo, --port, "7777", --name, echo]
`, name, node)
}

// servicesLab: a client pod outside the mesh on node1, and the echo
// Service (a UDP and a TCP port) with three backends, one on node1 and
// two on node2, each in a file of its own so that one can be removed;
// the nobody Service selects no pod.
var servicesLab = map[string]string{
	"namespace.yaml": `apiVersion: v1
kind: Namespace
metadata:
  name: lb
`,
	"client.yaml": `apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: lb
  labels: {app: client, fibmesh.io/capture: disabled}
spec:
  nodeName: node1
  containers:
  - name: idle
    command: [fibmesh-lab, app, udp-echo, --port, "9999"]
`,
	"backend-a.yaml": backendPod("echo-a", "node1"),
	"backend-b.yaml": backendPod("echo-b", "node2"),
	"backend-c.yaml": backendPod("echo-c", "node2"),
	"services.yaml": `apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: lb
spec:
  clusterIP: 10.96.50.10
  selector: {app: echo}
  ports:
  - {name: udp, port: 7777, protocol: UDP, targetPort: 7777}
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: nobody
  namespace: lb
spec:
  clusterIP: 10.96.50.20
  selector: {app: nobody}
  ports:
  - {name: udp, port: 7777, protocol: UDP, targetPort: 7777}
  - {name: http, port: 80, targetPort: 8080}
`,
}

// udpFlow is one client socket to a UDP VIP: one flow, its source port
// fixed for the test.
type udpFlow struct {
	c   *net.UDPConn
	key fib.FlowKey // as the client sends it: to the VIP
}

// exchange sends one datagram on f and returns the reply; UDP may lose
// a datagram, so it sends again (same socket, same flow) after a second
// without an answer.
func (f *udpFlow) exchange(payload string) (echo.UDPReply, error) {
	var rep echo.UDPReply
	buf := make([]byte, 2048)
	var err error
	for range 5 {
		if _, err = f.c.Write([]byte(payload)); err != nil {
			return rep, err
		}
		f.c.SetReadDeadline(time.Now().Add(time.Second))
		var n int
		n, err = f.c.Read(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		if err != nil {
			return rep, err
		}
		if err := json.Unmarshal(buf[:n], &rep); err != nil {
			return rep, fmt.Errorf("reply %q: %w", buf[:n], err)
		}
		if string(rep.Data) != payload {
			return rep, fmt.Errorf("reply %+v: data %q, want %q", rep, rep.Data, payload)
		}
		return rep, nil
	}
	return rep, fmt.Errorf("no reply to 5 datagrams: %w", err)
}

// dialUDP opens n UDP sockets in netns to vip:port, each on a source port
// of its own.
func dialUDP(t *testing.T, netns string, src netip.Addr, vip netip.AddrPort, n int) []*udpFlow {
	t.Helper()
	flows := make([]*udpFlow, 0, n)
	t.Cleanup(func() {
		for _, f := range flows {
			f.c.Close()
		}
	})
	err := lab.InNetns(netns, func() error {
		for range n {
			c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(vip))
			if err != nil {
				return err
			}
			local := c.LocalAddr().(*net.UDPAddr).AddrPort()
			flows = append(flows, &udpFlow{c: c, key: fib.FlowKey{Src: src, Dst: vip.Addr(), SrcPort: local.Port(), DstPort: vip.Port(), Proto: fib.ProtoUDP}})
		}
		return nil
	})
	if err != nil {
		t.Fatalf("UDP sockets in %s to %s: %v", netns, vip, err)
	}
	return flows
}

// exchangeAll runs one exchange on every flow, 16 at a time, and returns
// the address of the backend pod that answered each.
func exchangeAll(t *testing.T, flows []*udpFlow, payload string, pods map[string]netip.Addr) []netip.Addr {
	t.Helper()
	got := make([]netip.Addr, len(flows))
	errs := make([]error, len(flows))
	var wg sync.WaitGroup
	next := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				f := flows[i]
				rep, err := f.exchange(fmt.Sprintf("%s %d", payload, i))
				switch {
				case err != nil:
					errs[i] = err
				case rep.Peer != netip.AddrPortFrom(f.key.Src, f.key.SrcPort).String():
					errs[i] = fmt.Errorf("the backend saw the client as %s, want %s:%d (DNAT only, no SNAT)", rep.Peer, f.key.Src, f.key.SrcPort)
				default:
					ip, ok := pods[rep.Pod]
					if !ok {
						errs[i] = fmt.Errorf("answered by %q, not a backend pod", rep.Pod)
					}
					got[i] = ip
				}
			}
		})
	}
	for i := range flows {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		n := 0
		for _, e := range errs {
			if e != nil {
				n++
			}
		}
		t.Fatalf("%d of %d flows failed; the first ones: %.2000s", n, len(flows), err)
	}
	return got
}

// serviceTable reads a service's Maglev table from f, waiting until ok
// accepts it.
func serviceTable(t *testing.T, f *fib.FIB, k fib.ServiceKey, what string, ok func([]fib.Backend) error) []fib.Backend {
	t.Helper()
	var table []fib.Backend
	testenv.Eventually(t, 20*time.Second, what, func() error {
		var held bool
		var err error
		table, held, err = f.Services.Get(k)
		if err != nil {
			return err
		}
		if !held {
			return fmt.Errorf("no table for %s in the FIB", k)
		}
		return ok(table)
	})
	return table
}

// backendsAre checks that a table holds exactly the backends want.
func backendsAre(want ...netip.Addr) func([]fib.Backend) error {
	return func(table []fib.Backend) error {
		bs, _, _ := reconcile.TableShares(table)
		var got []netip.Addr
		for _, b := range bs {
			got = append(got, b.Addr)
		}
		if fmt.Sprint(got) != fmt.Sprint(sortedAddrs(want)) {
			return fmt.Errorf("table of %d slots over %v, want %v", len(table), got, sortedAddrs(want))
		}
		return nil
	}
}

func sortedAddrs(as []netip.Addr) []netip.Addr {
	out := slices.Clone(as)
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func pick(table []fib.Backend, k fib.FlowKey) fib.Backend {
	b, _ := fib.Pick(table, k)
	return b
}

// TestServices: the XDP FIB is the node's service load balancer. A pod
// outside the mesh reaches a TCP and a UDP ClusterIP; 1,000 UDP flows
// land each on the backend the VIP's Maglev table names for its hash,
// spread as the table's shares say; a backend removed from the manifest
// directory takes exactly its flows away to the others; a VIP without a
// ready backend answers ICMP port unreachable and TCP RST, counted;
// fibctl services shows it all; and a restarted agent writes no table
// while every flow keeps its backend.
func TestServices(t *testing.T) {
	l := upMesh(t, servicesPrefix, servicesLab)
	f1 := l.fib(t, "node1")
	client := l.pod(t, "lb", "client")
	clientIP := netip.MustParseAddr(client.IP)
	pods := map[string]netip.Addr{}
	for _, n := range []string{"echo-a", "echo-b", "echo-c"} {
		pods[n] = netip.MustParseAddr(l.pod(t, "lb", n).IP)
	}
	udpKey := fib.ServiceKey{VIP: lbVIP, Port: 7777, Proto: fib.ProtoUDP}
	tcpKey := fib.ServiceKey{VIP: lbVIP, Port: 80, Proto: fib.ProtoTCP}
	all := backendsAre(pods["echo-a"], pods["echo-b"], pods["echo-c"])
	serviceTable(t, f1, udpKey, "node1's table of the UDP VIP with the three backends", all)
	serviceTable(t, f1, tcpKey, "node1's table of the TCP VIP with the three backends", all)

	t.Run("ClusterIP", func(t *testing.T) {
		// TCP: HTTP through the VIP, several connections (several
		// source ports, so the backends vary).
		c := kubelet.NetnsHTTPClient(client.Netns, 5*time.Second)
		seen := map[string]bool{}
		for range 6 {
			resp, err := c.Get("http://" + netip.AddrPortFrom(lbVIP, 80).String() + "/hi")
			if err != nil {
				t.Fatalf("GET the TCP ClusterIP from %s (outside the mesh): %v", client.Name, err)
			}
			var rep echo.Reply
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err := json.Unmarshal(b, &rep); err != nil || resp.StatusCode != 200 {
				t.Fatalf("GET the TCP ClusterIP: %s %v\n%s", resp.Status, err, b)
			}
			if _, ok := pods[rep.Pod]; !ok {
				t.Fatalf("the TCP ClusterIP was answered by %q, not a backend", rep.Pod)
			}
			seen[rep.Pod] = true
		}
		// UDP: one datagram, answered by a backend that saw the client.
		f := dialUDP(t, client.Netns, clientIP, netip.AddrPortFrom(lbVIP, 7777), 1)
		got := exchangeAll(t, f, "hello", pods)
		t.Logf("TCP ClusterIP answered by %v; UDP ClusterIP by %s", seen, got[0])
	})

	t.Run("NoBackend", func(t *testing.T) {
		serviceTable(t, f1, fib.ServiceKey{VIP: lbNobodyVIP, Port: 7777, Proto: fib.ProtoUDP}, "nobody's empty UDP table",
			func(tb []fib.Backend) error { return emptyTable(tb) })
		serviceTable(t, f1, fib.ServiceKey{VIP: lbNobodyVIP, Port: 80, Proto: fib.ProtoTCP}, "nobody's empty TCP table",
			func(tb []fib.Backend) error { return emptyTable(tb) })
		// Three rounds of a datagram (a fresh socket each) and a
		// connect: every one refused, each answer counted once (a SYN
		// retransmitted for want of an answer would count twice).
		const rounds = 3
		before := readStats(t, f1)
		err := lab.InNetns(client.Netns, func() error {
			for r := range rounds {
				start := time.Now()
				c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(lbNobodyVIP, 7777)))
				if err != nil {
					return err
				}
				if _, err := c.Write([]byte("anyone?")); err != nil {
					c.Close()
					return err
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err = c.Read(make([]byte, 64))
				c.Close()
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Errorf("round %d: UDP to a VIP without backends: read %v, want ECONNREFUSED (ICMP port unreachable)", r, err)
				}
				udpTook := time.Since(start)
				start = time.Now()
				tc, err := net.DialTimeout("tcp4", netip.AddrPortFrom(lbNobodyVIP, 80).String(), 5*time.Second)
				if err == nil {
					tc.Close()
				}
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Errorf("round %d: TCP connect to a VIP without backends: %v, want ECONNREFUSED (RST)", r, err)
				}
				t.Logf("round %d: UDP refused after %v, TCP after %v", r, udpTook.Round(time.Microsecond), time.Since(start).Round(time.Microsecond))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		after := readStats(t, f1)
		answered := after[fib.ReasonServiceNoBackend].Packets - before[fib.ReasonServiceNoBackend].Packets
		dropped := after[fib.ReasonDropServiceNoBackend].Packets - before[fib.ReasonDropServiceNoBackend].Packets
		if answered != 2*rounds || dropped != 0 {
			t.Errorf("node1's counters: %s +%d, %s +%d; want +%d (each datagram and SYN answered once) and +0",
				fib.ReasonServiceNoBackend, answered, fib.ReasonDropServiceNoBackend, dropped, 2*rounds)
		}
	})

	// 1,000 UDP flows, their sockets kept for BackendRemoved.
	flows := dialUDP(t, client.Netns, clientIP, netip.AddrPortFrom(lbVIP, 7777), 1000)
	var table []fib.Backend
	var first []netip.Addr
	ok := t.Run("Spread", func(t *testing.T) {
		table = serviceTable(t, f1, udpKey, "the UDP VIP's table", all)
		first = exchangeAll(t, flows, "spread", pods)
		counts := map[netip.Addr]int{}
		for i, f := range flows {
			if want := pick(table, f.key).Addr; first[i] != want {
				t.Errorf("flow %s landed on %s; the table read from the FIB names %s (FlowHash %d %% %d)", f.key, first[i], want, fib.FlowHash(f.key), len(table))
			}
			counts[first[i]]++
		}
		bs, slots, shares := reconcile.TableShares(table)
		for i, b := range bs {
			// Within 4.5 standard deviations of a binomial draw with the
			// table's share: the hash spreads source ports evenly.
			want := float64(len(flows)) * shares[i]
			sd := math.Sqrt(want * (1 - shares[i]))
			t.Logf("backend %s: %d of %d flows; Maglev share %.4f (%d of %d slots): %.1f expected",
				b.Addr, counts[b.Addr], len(flows), shares[i], slots[i], len(table), want)
			if math.Abs(float64(counts[b.Addr])-want) > 4.5*sd {
				t.Errorf("backend %s: %d flows, more than 4.5 sd (%.1f) from its share's %.1f", b.Addr, counts[b.Addr], sd, want)
			}
		}
	})
	if ok {
		t.Run("fibctl", func(t *testing.T) { checkFibctlServices(t, l, table, flows, first, pods) })
	}
	if !ok {
		return
	}

	t.Run("BackendRemoved", func(t *testing.T) {
		gone := pods["echo-c"]
		// Every flow entry node1's FIB translates to echo-c, of both
		// its ports (the UDP ones and those of ClusterIP): the agent
		// moves them all, and counts them.
		onGone := 0
		es, err := f1.Flows.List()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if e.Flow.NATKind == fib.NATDst && e.Flow.NAT.Addr() == gone {
				onGone++
			}
		}
		movedBefore := agentWrites(t, l, "node1").FlowsMoved
		l.remove(t, "backend-c.yaml")
		newTable := serviceTable(t, f1, udpKey, "the UDP VIP's table without echo-c", backendsAre(pods["echo-a"], pods["echo-b"]))
		testenv.Eventually(t, 10*time.Second, "echo-c's flows gone from node1's flow table", func() error {
			es, err := f1.Flows.List()
			if err != nil {
				return err
			}
			n := 0
			for _, e := range es {
				if e.Flow.NATKind == fib.NATDst && e.Flow.NAT.Addr() == gone {
					n++
				}
			}
			if n > 0 {
				return fmt.Errorf("%d flow entries still translate to %s", n, gone)
			}
			return nil
		})
		// The same 1,000 flows again: echo-c's pick again from the new
		// table; every other flow keeps its backend, even where the new
		// table would name another.
		again := exchangeAll(t, flows, "again", pods)
		moved, kept, keptAgainstTable := 0, 0, 0
		for i, f := range flows {
			switch {
			case first[i] == gone:
				moved++
				if want := pick(newTable, f.key).Addr; again[i] != want {
					t.Errorf("flow %s was on the removed backend: now on %s, the new table names %s", f.key, again[i], want)
				}
			case again[i] != first[i]:
				t.Errorf("flow %s moved from %s to %s: its backend stayed", f.key, first[i], again[i])
			default:
				kept++
				if pick(newTable, f.key).Addr != first[i] {
					keptAgainstTable++
				}
			}
		}
		t.Logf("backend %s removed: %d flows moved to the others, %d kept their backend (%d of them where the new table names another: affinity)",
			gone, moved, kept, keptAgainstTable)
		if moved == 0 {
			t.Error("no flow was on the removed backend: the test proves nothing")
		}
		if w := agentWrites(t, l, "node1").FlowsMoved - movedBefore; w != uint64(onGone) {
			t.Errorf("node1's agent counts %d flows moved, want the %d entries that translated to %s", w, onGone, gone)
		}
		first = again
	})

	// The agent killed: its successor reads the pinned tables back and
	// writes none, and every flow keeps its backend.
	t.Run("AgentRestarted", func(t *testing.T) {
		agent := l.process(t, "agent-node1")
		if err := syscall.Kill(agent.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 20*time.Second, "the lab restarted node1's agent", func() error {
			if p := l.process(t, "agent-node1"); p.PID == agent.PID || p.State != "Running" {
				return fmt.Errorf("agent-node1: %s pid %d", p.State, p.PID)
			}
			return nil
		})
		l.agentReady(t, "node1", 20*time.Second)
		if w := agentWrites(t, l, "node1"); w.ServicePuts != 0 || w.ServiceDeletes != 0 || w.FlowsMoved != 0 {
			t.Errorf("the restarted agent wrote %+v: it did not start from the pinned service tables", w)
		}
		after := exchangeAll(t, flows, "after", pods)
		for i, f := range flows {
			if after[i] != first[i] {
				t.Errorf("flow %s moved from %s to %s across the agent's restart", f.key, first[i], after[i])
			}
		}
	})
}

// agentWrites is node's agent's count of map writes (admin API /fib).
func agentWrites(t *testing.T, l *meshLab, node string) admin.Writes {
	t.Helper()
	var f admin.FIB
	if err := json.Unmarshal(l.get(t, l.nodeNetns(node), "http://"+kubelet.AgentAdmin+"/fib"), &f); err != nil {
		t.Fatal(err)
	}
	return f.Writes
}

func emptyTable(tb []fib.Backend) error {
	if len(tb) != 0 {
		return fmt.Errorf("%d slots, want none", len(tb))
	}
	return nil
}

func readStats(t *testing.T, f *fib.FIB) []fib.Counter {
	t.Helper()
	cs, err := f.Stats.Read()
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// checkFibctlServices runs fibctl services on node1 as a user would and
// checks it against the table read from the FIB and the flows the test
// made.
func checkFibctlServices(t *testing.T, l *meshLab, table []fib.Backend, flows []*udpFlow, landed []netip.Addr, pods map[string]netip.Addr) {
	fibctl := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(filepath.Join(binDir, "fibctl"), append([]string{"--node", l.nodeNetns("node1")}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("fibctl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return out
	}
	var svcs []admin.Service
	if err := json.Unmarshal(fibctl("services", "-o", "json", lbVIP.String()), &svcs); err != nil {
		t.Fatal(err)
	}
	var udp *admin.Service
	for i := range svcs {
		if svcs[i].Port == 7777 && svcs[i].Proto == "udp" {
			udp = &svcs[i]
		}
	}
	if udp == nil || len(svcs) != 2 {
		t.Fatalf("fibctl services %s: %+v, want its UDP and TCP ports", lbVIP, svcs)
	}
	counts := map[netip.Addr]int{}
	for _, a := range landed {
		counts[a]++
	}
	bs, slots, shares := reconcile.TableShares(table)
	if udp.Hostname != "echo.lb.svc.cluster.local" || udp.Slots != len(table) || len(udp.Backends) != len(bs) || udp.Flows < len(flows) {
		t.Fatalf("fibctl services: %+v, want echo.lb.svc.cluster.local with %d slots over %d backends, %d flows or more", udp, len(table), len(bs), len(flows))
	}
	nodeOf := map[netip.Addr]string{pods["echo-a"]: "node1", pods["echo-b"]: "node2", pods["echo-c"]: "node2"}
	for i, b := range udp.Backends {
		// Flows per backend: the 1,000 of Spread, and the one of ClusterIP
		// on whichever backend it landed.
		if b.Addr != bs[i].AddrPort() || b.Weight != 1 || b.Slots != slots[i] || math.Abs(b.Share-shares[i]) > 1e-9 ||
			b.Node != nodeOf[b.Addr.Addr()] || (b.Flows != counts[b.Addr.Addr()] && b.Flows != counts[b.Addr.Addr()]+1) {
			t.Errorf("fibctl services: backend %+v; want %s on %s, weight 1, %d slots, share %.4f, %d flows (+1 from ClusterIP)",
				b, bs[i], nodeOf[bs[i].Addr], slots[i], shares[i], counts[bs[i].Addr])
		}
	}
	tableOut := string(fibctl("services"))
	for _, want := range []string{
		"SERVICE                      VIP               PROTO  BACKEND                          NODE   WEIGHT  SHARE  FLOWS\n",
		fmt.Sprintf("echo.lb.svc.cluster.local    %s:7777  udp    %s:7777", lbVIP, bs[0].Addr),
		fmt.Sprintf("nobody.lb.svc.cluster.local  %s:7777  udp    none: answered ICMP unreachable", lbNobodyVIP),
		fmt.Sprintf("nobody.lb.svc.cluster.local  %s:80    tcp    none: answered TCP RST", lbNobodyVIP),
	} {
		if !strings.Contains(tableOut, want) {
			t.Errorf("fibctl services lacks %q:\n%s", want, tableOut)
		}
	}
	t.Logf("fibctl --node %s services:\n%s", l.nodeNetns("node1"), tableOut)
}
