package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/fastpath/ktls"
	"github.com/fibmesh/fibmesh/internal/sysbytes"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/internal/vmcheck"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/kubelet"
	"github.com/fibmesh/fibmesh/slowpath"
)

// The offload tests (issue "established mTLS flows leave userspace")
// run one lab: an opaque TCP app pair on two nodes, the client on node1
// and the server on node2, behind a Service of plain TCP ports. The
// server side of the stream port (9100) is the test itself, listening in
// the server pod's namespace, so the test holds both ends of every mesh
// connection and checks both. Where the kernel has kTLS (make vmtest's
// VM) the connections must be offloaded (kTLS + splice, XDP flow entries
// on both nodes); where it has none (the development host) the same
// tests pass in userspace, with the reason shown.

// offloadMesh is the offload tests' manifests.
var offloadMesh = map[string]string{
	"namespaces.yaml": `apiVersion: v1
kind: Namespace
metadata:
  name: offload
`,
	"accounts.yaml": serviceAccounts("offload", "client", "server"),
	"policy.yaml": `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: offload
spec:
  mtls: {mode: STRICT}
`,
	"server.yaml": manifests(
		echoPod{namespace: "offload", name: "server", node: "node2", serviceAccount: "server", port: 9000, ready: true}.yaml(),
		echoService{namespace: "offload", name: "stream", app: "server", clusterIP: "10.96.91.10", ports: []string{"tcp-echo:9000", "tcp-stream:9100"}}.yaml()),
	"client.yaml": echoPod{namespace: "offload", name: "client", node: "node1", serviceAccount: "client", port: 8080}.yaml(),
}

// denyClient is the AuthorizationPolicy TestOffload/Revoke applies: the
// client's identity may no longer call the server.
const denyClient = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-client
  namespace: offload
