package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/echo"
)

// puntMesh is the L4-policy punt test's mesh: a UDP echo (namespace
// echo, node1, port 7777 behind a Service, ClusterIP puntVIP) that an
// AuthorizationPolicy lets only namespace front call; a client in front
// (node2: its packets reach node1 through the fabric) and one in back
// (node1: through node1's own veths).
var puntMesh = map[string]string{
	"namespaces.yaml": `apiVersion: v1
kind: Namespace
metadata: {name: echo}
---
apiVersion: v1
kind: Namespace
metadata: {name: front}
---
apiVersion: v1
kind: Namespace
metadata: {name: back}
`,
	"udpecho.yaml": `apiVersion: v1
kind: Pod
metadata:
  name: udpecho
  namespace: echo
  labels: {app: udpecho}
spec:
  nodeName: node1
  containers:
  - name: echo
    command: [fibmesh-lab, app, udp-echo, --port, "7777"]
---
apiVersion: v1
kind: Service
metadata: {name: udpecho, namespace: echo}
spec:
  clusterIP: 10.96.77.7
  selector: {app: udpecho}
  ports:
  - {name: udp-echo, port: 7777, targetPort: 7777, protocol: UDP}
`,
	"clients.yaml": manifests(
		echoPod{namespace: "front", name: "client", node: "node2", port: 8080}.yaml(),
		echoPod{namespace: "back", name: "client", node: "node1", port: 8080}.yaml()),
	"policy.yaml": puntPolicy("front"),
}

// puntVIP is the echo Service's ClusterIP and port.
var puntVIP = netip.MustParseAddrPort("10.96.77.7:7777")

// puntPolicy lets namespace ns, only, send UDP to the echo.
func puntPolicy(ns string) string {
	return fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: udpecho-callers, namespace: echo}
spec:
  selector:
    matchLabels: {app: udpecho}
  action: ALLOW
  rules:
  - from:
    - source:
        namespaces: [%q]
    to:
    - operation:
        ports: ["7777"]
