// Package demo is the walk-through of make demo: it runs a copy of a
// manifest directory (examples/) on the lab with the mesh
// (kubelet.Up with Mesh: the examples' pods, fibmesh-controller,
// fibmesh-agent per node), then shows the routes each agent got from the
// controller, an edit of the copy (a Pod removed) reaching both nodes'
// FIBs, and HTTP and TCP between pods on different nodes crossing both
// nodes in the XDP FIB. The lab stays up until fibmesh-lab down.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/echo"
	"github.com/fibmesh/fibmesh/lab/kubelet"
)

// Options configure Run.
type Options struct {
	BinDir    string // fibmesh-controller, fibmesh-agent, fibctl
	Manifests string // the directory to copy (default "examples")
	Prefix    string // network namespace prefix (default lab.DefaultPrefix)
	StateDir  string // default lab.DefaultStateDir
	Self      string // the fibmesh-lab binary
	Out       io.Writer
}

// The pods the walk-through uses, from examples/: the client Pod (no
// Service selects it, so no mTLS policy covers its port: plain TCP is
// allowed to it until W2 2/8 brings mTLS) and the file it is in.
const (
	clientPod  = "production/client"
	clientFile = "04-client.yaml"
	clientPort = 8080
)

// Run runs the demo. It leaves the lab running.
func Run(ctx context.Context, o Options) error {
	if o.Manifests == "" {
		o.Manifests = "examples"
	}
	if o.Prefix == "" {
		o.Prefix = lab.DefaultPrefix
	}
	if o.StateDir == "" {
		o.StateDir = lab.DefaultStateDir
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	var err error
	if o.StateDir, err = filepath.Abs(o.StateDir); err != nil {
		return err
	}
	if o.BinDir, err = filepath.Abs(o.BinDir); err != nil {
		return err
	}
	say := func(format string, args ...any) { fmt.Fprintf(o.Out, "\n==> "+format+"\n", args...) }

	copyDir := filepath.Join(o.StateDir, kubelet.ManifestsDir)
	say("copying %s to %s: the lab runs the copy, which the demo edits", o.Manifests, copyDir)
	if err := kubelet.Stop(o.StateDir, 2*time.Minute); err != nil {
		return err
	}
	if err := copyManifests(o.Manifests, copyDir); err != nil {
		return err
	}
	say("fibmesh-lab up -f %s --mesh: nodes, pods running the echo app, the controller, an agent per node", copyDir)
	uctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	start := time.Now()
	st, err := kubelet.Up(uctx, kubelet.Options{StateDir: o.StateDir, Dir: copyDir, Prefix: o.Prefix, Mesh: true,
		BinDir: o.BinDir, Self: o.Self}, 2)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "    up and ready in %s\n", time.Since(start).Round(time.Millisecond))
	l, err := lab.Load(o.StateDir)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "    POD\tNODE\tIP\tPHASE\tENROLMENT")
	for _, p := range st.Pods {
		fmt.Fprintf(w, "    %s/%s\t%s\t%s\t%s\t%s\n", p.Namespace, p.Name, p.Node, p.IP, p.Phase, p.Enrolment)
	}
	for _, p := range st.Processes {
		fmt.Fprintf(w, "    %s\t%s\t\t%s\tready=%v\n", p.Name, strings.TrimPrefix(p.Name, "agent-"), p.State, p.Ready)
	}
	w.Flush()

	say("the routes each agent got from the controller (FDS -> the node's XDP FIB)")
	for _, n := range l.Nodes {
		fmt.Fprintf(o.Out, "    $ fibctl --node %s fib\n", n.Netns)
		out, err := exec.CommandContext(ctx, filepath.Join(o.BinDir, "fibctl"), "--node", n.Netns, "fib").CombinedOutput()
		fmt.Fprint(o.Out, indent(string(out), "    "))
		if err != nil {
			return fmt.Errorf("fibctl --node %s fib: %w", n.Netns, err)
		}
	}

	client, err := l.Pod(clientPod)
	if err != nil {
		return fmt.Errorf("%w: the demo needs Pod %s (examples/%s)", err, clientPod, clientFile)
	}
	// A pod in the mesh (enrolled) on the other node calls the client:
	// its connections go through both nodes' agents over mTLS.
	enrolled := map[string]bool{}
	for _, p := range st.Pods {
		enrolled[p.Namespace+"/"+p.Name] = strings.HasPrefix(p.Enrolment, "enrolled")
	}
	var from *lab.Pod
	for _, p := range l.Pods() {
		if p.Node != client.Node && enrolled[p.Namespace+"/"+p.Name] {
			from = p
			break
		}
	}
	if from == nil {
		return errors.New("no pod in the mesh runs on another node than the client's: the demo needs two nodes")
	}
	before, err := snapshot(l, o.Prefix)
	if err != nil {
		return err
	}
	say("HTTP from %s/%s (%s, %s) to %s:%d (%s, %s), 20 requests: captured by the agents, carried between them over mTLS", from.Namespace, from.Name, from.Node, from.IP, client.IP, clientPort, client.Name, client.Node)
	httpc := kubelet.NetnsHTTPClient(from.Netns, 5*time.Second)
	var rep echo.Reply
	for i := range 20 {
		if err := getJSON(ctx, httpc, fmt.Sprintf("http://%s/demo?n=%d", netip.AddrPortFrom(client.IP, clientPort), i), &rep); err != nil {
			return fmt.Errorf("HTTP to the client pod: %w", err)
		}
	}
	b, _ := json.MarshalIndent(struct {
		Service, Pod, Namespace, Node, Peer, Proto, Path string
	}{rep.Service, rep.Pod, rep.Namespace, rep.Node, rep.Peer, rep.Proto, rep.Path}, "    ", "  ")
	fmt.Fprintf(o.Out, "    the echo app answered (last reply):\n    %s\n", b)
	say("TCP: 1 MiB from %s to %s:%d, echoed back by the app", from.Name, client.Name, clientPort)
	if err := tcpEcho(from, client, clientPort, 1<<20); err != nil {
		return fmt.Errorf("tcp: %w", err)
	}
	if err := l7Step(ctx, o, l, say); err != nil {
		return err
	}
	var fromNode *lab.Node
	for _, n := range l.Nodes {
		if n.Name == from.Node {
			fromNode = n
		}
	}
	if fromNode != nil {
		say("the connections %s's agent proxied for %s/%s: both SPIFFE IDs, verified in the mTLS handshake", from.Node, from.Namespace, from.Name)
		fmt.Fprintf(o.Out, "    $ fibctl --node %s conns --pod %s/%s\n", fromNode.Netns, from.Namespace, from.Name)
		out, err := exec.CommandContext(ctx, filepath.Join(o.BinDir, "fibctl"), "--node", fromNode.Netns, "conns", "--pod", from.Namespace+"/"+from.Name).CombinedOutput()
		fmt.Fprint(o.Out, indent(string(out), "    "))
		if err != nil {
			return fmt.Errorf("fibctl conns: %w", err)
		}
	}
	after, err := snapshot(l, o.Prefix)
	if err != nil {
		return err
	}
	say("what the nodes did with those packets")
	w = tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "    NODE\tXDP REDIRECTED\tXDP PASSED TO STACK\tKERNEL FORWARDED")
	for i, n := range l.Nodes {
		d := func(r fib.Reason) uint64 { return after[i].fib[r].Packets - before[i].fib[r].Packets }
		passed := d(fib.ReasonPassNonIPv4) + d(fib.ReasonPassIPv6) + d(fib.ReasonPassRouteMiss) + d(fib.ReasonPassMalformed)
		fmt.Fprintf(w, "    %s\t%d\t%d\t%d\n", n.Name, d(fib.ReasonRedirect), passed, after[i].fwd-before[i].fwd)
	}
	w.Flush()
	fmt.Fprintln(o.Out, "    (kernel forwarded = the node's IP ForwDatagrams: 0 means every pod packet crossed the node in XDP)")

	prefix := netip.PrefixFrom(client.IP, 32)
	say("edit: remove %s (Pod %s) from %s; the kubelet, the controller and both agents follow", clientFile, clientPod, copyDir)
	for _, n := range l.Nodes {
		has, err := hasRoute(o.Prefix, n, prefix)
		if err != nil {
			return err
		}
		fmt.Fprintf(o.Out, "    before: %s has a route to %s: %v\n", n.Name, prefix, has)
	}
	clientPath := filepath.Join(copyDir, clientFile)
	saved, err := os.ReadFile(clientPath)
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := os.Remove(clientPath); err != nil {
		return err
	}
	if err := waitRoute(ctx, o, l, prefix, false, t0); err != nil {
		return err
	}
	// The route leaves as soon as the controller sees the edit; the
	// kubelet stops the pod's processes after that. Put the file back
	// once the pod is gone, so that what comes back is a new pod (else
	// the old one, still stopping, would read as ready).
	if err := waitPodGone(ctx, o, clientPod); err != nil {
		return err
	}
	say("edit: put %s back; the pod comes back with its IP (the lab keeps allocations)", clientFile)
	t0 = time.Now()
	if err := os.WriteFile(clientPath, saved, 0o644); err != nil {
		return err
	}
	if err := waitRoute(ctx, o, l, prefix, true, t0); err != nil {
		return err
	}
	// The route comes first (the controller learns of the pod before its
	// network is built); the pod runs, and is enrolled, a little later.
	for {
		st, err := kubelet.Get(ctx, o.StateDir)
		if err != nil {
			return err
		}
		if st.Ready {
			fmt.Fprintf(o.Out, "    %s running and enrolled %s after the edit\n", clientPod, time.Since(t0).Round(time.Millisecond))
			break
		}
		if time.Since(t0) > time.Minute {
			return fmt.Errorf("the lab is not ready a minute after the edit: %s", strings.Join(st.NotReady, "; "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}

	say("the lab stays up. Look around:")
	flags := ""
	if o.StateDir != lab.DefaultStateDir {
		flags = " --state-dir " + o.StateDir
	}
	down := "make demo-down"
	if o.Prefix != lab.DefaultPrefix || flags != "" {
		down = fmt.Sprintf("%s/fibmesh-lab down --prefix %s%s", o.BinDir, o.Prefix, flags)
	}
	fmt.Fprintf(o.Out, `    %[1]s/fibmesh-lab status%[7]s
    %[1]s/fibmesh-lab logs%[7]s %[2]s/%[3]s
    %[1]s/fibmesh-lab exec%[7]s %[2]s/%[3]s -- curl -s %[9]s/hello   # HTTP to the client pod, across nodes
    %[1]s/fibmesh-lab exec%[7]s %[2]s/%[3]s -- ip addr
    %[1]s/fibctl --node %[4]s conns       # the connections the agent proxies: pods, SPIFFE IDs, TLS, bytes
    %[1]s/fibctl --node %[4]s fib
    %[1]s/fibctl --node %[4]s stats
    %[1]s/fibmesh-lab exec%[7]s fabric -- %[1]s/fibctl config status --controller http://%[5]s
    edit %[6]s/*.yaml: the lab, the controller and the agents follow
    %[8]s
`, o.BinDir, from.Namespace, from.Name, l.Nodes[0].Netns, kubelet.ControllerMonitoring, copyDir, flags, down,
		netip.AddrPortFrom(client.IP, clientPort))
	fmt.Fprintln(o.Out, "    (pods in the mesh talk mTLS through their agents; production/outsider is outside the mesh: its plaintext to a STRICT port is dropped in XDP, see examples/05-outsider.yaml)")
	return nil
}

// waitRoute polls every node's FIB until its route to prefix is there
// (want) or gone, and says how long after t0 that happened.
func waitRoute(ctx context.Context, o Options, l *lab.Lab, prefix netip.Prefix, want bool, t0 time.Time) error {
	what := "gone"
	if want {
		what = "back"
	}
	for _, n := range l.Nodes {
		deadline := time.Now().Add(30 * time.Second)
		for {
			has, err := hasRoute(o.Prefix, n, prefix)
			if err != nil {
				return err
			}
			if has == want {
				fmt.Fprintf(o.Out, "    %s: route to %s %s %s after the edit\n", n.Name, prefix, what, time.Since(t0).Round(time.Millisecond))
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: route to %s not %s 30s after the edit", n.Name, prefix, what)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
	}
	return nil
}

// copyManifests replaces dst with a copy of the YAML files of src.
func copyManifests(src, dst string) error {
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if ext := filepath.Ext(p); ext != ".yaml" && ext != ".yml" && ext != ".json" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
}

func indent(s, pre string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(pre + l + "\n")
	}
	return b.String()
}

func getJSON(ctx context.Context, c interface {
	Do(*http.Request) (*http.Response, error)
}, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Request-Id", "fibmesh-demo")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// hasRoute says whether node n's pinned FIB routes exactly prefix.
func hasRoute(labPrefix string, n *lab.Node, prefix netip.Prefix) (bool, error) {
	f, err := fib.OpenPinned(kubelet.AgentPinDir(labPrefix, n.Name))
	if err != nil {
		return false, err
	}
	defer f.Close()
	routes, err := f.Routes.List()
	if err != nil {
		return false, err
	}
	for _, r := range routes {
		if r.Prefix == prefix {
			return true, nil
		}
	}
	return false, nil
}

type nodeSnap struct {
	fib []fib.Counter
	fwd uint64
}

func snapshot(l *lab.Lab, labPrefix string) ([]nodeSnap, error) {
	out := make([]nodeSnap, len(l.Nodes))
	for i, n := range l.Nodes {
		f, err := fib.OpenPinned(kubelet.AgentPinDir(labPrefix, n.Name))
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

// tcpEcho sends size bytes from pod a to the echo app of pod b and reads
// them back.
func tcpEcho(a, b *lab.Pod, port, size int) error {
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
		payload[i] = byte(i*7) | 0x80 // never an HTTP method: the app echoes
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		errc <- err
	}()
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
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

// l7Step shows the examples' HTTP policy, request by request: the 90/10
// canary (examples/10), its header override, and the authorization
// policy (examples/21). It is skipped when the manifests have no
// frontend Deployment (a lab of other manifests).
func l7Step(ctx context.Context, o Options, l *lab.Lab, say func(string, ...any)) error {
	fe, err := l.Pod("production/deploy/frontend")
	if err != nil {
		return nil
	}
	const n = 200
	url := "http://reviews.production.svc.cluster.local:9080/api/reviews/1"
	curl := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", fe.Netns, "curl", "-s", "-m", "10"}, args...)...).Output()
		return string(out), err
	}
	versions := func(extra ...string) (map[string]int, error) {
		args := append(extra, "-o", "/dev/null", "-w", "%header{x-echo-version}\\n")
		for range n {
			args = append(args, url)
		}
		out, err := curl(args...)
		if err != nil {
			return nil, fmt.Errorf("curl from %s/%s: %w", fe.Namespace, fe.Name, err)
		}
		count := map[string]int{}
		for _, v := range strings.Fields(out) {
			count[v]++
		}
		return count, nil
	}
	say("L7: %d GETs from %s/%s to reviews, each routed by its agent (examples/10: 90 %% v1, 10 %% v2)", n, fe.Namespace, fe.Name)
	split, err := versions()
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "    v1: %d, v2: %d\n", split["v1"], split["v2"])
	canary, err := versions("-H", "x-canary-user: true")
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "    with x-canary-user: true: v1: %d, v2: %d\n", canary["v1"], canary["v2"])
	say("L7 authorization (examples/21: GET /api/reviews/* from frontend only), per request")
	out, err := curl("-X", "POST", "-w", " (%{http_code})", url)
	if err != nil {
		return fmt.Errorf("curl from %s/%s: %w", fe.Namespace, fe.Name, err)
	}
	fmt.Fprintf(o.Out, "    POST %s: %s\n", url, out)
	return nil
}

// waitPodGone polls the kubelet's status until pod (NAMESPACE/NAME) is no
// longer listed.
func waitPodGone(ctx context.Context, o Options, pod string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := kubelet.Get(ctx, o.StateDir)
		if err != nil {
			return err
		}
		listed := false
		for _, p := range st.Pods {
			listed = listed || p.Namespace+"/"+p.Name == pod
		}
		if !listed {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pod %s still listed a minute after its manifest was removed", pod)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