spec:
  selector:
    matchLabels: {app: server}
  action: DENY
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/offload/sa/client"]
`

const (
	clientID = "spiffe://cluster.local/ns/offload/sa/client"
	serverID = "spiffe://cluster.local/ns/offload/sa/server"
	// streamSize is what TestOffload/Stream sends each way.
	streamSize = 64 << 20
)

var (
	streamVIP = netip.MustParseAddrPort("10.96.91.10:9100")
	echoVIP   = netip.MustParseAddrPort("10.96.91.10:9000")
)

// offloadEnv is the running offload lab.
type offloadEnv struct {
	l              *meshLab
	client, server kubelet.PodStatus
	ln             *net.TCPListener // the stream port, in the server pod
	// offload says whether connections must be offloaded: the kernel
	// has kTLS (always in make vmtest's VM).
	offload bool
	kernel  string
}

// expectOffload probes the kernel's kTLS as the agents do. In the VM a
// kernel without it fails the test: the VM exists to provide it.
func expectOffload(t *testing.T) (bool, string) {
	t.Helper()
	caps, err := ktls.Probe()
	if err != nil {
		t.Fatalf("kTLS probe: %v", err)
	}
	if vmcheck.InVM() && !caps.ULP {
		t.Fatalf("make vmtest's kernel %s has no kTLS (%s): the offload tests need it there", caps.Kernel, caps.ULPError)
	}
	return caps.ULP, caps.Kernel
}

func TestOffload(t *testing.T) {
	testenv.NeedBPFFS(t)
	want, kernel := expectOffload(t)
	l, _ := upMeshReady(t, "fm-e4-", offloadMesh, 60*time.Second, "--backoff-base", "1s")
	e := &offloadEnv{l: l, client: l.pod(t, "offload", "client"), server: l.pod(t, "offload", "server"), offload: want, kernel: kernel}
	err := lab.InNetns(e.server.Netns, func() error {
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{Port: int(streamVIP.Port())})
		e.ln = ln
		return err
	})
	if err != nil {
		t.Fatalf("listen on :%d in the server pod: %v", streamVIP.Port(), err)
	}
	t.Cleanup(func() { e.ln.Close() })
	if want {
		t.Logf("kernel %s has kTLS: connections must be offloaded", kernel)
	} else {
		t.Logf("kernel %s has no kTLS: connections must stay in userspace, saying why", kernel)
	}
	// The mesh is up once the client reaches the server through it.
	l.waitEcho(t, "offload", "client", echoVIP, 60*time.Second)

	// Stream first (the agents' state is fresh), then the short
	// connections, then the revocation, which changes the policy.
	t.Run("Stream", e.testStream)
	t.Run("ShortConns", e.testShortConns)
	t.Run("Revoke", e.testRevoke)
}

// dial connects from the client pod to addr, as its app would.
func (e *offloadEnv) dial(addr netip.AddrPort, timeout time.Duration) (*net.TCPConn, error) {
	var c net.Conn
	err := lab.InNetns(e.client.Netns, func() (err error) {
		c, err = net.DialTimeout("tcp", addr.String(), timeout)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// echoOnce makes one short connection to the echo port: a message there
// and back, then close.
func (e *offloadEnv) echoOnce(i int, timeout time.Duration) error {
	c, err := e.dial(echoVIP, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	return echoOn(c, fmt.Sprintf("~short %08d ~~~~~~~~~~~~~~~~~~~~~~~~~~~~\n", i), timeout)
}

// pair is one mesh connection whose two ends the test holds: cli in the
// client pod, srv in the server pod.
type pair struct {
	cli, srv *net.TCPConn
}

// open connects the client to the stream port through the mesh and
// accepts the server's end; a hello each way proves the path.
func (e *offloadEnv) open(t *testing.T) *pair {
	t.Helper()
	cli, err := e.dial(streamVIP, 10*time.Second)
	if err != nil {
		t.Fatalf("client → %s: %v", streamVIP, err)
	}
	t.Cleanup(func() { cli.Close() })
	// The client's agent connects to the server only once the app has
	// connected to it: the hello makes the accept below return.
	if _, err := cli.Write([]byte("hello from the client\n")); err != nil {
		t.Fatal(err)
	}
	e.ln.SetDeadline(time.Now().Add(30 * time.Second))
	srv, err := e.ln.AcceptTCP()
	if err != nil {
		t.Fatalf("the server's end of the connection: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	for _, hop := range []struct {
		from, to *net.TCPConn
		msg      string
	}{{cli, srv, "hello from the client\n"}, {srv, cli, "hello from the server\n"}} {
		if hop.from == srv {
			if _, err := srv.Write([]byte(hop.msg)); err != nil {
				t.Fatal(err)
			}
		}
		hop.to.SetReadDeadline(time.Now().Add(30 * time.Second))
		got := make([]byte, len(hop.msg))
		if _, err := io.ReadFull(hop.to, got); err != nil || string(got) != hop.msg {
			t.Fatalf("hello: got %q, %v; want %q", got, err, hop.msg)
		}
		hop.to.SetReadDeadline(time.Time{})
	}
	return &pair{cli: cli, srv: srv}
}

// meshConns are a connection's rows on both agents.
type meshConns struct {
	client, server admin.Connection // node1's outbound, node2's inbound
}

// rows finds p's rows: node1's open outbound row to the VIP, node2's by the
// destination port and the peer identity among those not closed (the
// test holds one stream connection at a time).
func (e *offloadEnv) rows(t *testing.T, p *pair) (meshConns, error) {
	t.Helper()
	var m meshConns
	local := p.cli.LocalAddr().(*net.TCPAddr).AddrPort()
	var cs []admin.Connection
	if err := adminJSON(e.l, "node1", "/connections?pod="+url.QueryEscape("offload/client"), &cs); err != nil {
		return m, err
	}
	n := 0
	var seen []string
	for _, c := range cs {
		// The one open outbound row to the VIP (the test holds one
		// stream connection at a time). Not by the source port: after
		// many short connections conntrack's REDIRECT may give this one
		// another (the tuple to the outbound port was still taken by
		// a connection in TIME_WAIT), and a closed row of the last
		// minute may carry the same.
		if c.Direction == "outbound" && c.Destination == streamVIP && c.State != "closed" {
			m.client = c
			n++
		}
		if c.State != "closed" {
			seen = append(seen, fmt.Sprintf("%d %s %s→%s %s", c.ID, c.Direction, c.Source, c.Destination, c.State))
		}
	}
	if n != 1 {
		return m, fmt.Errorf("node1 lists %d open outbound connections to %s (the client is %s), want 1 (of %d rows, open: %s)", n, streamVIP, local, len(cs), strings.Join(seen, "; "))
	}
	cs = nil
	if err := adminJSON(e.l, "node2", "/connections?pod="+url.QueryEscape("offload/server"), &cs); err != nil {
		return m, err
	}
	n = 0
	for _, c := range cs {
		if c.Direction == "inbound" && c.Destination.Port() == streamVIP.Port() && c.PeerIdentity == clientID && c.State != "closed" {
			m.server = c
			n++
		}
	}
	if n != 1 {
		return m, fmt.Errorf("node2 lists %d open inbound connections to port %d from %s, want 1", n, streamVIP.Port(), clientID)
	}
	return m, nil
}

// checkMode says whether a row is in the state the kernel calls for:
// offloaded by splice (or sockmap) with kTLS, or established in
// userspace with a reason.
func (e *offloadEnv) checkMode(node string, c admin.Connection) error {
	if e.offload {
		if c.State != "offloaded" || c.Offload != "splice" && c.Offload != "sockmap" {
			return fmt.Errorf("%s: connection %d is %q, offload %q (%s), want offloaded by splice", node, c.ID, c.State, c.Offload, c.OffloadReason)
		}
		return nil
	}
	if c.State != "established" || c.Offload != "userspace" || c.OffloadReason == "" {
		return fmt.Errorf("%s: connection %d is %q, offload %q, reason %q; want established in userspace with the reason", node, c.ID, c.State, c.Offload, c.OffloadReason)
	}
	return nil
}

// waitMode polls both agents until p's rows are in the expected state.
func (e *offloadEnv) waitMode(t *testing.T, p *pair) meshConns {
	t.Helper()
	var m meshConns
	testenv.Eventually(t, 20*time.Second, "the connection's state on both agents", func() error {
		var err error
		if m, err = e.rows(t, p); err != nil {
			return err
		}
		return errors.Join(e.checkMode("node1", m.client), e.checkMode("node2", m.server))
	})
	return m
}

// payload returns n reproducible random bytes (first byte not an HTTP
// method).
func payload(seed byte, n int) []byte {
	b := make([]byte, n)
	mrand.NewChaCha8([32]byte{seed, 'o', 'f', 'f'}).Read(b)
	b[0] = 0
	return b
}

// stream sends data on w and, at the same time, reads r until it has
// want bytes or an error; it returns what it read, the SHA-256 of it, the
// read error and the write error.
type streamResult struct {
	n        int64
	sum      []byte
	rerr     error
	werr     error
	rerrTime time.Time
}

func stream(c *net.TCPConn, send []byte, want int64, readTimeout time.Duration) <-chan streamResult {
	ch := make(chan streamResult, 1)
	go func() {
		var res streamResult
		werrc := make(chan error, 1)
		go func() {
			_, err := c.Write(send)
			werrc <- err
		}()
		h := sha256.New()
		c.SetReadDeadline(time.Now().Add(readTimeout))
		res.n, res.rerr = io.CopyN(h, c, want)
		res.rerrTime = time.Now()
		res.sum = h.Sum(nil)
		if res.rerr != nil {
			c.SetWriteDeadline(time.Now()) // unblock the writer
		}
		res.werr = <-werrc
		ch <- res
	}()
	return ch
}

func (e *offloadEnv) testStream(t *testing.T) {
	up, down := payload(1, streamSize), payload(2, streamSize)
	wantUp, wantDown := sha256.Sum256(up), sha256.Sum256(down)

	// The fabric carries the tunnel between the nodes: capture it on
	// node2's link, check it is TLS records only and that no window of
	// either payload crosses it in clear.
	// A stream to the tunnel port carries the client's payload, one
	// from it the server's; any other stream is checked for both.
	fw := watchFabric(t, e.l.fabricNetns(), func(src, dst netip.AddrPort) [][]byte {
		switch {
		case dst.Port() == slowpath.TunnelPort:
			return [][]byte{up}
		case src.Port() == slowpath.TunnelPort:
			return [][]byte{down}
		}
		return [][]byte{up, down}
	})

	p := e.open(t)
	e.waitMode(t, p)

	// The agents' syscalls: what they read and write while the stream
	// runs (splice moves bytes without them).
	var counters []*sysbytes.Counter
	for _, node := range []string{"node1", "node2"} {
		sb, err := sysbytes.New(e.l.process(t, "agent-"+node).PID)
		if err != nil {
			t.Fatalf("syscall byte counter for %s's agent: %v", node, err)
		}
		t.Cleanup(func() { sb.Close() })
		counters = append(counters, sb)
	}

	start := time.Now()
	cliRes := stream(p.cli, up, streamSize, 5*time.Minute)
	srvRes := stream(p.srv, down, streamSize, 5*time.Minute)
	cr, sr := <-cliRes, <-srvRes
	took := time.Since(start)
	for _, r := range []struct {
		who string
		res streamResult
	}{{"client", cr}, {"server", sr}} {
		if r.res.rerr != nil || r.res.werr != nil || r.res.n != streamSize {
			t.Fatalf("%s: read %d of %d bytes (%v), write: %v", r.who, r.res.n, streamSize, r.res.rerr, r.res.werr)
		}
	}
	if !bytes.Equal(sr.sum, wantUp[:]) {
		t.Error("the server received other bytes than the client sent")
	}
	if !bytes.Equal(cr.sum, wantDown[:]) {
		t.Error("the client received other bytes than the server sent")
	}
	t.Logf("%d MiB each way through one mesh connection in %v (%.2f Gbit/s each way)", streamSize>>20, took.Round(time.Millisecond), float64(streamSize*8)/took.Seconds()/1e9)

	var agentBytes [2]uint64
	for i, sb := range counters {
		r, w, err := sb.Read()
		if err != nil {
			t.Fatal(err)
		}
		agentBytes[i] = r + w
		t.Logf("agent-node%d's syscalls moved %d B read, %d B written (%.4f%% of the %d B both ways)", i+1, r, w, 100*float64(r+w)/float64(2*streamSize), 2*streamSize)
	}

	// Still open: the rows count the bytes and keep their state.
	after, err := e.rows(t, p)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		node string
		c    admin.Connection
		ids  [2]string
	}{{"node1", after.client, [2]string{clientID, serverID}}, {"node2", after.server, [2]string{serverID, clientID}}} {
		if err := e.checkMode(r.node, r.c); err != nil {
			t.Error(err)
		}
		if r.c.LocalIdentity != r.ids[0] || r.c.PeerIdentity != r.ids[1] {
			t.Errorf("%s: identities %q ↔ %q, want %q ↔ %q", r.node, r.c.LocalIdentity, r.c.PeerIdentity, r.ids[0], r.ids[1])
		}
		if r.c.BytesOut < streamSize || r.c.BytesIn < streamSize {
			t.Errorf("%s: connection %d counted %d B out, %d B in; want %d each way", r.node, r.c.ID, r.c.BytesOut, r.c.BytesIn, streamSize)
		}
		t.Logf("%s: connection %d %s/%s (%s) %s %s, %d B out, %d B in, XDP %d packets %d B", r.node, r.c.ID, r.c.State, r.c.Offload, r.c.OffloadReason, r.c.TLSVersion, r.c.TLSCipher, r.c.BytesOut, r.c.BytesIn, r.c.XDPPackets, r.c.XDPBytes)
	}

	if e.offload {
		// ≪ 1%: the handshake, the PROXY header and the hellos are
		// a few KiB; the payload is 128 MiB.
		for i, b := range agentBytes {
			if b*100 >= 2*streamSize {
				t.Errorf("agent-node%d read and wrote %d B in syscalls during the stream: not ≪ 1%% of %d B, the bytes went through userspace", i+1, b, 2*streamSize)
			}
		}
		for _, r := range []struct {
			node string
			c    admin.Connection
		}{{"node1", after.client}, {"node2", after.server}} {
			e.checkFlows(t, r.node, r.c)
		}
	} else {
		// In userspace each agent reads and writes every byte (twice:
		// app and tunnel); less would mean the counter is blind, and
		// the offload measure above could not fail.
		for i, b := range agentBytes {
			if b < 2*streamSize {
				t.Errorf("agent-node%d moved only %d B in syscalls relaying %d B in userspace: the syscall counter misses bytes", i+1, b, 2*streamSize)
			}
		}
	}

	records, streams, dropped := fw.stop(t)
	wantRecords := int64(2 * streamSize / (16 << 10))
	if dropped > 0 {
		t.Logf("the capture dropped %d frames: the record count covers each stream up to its first gap", dropped)
		wantRecords = 1
	}
	if streams == 0 || records < wantRecords {
		t.Errorf("the fabric carried %d TLS records on port %d in %d streams (dropped frames %d), want at least %d", records, slowpath.TunnelPort, streams, dropped, wantRecords)
	}
	t.Logf("fabric capture: %d streams, %d TLS records, %d frames dropped", streams, records, dropped)
}

// checkFlows checks an offloaded connection's XDP flow entries on node:
// /offload/flows names its tunnel 5-tuple, and fibctl flows shows both
// directions' entries forwarding and counting packets.
func (e *offloadEnv) checkFlows(t *testing.T, node string, c admin.Connection) {
	t.Helper()
	if c.XDPPackets == 0 {
		t.Errorf("%s: connection %d shows no XDP packets (xdpPackets 0)", node, c.ID)
	}
	var ofs []admin.OffloadFlow
	if err := adminJSON(e.l, node, fmt.Sprintf("/offload/flows?conn=%d", c.ID), &ofs); err != nil {
		t.Errorf("%s /offload/flows: %v", node, err)
		return
	}
	if len(ofs) != 1 {
		t.Errorf("%s: /offload/flows?conn=%d lists %d entries, want 1", node, c.ID, len(ofs))
		return
	}
	of := ofs[0]
	if of.State != "offloaded" || of.Remote.Port() != slowpath.TunnelPort && of.Local.Port() != slowpath.TunnelPort {
		t.Errorf("%s: offload flow %+v: want state offloaded on a tunnel 5-tuple", node, of)
	}
	flows := e.fibctlFlows(t, node)
	want := map[[2]string]bool{
		{of.Local.String(), of.Remote.String()}: true,
		{of.Remote.String(), of.Local.String()}: true,
	}
	var pkts uint64
	for _, f := range flows {
		if f.Proto != "tcp" || !want[[2]string{f.Src, f.Dst}] {
			continue
		}
		delete(want, [2]string{f.Src, f.Dst})
		if f.Action != "forward" {
			t.Errorf("%s: flow %s → %s is %s, want forward", node, f.Src, f.Dst, f.Action)
		}
		pkts += f.Packets
	}
	if len(want) != 0 {
		t.Errorf("%s: fibctl flows lacks the entries %v of connection %d", node, want, c.ID)
	}
	// 128 MiB in TCP segments of at most 64 KiB (GRO) each: at least
	// 2,048 packets crossed the node's XDP, one direction or the other.
	if pkts < 2*streamSize/(64<<10) {
		t.Errorf("%s: the tunnel's flow entries counted %d packets for %d B each way", node, pkts, streamSize)
	}
	t.Logf("%s: tunnel %s ↔ %s: flow entries counted %d packets (offload flow: %d packets, %d B)", node, of.Local, of.Remote, pkts, of.Packets, of.Bytes)
}

// fibFlow is one row of fibctl flows -o json.
type fibFlow struct {
	Proto, Src, Dst, Action string
	Packets, Bytes          uint64
}

// fibctlFlows runs fibctl flows -o json on node's pinned FIB, as a user
// would.
func (e *offloadEnv) fibctlFlows(t *testing.T, node string) []fibFlow {
	t.Helper()
	out, err := osexec.Command(filepath.Join(binDir, "fibctl"), "--pin-dir", kubelet.AgentPinDir(e.l.prefix, node), "-o", "json", "flows").Output()
	if err != nil {
		t.Fatalf("fibctl flows on %s: %v", node, err)
	}
	var fs []fibFlow
	if err := json.Unmarshal(out, &fs); err != nil {
		t.Fatalf("fibctl flows on %s: %v\n%s", node, err, out)
	}
	return fs
}

// shortConnsFlag overrides how many connections TestOffload/ShortConns
// makes (make vmtest VMTEST_PKGS=./e2e VMTEST_ARGS=-offload.short-conns=N).
var shortConnsFlag = flag.Int("offload.short-conns", 0, "connections TestOffload/ShortConns makes (0: 10,000)")

// shortConnsVM is TestOffload/ShortConns's count in make vmtest's VM.
// Under TCG a mesh connection (two TLS 1.3 handshakes' ECDSA and ECDHE
// emulated, kTLS set up on four sockets, flow entries installed and
// removed on both nodes) runs at about 6 a second with 8 in flight: 500
// take 90 s of CI time, 10,000 would take half an hour. The host runs
// 10,000.
const shortConnsVM = 500

// shortConns is how many connections TestOffload/ShortConns makes.
func shortConns() int {
	switch {
	case *shortConnsFlag > 0:
		return *shortConnsFlag
	case vmcheck.InVM():
		return shortConnsVM
	}
	return 10000
}

// agentUsage is what the short connections must not leak on one agent.
type agentUsage struct {
	fds, pipes int
	goroutines float64
	flows      int
}

func (e *offloadEnv) usage(t *testing.T, node string) agentUsage {
	t.Helper()
	var u agentUsage
	pid := e.l.process(t, "agent-"+node).PID
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, ent := range ents {
		u.fds++
		if target, err := os.Readlink(filepath.Join(dir, ent.Name())); err == nil && strings.HasPrefix(target, "pipe:") {
			u.pipes++
		}
	}
	u.goroutines = e.goroutines(t, node)
	u.flows = len(e.fibctlFlows(t, node))
	return u
}

// goroutines is the agent's goroutine count, from its admin API's
// goroutine profile (the agent's registry has no go_goroutines: it
// registers no Go collector). The request's own handler is one of them,
// in every sample alike.
func (e *offloadEnv) goroutines(t *testing.T, node string) float64 {
	t.Helper()
	b := e.l.get(t, e.l.nodeNetns(node), "http://"+kubelet.AgentAdmin+"/debug/pprof/goroutine?debug=1")
	first, _, _ := bytes.Cut(b, []byte("\n"))
	var n float64
	if _, err := fmt.Sscanf(string(first), "goroutine profile: total %g", &n); err != nil || n == 0 {
		t.Fatalf("%s's goroutine profile starts %q: %v", node, first, err)
	}
	return n
}

// decisions are the agent's offload decisions so far, by mode.
func (e *offloadEnv) decisions(t *testing.T, node string) map[string]float64 {
	t.Helper()
	return metricByLabel(t, e.l.get(t, e.l.nodeNetns(node), "http://127.0.0.1:15090/metrics"), "fibmesh_agent_proxy_offload_decisions_total", "mode")
}

// metricByLabel sums the samples of a metric by the value of one label.
func metricByLabel(t *testing.T, text []byte, name, label string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		labels, value, ok := strings.Cut(line[len(name)+1:], "} ")
		if !ok {
			t.Fatalf("metric line %q", line)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		key := ""
		for _, kv := range strings.Split(labels, ",") {
			if k, val, _ := strings.Cut(kv, "="); k == label {
				key = strings.Trim(val, `"`)
			}
		}
		out[key] += v
	}
	return out
}