`, ns)
}

// puntFlow is a UDP socket in a pod's network namespace connected to the
// echo: one 5-tuple, so one flow, for the whole test.
type puntFlow struct {
	c   *net.UDPConn
	key fib.FlowKey // as the client sends it
}

func dialPuntFlow(t *testing.T, l *meshLab, ns, pod string, to netip.AddrPort) *puntFlow {
	t.Helper()
	p := l.pod(t, ns, pod)
	var c *net.UDPConn
	if err := lab.InNetns(p.Netns, func() (err error) {
		c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(to))
		return err
	}); err != nil {
		t.Fatalf("UDP socket in %s/%s: %v", ns, pod, err)
	}
	t.Cleanup(func() { c.Close() })
	from := c.LocalAddr().(*net.UDPAddr).AddrPort()
	src, err := netip.ParseAddr(p.IP)
	if err != nil {
		t.Fatalf("pod %s/%s IP %q: %v", ns, pod, p.IP, err)
	}
	return &puntFlow{c: c, key: fib.FlowKey{Src: src, Dst: to.Addr(), SrcPort: from.Port(), DstPort: to.Port(), Proto: fib.ProtoUDP}}
}

// errPuntNoReply: nothing came back within the wait.
var errPuntNoReply = errors.New("no reply")

// echo sends msg and waits up to wait for the echo's answer, which must
// carry msg and name the flow's own source (no translation on the way).
func (f *puntFlow) echo(msg string, wait time.Duration) error {
	if _, err := f.c.Write([]byte(msg)); err != nil {
		return err
	}
	f.c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 4096)
	n, err := f.c.Read(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return errPuntNoReply
	}
	if err != nil {
		return err
	}
	var rep echo.UDPReply
	if err := json.Unmarshal(buf[:n], &rep); err != nil {
		return fmt.Errorf("reply %q: %w", buf[:n], err)
	}
	if string(rep.Data) != msg || rep.Peer != netip.AddrPortFrom(f.key.Src, f.key.SrcPort).String() {
		return fmt.Errorf("reply %+v: want data %q from peer %s:%d", rep, msg, f.key.Src, f.key.SrcPort)
	}
	return nil
}

// puntCounts is what node1 counted of punts: the FIB's punted and
// flow-dropped packets, the agent's verdicts, re-injected packets and
// re-decided flows.
type puntCounts struct {
	Punted, DroppedByFlow                 uint64
	Allowed, Denied, Reinjected, Redecide float64
}

func (l *meshLab) puntCounts(t *testing.T, node string, f *fib.FIB) puntCounts {
	t.Helper()
	cs, err := f.Stats.Read()
	if err != nil {
		t.Fatalf("%s's FIB stats: %v", node, err)
	}
	series := l.agentSeries(t, node)
	return puntCounts{
		Punted: cs[fib.ReasonPunt].Packets, DroppedByFlow: cs[fib.ReasonDropFlow].Packets,
		Allowed:    series[`fibmesh_agent_punt_verdicts_total{verdict="allow"}`],
		Denied:     series[`fibmesh_agent_punt_verdicts_total{verdict="deny"}`],
		Reinjected: series[`fibmesh_agent_punt_packets_total{result="reinjected"}`],
		Redecide:   series[`fibmesh_agent_punt_flows_redecided_total`],
	}
}

// sub is c - base.
func (c puntCounts) sub(base puntCounts) puntCounts {
	return puntCounts{c.Punted - base.Punted, c.DroppedByFlow - base.DroppedByFlow,
		c.Allowed - base.Allowed, c.Denied - base.Denied, c.Reinjected - base.Reinjected, c.Redecide - base.Redecide}
}

// agentSeries reads node's agent /metrics: series (name{labels}) to
// value.
func (l *meshLab) agentSeries(t *testing.T, node string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(l.get(t, l.nodeNetns(node), "http://127.0.0.1:15090/metrics"))))
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if strings.HasPrefix(line, "#") || i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestPuntL4Policy: UDP to a port an AuthorizationPolicy covers is
// punted on its first packet and decided by the echo node's agent; the
// allowed source's flows pass (forward entries both ways), the denied
// one's are dropped after exactly one punt each (later packets by their
// drop entries in XDP); then a policy edit flips both verdicts, and each
// flow follows: its entries are deleted, its next packet punted once and
// decided by the new policy. Each client has a flow to the echo's pod IP
// and one to its Service's VIP: back's VIP flow (node1) is translated by
// node1's FIB and punted translated; front's (node2) is translated by
// node2's and punted by node1's like a direct flow.
func TestPuntL4Policy(t *testing.T) {
	l, _ := upMeshReady(t, "fm-pu-", puntMesh, 60*time.Second, "--backoff-base", "1s")
	echoAddr := podAddr(t, l, "echo", "udpecho", 7777)
	f1 := l.fib(t, "node1")
	testenv.Eventually(t, 60*time.Second, "the echo's UDP port covered by L4 policy in node1's FIB", func() error {
		for _, p := range l.status(t).Pods {
			if !p.Started {
				return fmt.Errorf("pod %s/%s: %s", p.Namespace, p.Name, p.Waiting)
			}
		}
		ps, err := f1.Policy.List()
		if err != nil {
			return err
		}
		for _, p := range ps {
			if p.Key == (fib.PolicyKey{Addr: echoAddr.Addr(), Port: 7777, Proto: fib.ProtoUDP}) && p.Punt {
				return nil
			}
		}
		return fmt.Errorf("no punt entry for %s/udp in %v", echoAddr, ps)
	})
	front, frontVIP := dialPuntFlow(t, l, "front", "client", echoAddr), dialPuntFlow(t, l, "front", "client", puntVIP)
	back, backVIP := dialPuntFlow(t, l, "back", "client", echoAddr), dialPuntFlow(t, l, "back", "client", puntVIP)
	flow := func(k fib.FlowKey) (fib.Flow, bool) {
		t.Helper()
		fl, ok, err := f1.Flows.Get(k)
		if err != nil {
			t.Fatalf("flow %s: %v", k, err)
		}
		return fl, ok
	}
	wantEntry := func(k fib.FlowKey, want fib.Action) {
		t.Helper()
		if fl, ok := flow(k); !ok || fl.Action != want {
			t.Errorf("node1's entry for %s: %v (present %t), want %v", k, fl.Action, ok, want)
		}
	}
	wantNoEntry := func(k fib.FlowKey) {
		t.Helper()
		if fl, ok := flow(k); ok {
			t.Errorf("node1 has an entry for %s (%v); want none", k, fl.Action)
		}
	}
	// passes sends n datagrams on f, each answered; blocked sends n, none
	// answered.
	passes := func(f *puntFlow, what string, n int) {
		t.Helper()
		for i := range n {
			if err := f.echo(fmt.Sprintf("%s %d", what, i), 2*time.Second); err != nil {
				t.Errorf("%s's datagram %d: %v", what, i, err)
			}
		}
	}
	blocked := func(f *puntFlow, what string, n int) {
		t.Helper()
		for i := range n {
			if err := f.echo(fmt.Sprintf("%s %d", what, i), 300*time.Millisecond); !errors.Is(err, errPuntNoReply) {
				t.Errorf("%s's datagram %d: %v; want no reply (denied)", what, i, err)
			}
		}
	}

	base := l.puntCounts(t, "node1", f1)
	// The allowed source: each flow's first datagram is punted and
	// allowed; the echo may not listen yet (the lab starts processes, not
	// probes), so the first answer is waited for.
	testenv.Eventually(t, 20*time.Second, "front's first UDP echo", func() error { return front.echo("front first", time.Second) })
	passes(front, "front", 4)
	passes(frontVIP, "front via the VIP", 5)
	if got := l.puntCounts(t, "node1", f1).sub(base); got != (puntCounts{Punted: 2, Allowed: 2, Reinjected: 2}) {
		t.Errorf("allowed flows: node1 counted %+v; want one punt each, allowed and re-injected", got)
	}
	wantEntry(front.key, fib.ActionForward)
	wantEntry(front.key.Reverse(), fib.ActionForward)

	// The denied source: one punt each, then its drop entries drop in XDP.
	base = l.puntCounts(t, "node1", f1)
	blocked(back, "back", 4)
	blocked(backVIP, "back via the VIP", 4)
	if got := l.puntCounts(t, "node1", f1).sub(base); got != (puntCounts{Punted: 2, DroppedByFlow: 6, Denied: 2}) {
		t.Errorf("denied flows: node1 counted %+v; want one punt each, denied, and the 3 later datagrams of each dropped by the flow entries", got)
	}
	wantEntry(back.key, fib.ActionDrop)
	wantNoEntry(back.key.Reverse())
	wantEntry(backVIP.key, fib.ActionDrop) // the service flow's way out, translated to the echo while allowed

	// The policy now lets back, not front: the four flows are re-decided.
	base = l.puntCounts(t, "node1", f1)
	l.write(t, "policy.yaml", puntPolicy("back"))
	took := testenv.Eventually(t, 30*time.Second, "node1 re-decides the four flows", func() error {
		if got := l.puntCounts(t, "node1", f1).sub(base).Redecide; got < 4 {
			return fmt.Errorf("%v flows re-decided", got)
		}
		return nil
	})
	t.Logf("policy edit: the four flows re-decided after %v", took.Round(time.Millisecond))
	wantNoEntry(front.key)
	wantNoEntry(front.key.Reverse())
	wantNoEntry(back.key)
	wantNoEntry(backVIP.key)
	passes(back, "back again", 3)
	passes(backVIP, "back via the VIP again", 3)
	blocked(front, "front again", 3)
	blocked(frontVIP, "front via the VIP again", 3)
	if got := l.puntCounts(t, "node1", f1).sub(base); got != (puntCounts{Punted: 4, DroppedByFlow: 4, Allowed: 2, Denied: 2, Reinjected: 2, Redecide: 4}) {
		t.Errorf("after the edit: node1 counted %+v; want each flow punted once (back's allowed and re-injected, front's denied), front's 2 later datagrams of each dropped by their entries, 4 flows re-decided", got)
	}
	for _, r := range []string{"malformed", "reinject_error"} {
		if v := l.agentSeries(t, "node1")[`fibmesh_agent_punt_packets_total{result="`+r+`"}`]; v != 0 {
			t.Errorf("node1's fibmesh_agent_punt_packets_total{result=%q} = %v, want 0", r, v)
		}
	}
	wantEntry(back.key, fib.ActionForward)
	wantEntry(back.key.Reverse(), fib.ActionForward)
	wantEntry(backVIP.key, fib.ActionForward)
	wantEntry(front.key, fib.ActionDrop)
}
