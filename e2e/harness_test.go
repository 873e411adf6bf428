package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/fibmesh/fibmesh/agent/xdsclient"
	fibv1 "github.com/fibmesh/fibmesh/api/fib/v1"
	xdsapi "github.com/fibmesh/fibmesh/api/xds"
	"github.com/fibmesh/fibmesh/controller/xds"
	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/kubelet"
)

// binDir holds the binaries TestMain built.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(testenv.MainWithCommands(m, &binDir, "cmd/fibmesh-lab", "cmd/fibmesh-controller", "cmd/fibmesh-agent", "cmd/fibctl"))
}

// meshLab is a lab with its mesh, run through the fibmesh-lab binary.
type meshLab struct {
	dir, state, prefix string
}

// upMesh writes manifests (file name → content) into a fresh directory
// and runs fibmesh-lab up -f DIR --mesh on it; the lab is taken down when
// the test ends.
func upMesh(t *testing.T, prefix string, manifests map[string]string, extra ...string) *meshLab {
	t.Helper()
	testenv.NeedRoot(t)
	root := t.TempDir()
	l := &meshLab{dir: filepath.Join(root, "manifests"), state: filepath.Join(root, "state"), prefix: prefix}
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range manifests {
		l.write(t, name, body)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{"controller.log", "agent-node1.log", "agent-node2.log", "kubelet.log"} {
				if b, err := os.ReadFile(filepath.Join(l.state, f)); err == nil {
					t.Logf("%s (last 16 KiB):\n%s", f, tailBytes(b, 16384))
				}
			}
		}
		if out, err := l.lab("down"); err != nil {
			t.Errorf("fibmesh-lab down: %v\n%s", err, out)
		}
	})
	if out, err := l.lab(append([]string{"up", "-f", l.dir, "--mesh", "--bin", binDir}, extra...)...); err != nil {
		t.Fatalf("fibmesh-lab up: %v\n%s", err, out)
	}
	return l
}

func tailBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (l *meshLab) lab(args ...string) ([]byte, error) {
	args = append(args, "--prefix", l.prefix, "--state-dir", l.state)
	cmd := exec.Command(filepath.Join(binDir, "fibmesh-lab"), args...)
	cmd.Env = append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"))
	return cmd.CombinedOutput()
}

// write puts a manifest into the lab's directory atomically (a temporary
// file renamed into place, as editors save).
func (l *meshLab) write(t *testing.T, name, body string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(l.dir), "."+name)
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(l.dir, name)); err != nil {
		t.Fatal(err)
	}
}

func (l *meshLab) status(t *testing.T) *kubelet.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := kubelet.Get(ctx, l.state)
	if err != nil {
		t.Fatalf("lab status: %v", err)
	}
	return st
}

func (l *meshLab) pod(t *testing.T, ns, name string) kubelet.PodStatus {
	t.Helper()
	for _, p := range l.status(t).Pods {
		if p.Namespace == ns && p.Name == name {
			return p
		}
	}
	t.Fatalf("pod %s/%s is not in the lab's status", ns, name)
	return kubelet.PodStatus{}
}

func (l *meshLab) process(t *testing.T, name string) kubelet.ProcStatus {
	t.Helper()
	for _, p := range l.status(t).Processes {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no process %s in the lab's status", name)
	return kubelet.ProcStatus{}
}

func (l *meshLab) nodeNetns(node string) string { return l.prefix + node }
func (l *meshLab) fabricNetns() string          { return l.prefix + "fabric" }

// fib opens node's pinned FIB.
func (l *meshLab) fib(t *testing.T, node string) *fib.FIB {
	t.Helper()
	f, err := fib.OpenPinned(kubelet.AgentPinDir(l.prefix, node))
	if err != nil {
		t.Fatalf("%s's FIB: %v", node, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// get fetches url from inside netns.
func (l *meshLab) get(t *testing.T, netns, url string) []byte {
	t.Helper()
	c := kubelet.NetnsHTTPClient(netns, 5*time.Second)
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s in %s: %v", url, netns, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s in %s: %s %v\n%s", url, netns, resp.Status, err, b)
	}
	return b
}

// agentMetric sums the samples of a metric (name, or name{labels...}
// prefix) on node's agent /metrics.
func (l *meshLab) agentMetric(t *testing.T, node, name string) float64 {
	t.Helper()
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(string(l.get(t, l.nodeNetns(node), "http://127.0.0.1:15090/metrics"))))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || strings.HasPrefix(line, "#") {
			continue
		}
		rest := line[len(name):]
		if rest[0] != ' ' && rest[0] != '{' {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// ready polls node's agent /readyz until it answers 200.
func (l *meshLab) agentReady(t *testing.T, node string, timeout time.Duration) {
	t.Helper()
	c := kubelet.NetnsHTTPClient(l.nodeNetns(node), time.Second)
	testenv.Eventually(t, timeout, node+"'s agent ready", func() error {
		resp, err := c.Get("http://" + kubelet.AgentAdmin + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})
}

// controllerStatus is the controller's /debug/config_status.
func (l *meshLab) controllerStatus(t *testing.T) []xds.NodeStatus {
	t.Helper()
	st, err := l.tryControllerStatus()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// tryControllerStatus is controllerStatus for polling: the controller
// may be restarting.
func (l *meshLab) tryControllerStatus() ([]xds.NodeStatus, error) {
	c := kubelet.NetnsHTTPClient(l.fabricNetns(), 5*time.Second)
	resp, err := c.Get("http://" + kubelet.ControllerMonitoring + xds.StatusPath)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st []xds.NodeStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("config status: %s: %w", resp.Status, err)
	}
	return st, nil
}

// tables asks the controller for the flow tables of the given nodes and
// the mesh, on its plaintext debugging port (127.0.0.1:15010 in the
// fabric namespace, where the controller runs), as an observer: a node id
// no agent uses, so no agent's status changes. (The TLS port agents use
// serves each node only its own config.)
func (l *meshLab) tables(t *testing.T, nodes ...string) map[string]*fibv1.FlowTable {
	t.Helper()
	conn, err := grpc.NewClient("127.0.0.1:15010",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var c net.Conn
			err := lab.InNetns(l.fabricNetns(), func() (err error) {
				var d net.Dialer
				c, err = d.DialContext(ctx, "tcp", addr)
				return err
			})
			return c, err
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	names := append([]string{xdsapi.MeshTable}, nodes...)
	c := xdsclient.New(conn, xdsclient.Config{Node: "e2e-observer", Delta: true,
		Subscriptions: []xdsapi.Subscription{{TypeURL: xdsapi.FlowTableType, Names: names}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go c.Run(ctx)
	for {
		got := c.Resources(xdsapi.FlowTableType)
		if len(got) == len(names) {
			out := map[string]*fibv1.FlowTable{}
			for n, m := range got {
				out[n] = proto.Clone(m).(*fibv1.FlowTable)
			}
			return out
		}
		select {
		case <-ctx.Done():
			t.Fatalf("flow tables %v: got %d of them before the deadline", names, len(got))
		case <-c.Updates():
		}
	}
}

// remove deletes a manifest from the lab's directory.
func (l *meshLab) remove(t *testing.T, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(l.dir, name)); err != nil {
		t.Fatal(err)
	}
}