func (e *offloadEnv) testShortConns(t *testing.T) {
	n := shortConns()
	nodes := []string{"node1", "node2"}
	// Warm up (session caches, pooled buffers, the first connection's
	// lazily started goroutines), then take the baseline.
	for i := range 20 {
		if err := e.echoOnce(i, 10*time.Second); err != nil {
			t.Fatalf("warm-up connection %d: %v", i, err)
		}
	}
	base := map[string]agentUsage{}
	dec0 := map[string]map[string]float64{}
	testenv.Eventually(t, 60*time.Second, "the earlier connections gone", func() error {
		// No connection is open (the stream's and the warm-up's have
		// been torn down), no offloaded one's flow entries remain: the
		// baseline holds no connection's fds, pipes or goroutines.
		for _, node := range nodes {
			var cs []admin.Connection
			if err := adminJSON(e.l, node, "/connections", &cs); err != nil {
				return err
			}
			for _, c := range cs {
				if c.State != "closed" {
					return fmt.Errorf("%s: connection %d %s→%s is %s", node, c.ID, c.Source, c.Destination, c.State)
				}
			}
			var ofs []admin.OffloadFlow
			if err := adminJSON(e.l, node, "/offload/flows", &ofs); err != nil {
				return err
			}
			if len(ofs) != 0 {
				return fmt.Errorf("%s: %d offloaded connections' flow entries remain", node, len(ofs))
			}
		}
		for _, node := range nodes {
			base[node] = e.usage(t, node)
		}
		return nil
	})
	for _, node := range nodes {
		dec0[node] = e.decisions(t, node)
		t.Logf("%s's agent before: %d fds (%d pipes), %.0f goroutines, %d flow entries", node, base[node].fds, base[node].pipes, base[node].goroutines, base[node].flows)
	}

	const workers = 8
	var next, failed atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || failed.Load() > 0 {
					return
				}
				if err := e.echoOnce(int(i), 30*time.Second); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Errorf("connection %d: %w", i, err))
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if failed.Load() > 0 {
		t.Fatalf("%d short connections failed; the first: %v", failed.Load(), firstErr.Load())
	}
	t.Logf("%d short connections (%d at a time) in %v: %.0f/s", n, workers, took.Round(time.Millisecond), float64(n)/took.Seconds())

	// Every one was decided in the mode the kernel calls for.
	for _, node := range nodes {
		d := e.decisions(t, node)
		got := map[string]float64{}
		for mode, v := range d {
			got[mode] = v - dec0[node][mode]
		}
		kernel := got["splice"] + got["sockmap"]
		switch {
		case e.offload && kernel < float64(n):
			t.Errorf("%s: %v offloaded of %d connections (decisions %v)", node, kernel, n, got)
		case !e.offload && got["userspace"] < float64(n):
			t.Errorf("%s: %v userspace decisions for %d connections (decisions %v)", node, got["userspace"], n, got)
		}
		t.Logf("%s: offload decisions during the run: %v", node, got)
	}

	// Nothing stays behind: flow entries back to the baseline, and the
	// agents' fds, pipes and goroutines too. Polled: the last
	// connections' teardown (and a grace for their flow entries) runs
	// after the apps saw them close.
	for _, node := range nodes {
		var u agentUsage
		b := base[node]
		testenv.Eventually(t, 60*time.Second, node+"'s agent back to its baseline", func() error {
			u = e.usage(t, node)
			var errs []error
			if u.flows != b.flows {
				errs = append(errs, fmt.Errorf("%d flow entries, %d before", u.flows, b.flows))
			}
			if u.fds > b.fds {
				errs = append(errs, fmt.Errorf("%d fds, %d before", u.fds, b.fds))
			}
			if u.pipes > b.pipes {
				errs = append(errs, fmt.Errorf("%d pipe fds, %d before", u.pipes, b.pipes))
			}
			if u.goroutines > b.goroutines {
				errs = append(errs, fmt.Errorf("%.0f goroutines, %.0f before", u.goroutines, b.goroutines))
			}
			return errors.Join(errs...)
		})
		t.Logf("%s's agent after: %d fds (%d pipes), %.0f goroutines, %d flow entries", node, u.fds, u.pipes, u.goroutines, u.flows)
	}
}

