package kubelet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/yaml"

	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/echo"
)

// testPrefix is this package's network namespace prefix.
const testPrefix = "fm-kt-"

// binDir holds the fibmesh-lab binary the tests build (fibmeshLab): the
// daemon is its "kubelet" command and the examples' containers run its
// "app echo".
var binDir string

func fibmeshLab() string { return filepath.Join(binDir, "fibmesh-lab") }

func TestMain(m *testing.M) {
	os.Exit(testenv.MainWithCommands(m, &binDir, "cmd/fibmesh-lab"))
}

// upLab brings a lab up on dir with a fast back-off and registers its
// removal.
func upLab(t *testing.T, dir string) (Options, *Status) {
	t.Helper()
	testenv.NeedRoot(t)
	o := Options{StateDir: t.TempDir(), Dir: dir, Prefix: testPrefix, Self: fibmeshLab(), BackoffBase: 100 * time.Millisecond}
	t.Cleanup(func() {
		if err := Stop(o.StateDir, time.Minute); err != nil {
			t.Errorf("Stop: %v", err)
		}
		if t.Failed() {
			t.Logf("kubelet log:\n%s", tail(filepath.Join(o.StateDir, LogFile), 60))
		}
		if err := lab.Cleanup(testPrefix); err != nil {
			t.Errorf("lab.Cleanup: %v", err)
		}
		if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), testPrefix) {
			t.Errorf("network namespaces left behind:\n%s", out)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := Up(ctx, o, 2)
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	return o, st
}

func copyExamples(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir("../../examples", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(p) != ".yaml" {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, filepath.Base(p)), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestExamples runs examples/: every pod exists with an IP in its node's
// pod CIDR, its labels, a running echo app that answers HTTP from a pod
// on the other node with its own name, node and namespace; the cluster
// view holds the derived EndpointSlices.
func TestExamples(t *testing.T) {
	o, st := upLab(t, copyExamples(t))
	if !st.Ready {
		t.Fatalf("not ready: %v", st.NotReady)
	}
	if len(st.Errors) > 0 {
		t.Errorf("examples/ has errors: %v", st.Errors)
	}
	l, err := lab.Load(o.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Pods {
		if !p.Ready || p.Phase != "Running" {
			t.Errorf("pod %s/%s: phase %s ready %v, want Running and ready (its readiness probe passed)", p.Namespace, p.Name, p.Phase, p.Ready)
		}
	}
	if len(st.Pods) != 6 || len(l.Pods()) != 6 {
		t.Fatalf("%d pods in status, %d in cluster.yaml; want the examples' 6: %+v", len(st.Pods), len(l.Pods()), st.Pods)
	}
	client, err := l.Pod("production/client")
	if err != nil {
		t.Fatal(err)
	}
	apps := map[string]int{"frontend": 8080, "reviews": 9080, "ratings": 9080, "client": 8080, "outsider": 8080}
	for _, p := range l.Pods() {
		n, _ := l.Node(p.Node)
		if !n.PodCIDR.Contains(p.IP) || !lab.NetnsExists(p.Netns) {
			t.Errorf("pod %s/%s: IP %s outside %s's %s, or netns %s missing", p.Namespace, p.Name, p.IP, n.Name, n.PodCIDR, p.Netns)
		}
		app := p.Labels["app"]
		port, ok := apps[app]
		if !ok || p.Namespace != "production" {
			t.Errorf("pod %s/%s labels %v: want the examples' app label", p.Namespace, p.Name, p.Labels)
			continue
		}
		// From the client, or to the client from another pod.
		from := client
		if p == client {
			from = l.Pods()[0]
			for _, q := range l.Pods() {
				if q.Node != client.Node {
					from = q
				}
			}
		}
		var rep echo.Reply
		url := fmt.Sprintf("http://%s/hello", netip.AddrPortFrom(p.IP, uint16(port)))
		if err := getJSON(t, NetnsHTTPClient(from.Netns, 5*time.Second), url, &rep); err != nil {
			t.Errorf("GET %s from %s: %v", url, from.Name, err)
			continue
		}
		if rep.Service != app || rep.Pod != p.Name || rep.Namespace != "production" || rep.Node != p.Node ||
			!strings.HasPrefix(rep.Peer, from.IP.String()+":") || rep.Version != p.Labels["version"] {
			t.Errorf("%s answered %+v; want service %s version %q pod %s node %s, peer %s", url, rep, app, p.Labels["version"], p.Name, p.Node, from.IP)
		}
	}
	// The controller's view: reviews' slice has both versions' pods.
	matches, _ := filepath.Glob(filepath.Join(o.StateDir, ClusterDir, "endpointslice.discovery.k8s.io_production_reviews-*.yaml"))
	if len(matches) != 1 {
		t.Fatalf("reviews slices in the view: %v", matches)
	}
	b, _ := os.ReadFile(matches[0])
	var s discoveryv1.EndpointSlice
	if err := yaml.UnmarshalStrict(b, &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Endpoints) != 2 || *s.Ports[0].Port != 9080 || s.Labels["kubernetes.io/service-name"] != "reviews" {
		t.Errorf("reviews slice %+v: want 2 endpoints on port 9080", s)
	}
}

func getJSON(t *testing.T, c *http.Client, url string, v any) error {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return errors.New(resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

const steadyPod = `apiVersion: v1
kind: Pod
metadata:
  name: steady
  namespace: ns1
  labels: {app: steady}
spec:
  nodeName: node1
  containers:
  - name: app
    command: ["fibmesh-lab", "app", "echo", "--port", "8080"]
`

func podYAML(ns, name, node, cmd string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s}
spec:
  nodeName: %s
  containers:
  - name: main
    command: ["sh", "-c", %q]
    env:
    - name: MY_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
`, name, ns, node, cmd)
}

func status(t *testing.T, o Options) *Status {
	t.Helper()
	st, err := Get(context.Background(), o.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func findPod(st *Status, ns, name string) *PodStatus {
	for i := range st.Pods {
		if st.Pods[i].Namespace == ns && st.Pods[i].Name == name {
			return &st.Pods[i]
		}
	}
	return nil
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	// As an editor saves: a temporary file renamed over the target.
	tmp := path + ".tmp~"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestDirectoryChanges: the daemon follows the directory: a pod whose
// command exits is restarted with back-off, an added pod appears and a
// removed one disappears, a broken manifest is reported and the rest
// keeps running, pods keep their IPs when the daemon restarts, and pods
// are found by NAMESPACE/NAME or a unique NAME.
func TestDirectoryChanges(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "steady.yaml"), steadyPod)
	o, st := upLab(t, dir)
	steady := findPod(st, "ns1", "steady")
	if steady == nil || steady.Phase != "Running" || !steady.Ready {
		t.Fatalf("steady pod: %+v", steady)
	}

	t.Run("restart with back-off", func(t *testing.T) {
		writeFile(t, filepath.Join(dir, "crash.yaml"), podYAML("ns1", "crasher", "node2", "echo started at $(MY_IP); exit 3"))
		var p *PodStatus
		testenv.Until(t, 30*time.Second, "crasher restarted twice", func() bool {
			p = findPod(status(t, o), "ns1", "crasher")
			return p != nil && p.Restarts >= 2
		})
		if c := p.Containers[0]; c.ExitCode != 3 {
			t.Errorf("crasher container %+v: want last exit code 3", c)
		}
		// Between runs it waits in back-off (the first restart is
		// immediate, as kubelet does; then base, doubling), not ready.
		testenv.Until(t, 10*time.Second, "crasher in back-off", func() bool {
			p := findPod(status(t, o), "ns1", "crasher")
			c := p.Containers[0]
			return c.Reason == "CrashLoopBackOff" && strings.Contains(c.Message, "back-off") && !p.Ready
		})
		b, err := os.ReadFile(ContainerLog(o.StateDir, "ns1", "crasher", "main"))
		if err != nil || !strings.Contains(string(b), "started at 10.200.2.") {
			t.Errorf("crasher log %q (%v): want its output with the pod IP from the Downward API", b, err)
		}
		// Never: exits once, stays terminated.
		writeFile(t, filepath.Join(dir, "once.yaml"), podYAML("ns1", "once", "node1", "exit 0")+"  restartPolicy: Never\n")
		testenv.Until(t, 20*time.Second, "Never pod succeeded", func() bool {
			p := findPod(status(t, o), "ns1", "once")
			return p != nil && p.Phase == "Succeeded" && p.Restarts == 0
		})
	})

	t.Run("added and removed", func(t *testing.T) {
		path := filepath.Join(dir, "extra.yaml")
		view := filepath.Join(o.StateDir, ClusterDir, "pod_ns2_extra.yaml")
		t0 := time.Now()
		writeFile(t, path, podYAML("ns2", "extra", "node2", "exec sleep 1000"))
		for deadline := t0.Add(10 * time.Second); ; time.Sleep(200 * time.Microsecond) {
			if _, err := os.Stat(view); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the pod is not in the controller's view 10s after its file was written")
			}
		}
		// What the lab adds to the propagation budget (file write to
		// route in a remote FIB, 100 ms p99): the rest is the
		// controller's and the agent's.
		t.Logf("pod file written -> pod (with its IP) in the controller's view: %s", time.Since(t0).Round(time.Microsecond))
		var p *PodStatus
		testenv.Until(t, 20*time.Second, "extra pod running", func() bool {
			p = findPod(status(t, o), "ns2", "extra")
			return p != nil && p.Started && p.Containers[0].State == StateRunning
		})
		if !lab.NetnsExists(p.Netns) || !strings.HasPrefix(p.IP, "10.200.2.") {
			t.Fatalf("extra pod %+v: want its netns and an IP of node2", p)
		}
		t0 = time.Now()
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		for deadline := t0.Add(10 * time.Second); ; time.Sleep(200 * time.Microsecond) {
			if _, err := os.Stat(view); errors.Is(err, os.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the pod is still in the controller's view 10s after its file was removed")
			}
		}
		t.Logf("pod file removed -> pod out of the controller's view: %s", time.Since(t0).Round(time.Microsecond))
		testenv.Until(t, 60*time.Second, "extra pod gone", func() bool {
			return findPod(status(t, o), "ns2", "extra") == nil && !lab.NetnsExists(p.Netns)
		})
		if _, err := os.Stat(view); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the controller's view still has the extra pod: %v", err)
		}
	})

	t.Run("broken manifest", func(t *testing.T) {
		writeFile(t, filepath.Join(dir, "broken.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: broken}\nspec:\n  containers: [{name: c, comand: [x]}]\n---\n"+
			podYAML("ns1", "sibling", "node1", "exec sleep 1000"))
		var st *Status
		testenv.Until(t, 20*time.Second, "the error reported and the sibling running", func() bool {
			st = status(t, o)
			p := findPod(st, "ns1", "sibling")
			return len(st.Errors) > 0 && p != nil && p.Started
		})
		if !strings.Contains(st.Errors[0], "broken.yaml (document 1): Pod broken: field spec.containers[0].comand: unknown field") {
			t.Errorf("errors %q: want the file, document, object and field", st.Errors)
		}
		if p := findPod(st, "ns1", "steady"); p == nil || p.Restarts != 0 || p.IP != steady.IP || !p.Ready {
			t.Errorf("steady pod after the broken manifest: %+v, want untouched", p)
		}
	})

	t.Run("names", func(t *testing.T) {
		writeFile(t, filepath.Join(dir, "dup.yaml"), podYAML("ns1", "dup", "node1", "exec sleep 1000")+"---\n"+podYAML("ns2", "dup", "node2", "exec sleep 1000"))
		testenv.Until(t, 20*time.Second, "both dup pods", func() bool {
			st := status(t, o)
			a, b := findPod(st, "ns1", "dup"), findPod(st, "ns2", "dup")
			return a != nil && b != nil && a.Started && b.Started
		})
		l, err := lab.Load(o.StateDir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Pod("dup"); !errors.Is(err, lab.ErrAmbiguous) || !strings.Contains(err.Error(), "ns1/dup and ns2/dup") {
			t.Errorf("Pod(dup): %v, want ambiguous naming both", err)
		}
		for _, ref := range []string{"ns2/dup", "steady", "ns1/steady"} {
			if _, err := l.Pod(ref); err != nil {
				t.Errorf("Pod(%s): %v", ref, err)
			}
		}
		// The CLI takes the same names.
		out, err := exec.Command(fibmeshLab(), "exec", "--state-dir", o.StateDir, "ns2/dup", "--", "ip", "-4", "-o", "addr", "show", "eth0").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "10.200.2.") {
			t.Errorf("fibmesh-lab exec ns2/dup: %v\n%s", err, out)
		}
		out, err = exec.Command(fibmeshLab(), "exec", "--state-dir", o.StateDir, "dup", "--", "true").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "ambiguous") {
			t.Errorf("fibmesh-lab exec dup: %v\n%s; want it refused as ambiguous", err, out)
		}
		out, err = exec.Command(fibmeshLab(), "logs", "--state-dir", o.StateDir, "steady").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "echo listening") {
			t.Errorf("fibmesh-lab logs steady: %v\n%s", err, out)
		}
		out, err = exec.Command(fibmeshLab(), "status", "--state-dir", o.StateDir).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "ns1/steady") || !strings.Contains(string(out), "left out") {
			t.Errorf("fibmesh-lab status: %v\n%s", err, out)
		}
		out, err = exec.Command(fibmeshLab(), "status", "--state-dir", o.StateDir, "-o", "json").Output()
		var sv struct {
			Nodes []struct{ Name string }
			Pods  []PodStatus
		}
		if err != nil || json.Unmarshal(out, &sv) != nil || len(sv.Nodes) != 2 || len(sv.Pods) < 3 {
			t.Errorf("fibmesh-lab status -o json: %v\n%s", err, out)
		}
	})

	t.Run("directory gone and back", func(t *testing.T) {
		away := dir + ".away"
		if err := os.Rename(dir, away); err != nil {
			t.Fatal(err)
		}
		testenv.Until(t, 10*time.Second, "the missing directory reported", func() bool {
			st := status(t, o)
			return len(st.Errors) == 1 && strings.Contains(st.Errors[0], "read manifests")
		})
		if p := findPod(status(t, o), "ns1", "steady"); p == nil || p.Restarts != 0 || !p.Ready {
			t.Errorf("steady pod while the directory is gone: %+v, want it running on", p)
		}
		if err := os.Rename(away, dir); err != nil {
			t.Fatal(err)
		}
		testenv.Until(t, 10*time.Second, "the directory read again", func() bool {
			st := status(t, o)
			return len(st.Errors) > 0 && !strings.Contains(strings.Join(st.Errors, "\n"), "read manifests")
		})
	})

	t.Run("daemon restart keeps IPs", func(t *testing.T) {
		before := map[string]string{}
		for _, p := range status(t, o).Pods {
			before[p.Namespace+"/"+p.Name] = p.IP
		}
		if err := Stop(o.StateDir, time.Minute); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		o2, err := LoadOptions(o.StateDir)
		if err != nil {
			t.Fatal(err)
		}
		st, err := Start(ctx, o2)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Pods {
			if ip, ok := before[p.Namespace+"/"+p.Name]; ok && ip != p.IP {
				t.Errorf("pod %s/%s: IP %s before the restart, %s after", p.Namespace, p.Name, ip, p.IP)
			}
		}
		if len(st.Pods) != len(before) {
			t.Errorf("%d pods after the restart, %d before", len(st.Pods), len(before))
		}
	})
}