func (e *offloadEnv) testRevoke(t *testing.T) {
	revoked := func(node string) float64 {
		return e.l.agentMetric(t, node, "fibmesh_agent_proxy_revocations_total")
	}
	denied := func() float64 { return e.l.agentMetric(t, "node2", "fibmesh_agent_proxy_rbac_denied_total") }
	rev0 := revoked("node2")

	p := e.open(t)
	m := e.waitMode(t, p)
	up, down := payload(3, streamSize), payload(4, streamSize)
	cliRes := stream(p.cli, up, streamSize, 2*time.Minute)
	srvRes := stream(p.srv, down, streamSize, 2*time.Minute)
	// Let bytes flow before the policy changes: the agents count them.
	testenv.Eventually(t, 60*time.Second, "1 MiB each way before the policy change", func() error {
		r, err := e.rows(t, p)
		if err != nil {
			return err
		}
		if r.client.BytesOut < 1<<20 || r.client.BytesIn < 1<<20 {
			return fmt.Errorf("node1 counted %d B out, %d B in", r.client.BytesOut, r.client.BytesIn)
		}
		return nil
	})

	t0 := time.Now()
	e.l.write(t, "deny-client.yaml", denyClient)
	t.Cleanup(func() { os.Remove(filepath.Join(e.l.dir, "deny-client.yaml")) })
	cr, sr := <-cliRes, <-srvRes
	for _, r := range []struct {
		who string
		res streamResult
	}{{"client", cr}, {"server", sr}} {
		switch {
		case r.res.rerr == nil:
			t.Errorf("%s: received all %d B: the connection was not revoked", r.who, streamSize)
		case errors.Is(r.res.rerr, os.ErrDeadlineExceeded):
			t.Errorf("%s: still open %v after the policy change (%d B received)", r.who, time.Since(t0).Round(time.Millisecond), r.res.n)
		case errors.Is(r.res.rerr, syscall.ECONNRESET) || errors.Is(r.res.rerr, io.EOF) || errors.Is(r.res.rerr, io.ErrUnexpectedEOF):
			t.Logf("%s: the connection died %v after the policy file was written: %v (%d B received)", r.who, r.res.rerrTime.Sub(t0).Round(time.Millisecond), r.res.rerr, r.res.n)
		default:
			t.Errorf("%s: read ended with %v, want a reset or EOF", r.who, r.res.rerr)
		}
	}

	testenv.Eventually(t, 10*time.Second, "the revocation counted on node2", func() error {
		if v := revoked("node2"); v <= rev0 {
			return fmt.Errorf("fibmesh_agent_proxy_revocations_total %v → %v", rev0, v)
		}
		return nil
	})
	// The server's agent says why the connection ended; with the
	// offload, its flow entries record the latency of the first drop.
	testenv.Eventually(t, 10*time.Second, "node2's row of the revoked connection", func() error {
		var cs []admin.Connection
		if err := adminJSON(e.l, "node2", "/connections?pod="+url.QueryEscape("offload/server"), &cs); err != nil {
			return err
		}
		for _, c := range cs {
			if c.ID == m.server.ID {
				if !strings.HasPrefix(c.Reason, "revoked") {
					return fmt.Errorf("connection %d: state %s, reason %q; want a reason starting with revoked", c.ID, c.State, c.Reason)
				}
				t.Logf("node2: connection %d %s: %s", c.ID, c.State, c.Reason)
				return nil
			}
		}
		return fmt.Errorf("connection %d is not listed", m.server.ID)
	})
	if e.offload {
		var ofs []admin.OffloadFlow
		if err := adminJSON(e.l, "node2", fmt.Sprintf("/offload/flows?conn=%d", m.server.ID), &ofs); err != nil {
			t.Errorf("node2 /offload/flows: %v", err)
		}
		for _, of := range ofs {
			if of.Revocation != nil {
				t.Logf("node2: revocation of connection %d: %s, first drop %.3f ms (±%.3f) after the push, %d packets dropped", of.ConnID, of.Revocation.State, of.Revocation.FirstDropMs, of.Revocation.FirstDropErrorMs, of.Revocation.Dropped)
			}
		}
	}

	// A new connection is denied at L4: the client's agent accepts it
	// (the capture), the server's agent refuses the client's identity,
	// and nothing reaches the server.
	d0 := denied()
	c, err := e.dial(streamVIP, 10*time.Second)
	if err == nil {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		c.Write([]byte("after the revocation\n"))
		b, rerr := io.ReadAll(c)
		c.Close()
		if len(b) != 0 {
			t.Errorf("a new connection after the DENY got %q back", b)
		}
		t.Logf("a new connection after the DENY: connected locally, then %v", rerr)
	}
	testenv.Eventually(t, 10*time.Second, "the new connection denied on node2", func() error {
		if v := denied(); v <= d0 {
			return fmt.Errorf("fibmesh_agent_proxy_rbac_denied_total %v → %v", d0, v)
		}
		return nil
	})
	e.ln.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if s, err := e.ln.Accept(); err == nil {
		s.Close()
		t.Error("a connection reached the server after the DENY")
	}
}
