package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/api/enrol"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/lab/kubelet"
	"github.com/fibmesh/fibmesh/slowpath/capture"
)

// pluginsEnv names a directory holding the bridge and host-local plugins,
// built already; without it the tests build them from hack/cni-plugins.
const pluginsEnv = "FIBMESH_CNI_PLUGINS"

var (
	refPluginsOnce sync.Once
	refPluginsDir  string
	refPluginsErr  error
	// refPluginsBuilt: refPluginsDir is ours to remove (TestMain does).
	refPluginsBuilt bool
)

// refPlugins returns a CNI_PATH holding containernetworking/plugins'
// bridge and host-local, built once per test binary from the tool module
// hack/cni-plugins (its own go.mod; the go tool caches the build).
func refPlugins(t *testing.T) string {
	t.Helper()
	refPluginsOnce.Do(func() {
		if d := os.Getenv(pluginsEnv); d != "" {
			refPluginsDir = d
			return
		}
		d, err := os.MkdirTemp("", "fibmesh-cni-plugins-")
		if err != nil {
			refPluginsErr = err
			return
		}
		refPluginsDir, refPluginsBuilt = d, true
		cmd := exec.Command(testenv.GoTool(), "build", "-o", d+"/",
			"github.com/containernetworking/plugins/plugins/main/bridge",
			"github.com/containernetworking/plugins/plugins/ipam/host-local")
		cmd.Dir = "../../hack/cni-plugins"
		if out, err := cmd.CombinedOutput(); err != nil {
			refPluginsErr = fmt.Errorf("build the reference CNI plugins in hack/cni-plugins: %v\n%s(set %s to a directory holding bridge and host-local to use those)", err, out, pluginsEnv)
		}
	})
	if refPluginsErr != nil {
		t.Fatal(refPluginsErr)
	}
	for _, p := range []string{"bridge", "host-local"} {
		if _, err := os.Stat(filepath.Join(refPluginsDir, p)); err != nil {
			t.Fatalf("%s: %v", pluginsEnv, err)
		}
	}
	return refPluginsDir
}

// netnsName returns a fresh name with the test's prefix (fmcni-) and
// creates the named network namespace, deleted when the test ends.
func newNetns(t *testing.T, role string) string {
	t.Helper()
	b := make([]byte, 3)
	rand.Read(b)
	name := "fmcni-" + role + "-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	return name
}

// bridgeRun is a pod sandbox set up by the bridge plugin, as the
// runtime's primary plugin: its result is fibmesh-cni's prevResult.
type bridgeRun struct {
	host, pod string // netns names
	result    json.RawMessage
	cniPath   string
}

// runBridge creates a "host" and a "pod" network namespace and runs the
// bridge plugin (host-local IPAM, state in a temporary directory) in the
// host one for the pod one, as a runtime runs its primary plugin: the
// bridge and the veth's host end live in namespaces the test created
// only. DEL runs when the test ends.
func runBridge(t *testing.T) *bridgeRun {
	t.Helper()
	cniPath := refPlugins(t)
	r := &bridgeRun{host: newNetns(t, "host"), pod: newNetns(t, "pod"), cniPath: cniPath}
	conf, _ := json.Marshal(map[string]any{
		"cniVersion": "1.0.0", "name": "fmcni-test", "type": "bridge", "bridge": "fmcni0", "isGateway": true, "ipMasq": false,
		"ipam": map[string]any{"type": "host-local", "dataDir": t.TempDir(), "ranges": [][]map[string]string{{{"subnet": "10.250.7.0/24"}}},
			"routes": []map[string]string{{"dst": "0.0.0.0/0"}}},
	})
	call := cniCall{Command: "ADD", ContainerID: "fmcni-c1", Netns: lab.NetnsPath(r.pod), IfName: "eth0", Args: podArgs("shop", "web"), Path: cniPath, InNetns: r.host}
	out, e := call.run(t, filepath.Join(cniPath, "bridge"), conf)
	if e != nil {
		t.Fatalf("bridge ADD: %+v", e)
	}
	r.result = out
	t.Cleanup(func() {
		call.Command = "DEL"
		if _, e := call.run(t, filepath.Join(cniPath, "bridge"), conf); e != nil {
			t.Errorf("bridge DEL: %+v", e)
		}
	})
	var res struct {
		IPs []struct{ Address string } `json:"ips"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) != 1 || !strings.HasPrefix(res.IPs[0].Address, "10.250.7.") {
		t.Fatalf("bridge result %s: %v", out, err)
	}
	return r
}

// sameJSON reports whether a and b are the same JSON value.
func sameJSON(t *testing.T, a, b []byte) string {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		return fmt.Sprintf("%q: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		return fmt.Sprintf("%q: %v", b, err)
	}
	return cmp.Diff(x, y)
}

// Without an agent the pod's network setup fails, with a CNI error that
// says why; pods of excluded namespaces and non-Kubernetes sandboxes pass
// through with the bridge's result unchanged; DEL succeeds.
func TestChainedWithoutAgent(t *testing.T) {
	testenv.NeedRoot(t)
	br := runBridge(t)
	runDir := t.TempDir()
	conf := pluginConf(t, map[string]any{"node": "node1", "runDir": runDir, "timeout": "5s", "logLevel": "debug"}, br.result)
	call := cniCall{Command: "ADD", ContainerID: "fmcni-c1", Netns: lab.NetnsPath(br.pod), IfName: "eth0", Args: podArgs("shop", "web"), Path: br.cniPath + ":" + filepath.Dir(pluginBin), InNetns: br.host}

	// No socket: the agent never ran on this node.
	_, e := call.run(t, pluginBin, conf)
	if e == nil || e.Code != 11 || !strings.Contains(e.Msg, "the fibmesh agent is not running on node node1") || !strings.Contains(e.Details, enrol.SocketPath(runDir, "node1")) {
		t.Errorf("ADD, no agent socket: %+v", e)
	}
	// A socket nothing listens on: the agent died.
	sock := enrol.SocketPath(runDir, "node1")
	os.MkdirAll(filepath.Dir(sock), 0o700)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, e := call.run(t, pluginBin, conf); e == nil || e.Code != 11 || !strings.Contains(e.Details, "connection refused") {
		t.Errorf("ADD, dead agent: %+v", e)
	}
	// An agent that takes the request and never answers: the plugin's
	// timeout.
	os.Remove(sock)
	ln, err = net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c) }()
		}
	}()
	start := time.Now()
	if _, e := call.run(t, pluginBin, pluginConf(t, map[string]any{"node": "node1", "runDir": runDir, "timeout": "1s"}, br.result)); e == nil || e.Code != 11 || !strings.Contains(e.Msg, "did not answer in time") {
		t.Errorf("ADD, hung agent: %+v", e)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("ADD with a 1s timeout took %s", d)
	}
	ln.Close()
	os.Remove(sock)

	// CHECK without an agent fails; DEL succeeds (idempotent), twice.
	c := call
	c.Command = "CHECK"
	if _, e := c.run(t, pluginBin, conf); e == nil {
		t.Error("CHECK succeeded without an agent")
	}
	c.Command = "DEL"
	for range 2 {
		if _, e := c.run(t, pluginBin, conf); e != nil {
			t.Errorf("DEL without an agent: %+v", e)
		}
	}

	// Excluded namespace, a sandbox that is no Kubernetes pod: the
	// bridge's result, unchanged, without an agent.
	for _, args := range []string{podArgs("kube-system", "coredns-1"), podArgs("fibmesh-system", "fibmesh-controller-0"), "IgnoreUnknown=1"} {
		c := call
		c.Args = args
		out, e := c.run(t, pluginBin, conf)
		if e != nil {
			t.Errorf("ADD %s: %+v", args, e)
			continue
		}
		if d := sameJSON(t, br.result, out); d != "" {
			t.Errorf("ADD %s changed the prevResult (-bridge +fibmesh-cni):\n%s", args, d)
		}
	}
	// A configured exclusion list replaces the default.
	c = call
	c.Args = podArgs("monitoring", "prom-0")
	if _, e := c.run(t, pluginBin, pluginConf(t, map[string]any{"node": "node1", "runDir": runDir, "excludeNamespaces": []string{"monitoring"}}, br.result)); e != nil {
		t.Errorf("ADD in a configured excluded namespace: %+v", e)
	}
}

// cniLab is a lab node with fibmesh's controller and agent, run through
// the fibmesh-lab binary, and one pod, shop/web, on node1.
type cniLab struct {
	state, prefix, bin string
}

const cniLabPrefix = "fm-cni-"

var labBinOnce sync.Once
var labBinDir string
var labBinErr error

func upLab(t *testing.T) *cniLab {
	t.Helper()
	testenv.NeedRoot(t)
	labBinOnce.Do(func() {
		labBinDir, labBinErr = os.MkdirTemp("", "fibmesh-cni-lab-bin-")
		if labBinErr == nil {
			labBinErr = testenv.BuildCommands(labBinDir, "cmd/fibmesh-lab", "cmd/fibmesh-controller", "cmd/fibmesh-agent", "cmd/fibctl")
		}
	})
	if labBinErr != nil {
		t.Fatal(labBinErr)
	}
	t.Cleanup(func() { os.RemoveAll(labBinDir) })
	root := t.TempDir()
	l := &cniLab{state: filepath.Join(root, "state"), prefix: cniLabPrefix, bin: labBinDir}
	dir := filepath.Join(root, "manifests")
	os.MkdirAll(dir, 0o755)
	manifest := `apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  nodeName: node1
  serviceAccountName: web
  containers:
  - name: web
    command: [fibmesh-lab, app, echo, --port, "8080"]
`
	if err := os.WriteFile(filepath.Join(dir, "shop.yaml"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{"controller.log", "agent-node1.log", "kubelet.log"} {
				if b, err := os.ReadFile(filepath.Join(l.state, f)); err == nil {
					if len(b) > 16384 {
						b = b[len(b)-16384:]
					}
					t.Logf("%s (tail):\n%s", f, b)
				}
			}
		}
		if out, err := l.lab("down"); err != nil {
			t.Errorf("fibmesh-lab down: %v\n%s", err, out)
		}
	})
	if out, err := l.lab("up", "-f", dir, "--mesh", "--nodes", "1", "--bin", labBinDir); err != nil {
		t.Fatalf("fibmesh-lab up: %v\n%s", err, out)
	}
	return l
}

func (l *cniLab) lab(args ...string) ([]byte, error) {
	args = append(args, "--prefix", l.prefix, "--state-dir", l.state)
	cmd := exec.Command(filepath.Join(l.bin, "fibmesh-lab"), args...)
	cmd.Env = append(os.Environ(), "PATH="+l.bin+":"+os.Getenv("PATH"))
	return cmd.CombinedOutput()
}

func (l *cniLab) pod(t *testing.T) kubelet.PodStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := kubelet.Get(ctx, l.state)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Pods {
		if p.Namespace == "shop" && p.Name == "web" {
			return p
		}
	}
	t.Fatalf("no pod shop/web in the lab: %+v", st.Pods)
	return kubelet.PodStatus{}
}

// agentPods is node1's agent's /pods.
func (l *cniLab) agentPods(t *testing.T) []admin.PodInfo {
	t.Helper()
	c := kubelet.NetnsHTTPClient(l.prefix+"node1", 5*time.Second)
	resp, err := c.Get("http://" + kubelet.AgentAdmin + "/pods")
	if err != nil {
		t.Fatalf("agent /pods: %v", err)
	}
	defer resp.Body.Close()
	var pods []admin.PodInfo
	if err := json.NewDecoder(resp.Body).Decode(&pods); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("agent /pods: %s %v", resp.Status, err)
	}
	return pods
}

// captured reports whether the capture's nftables table is in netns.
func captured(t *testing.T, netnsPath string) bool {
	t.Helper()
	f, err := os.Open(netnsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ok, err := capture.Installed(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// The plugin, invoked as a runtime invokes it after the bridge plugin,
// against a lab pod and its node's real agent: DEL releases the pod
// (the agent no longer lists it, its capture table is gone), ADD enrols
// it again (listed with its SPIFFE ID, captured) and returns the
// bridge's result unchanged, CHECK agrees with both; a pod the agent
// does not place on its node fails ADD with a CNI error.
func TestChainedWithLabAgent(t *testing.T) {
	testenv.NeedRoot(t)
	br := runBridge(t)
	l := upLab(t)
	var pod kubelet.PodStatus
	testenv.Eventually(t, 90*time.Second, "shop/web enrolled by the lab", func() error {
		pod = l.pod(t)
		if !pod.Started {
			return fmt.Errorf("pod not started: %+v", pod)
		}
		for _, p := range l.agentPods(t) {
			if p.Namespace == "shop" && p.Name == "web" {
				return nil
			}
		}
		return fmt.Errorf("not in the agent's /pods")
	})
	netnsPath := lab.NetnsPath(pod.Netns)
	runDir := kubelet.RunDir(l.state, l.prefix)
	conf := pluginConf(t, map[string]any{"node": "node1", "runDir": runDir, "timeout": "20s"}, br.result)
	call := cniCall{ContainerID: "fmcni-c1", Netns: netnsPath, IfName: "eth0", Args: podArgs("shop", "web"), Path: br.cniPath + ":" + filepath.Dir(pluginBin), InNetns: br.host}
	do := func(cmd string, conf []byte) ([]byte, *cniError) {
		c := call
		c.Command = cmd
		return c.run(t, pluginBin, conf)
	}
	enrolled := func() *admin.PodInfo {
		for _, p := range l.agentPods(t) {
			if p.Namespace == "shop" && p.Name == "web" {
				return &p
			}
		}
		return nil
	}

	if !captured(t, netnsPath) {
		t.Fatal("the lab's enrolled pod is not captured")
	}
	if _, e := do("CHECK", conf); e != nil {
		t.Errorf("CHECK of an enrolled, captured pod: %+v", e)
	}
	// DEL releases the pod.
	if _, e := do("DEL", conf); e != nil {
		t.Fatalf("DEL: %+v", e)
	}
	if p := enrolled(); p != nil {
		t.Errorf("after DEL the agent still lists %+v", p)
	}
	if captured(t, netnsPath) {
		t.Error("after DEL the pod's capture table is still there")
	}
	if _, e := do("CHECK", conf); e == nil || !strings.Contains(e.Details, "pod shop/web is not enrolled on this node") {
		t.Errorf("CHECK of a released pod: %+v", e)
	}
	if _, e := do("DEL", conf); e != nil {
		t.Errorf("second DEL: %+v", e)
	}

	// ADD enrols it again.
	out, e := do("ADD", conf)
	if e != nil {
		t.Fatalf("ADD: %+v", e)
	}
	if d := sameJSON(t, br.result, out); d != "" {
		t.Errorf("ADD changed the prevResult (-bridge +fibmesh-cni):\n%s", d)
	}
	p := enrolled()
	if p == nil || p.Netns != netnsPath || p.Identity != "spiffe://cluster.local/ns/shop/sa/web" {
		t.Errorf("after ADD the agent lists %+v, want shop/web in %s as spiffe://cluster.local/ns/shop/sa/web", p, netnsPath)
	}
	if !captured(t, netnsPath) {
		t.Error("after ADD the pod is not captured")
	}
	if _, e := do("CHECK", conf); e != nil {
		t.Errorf("CHECK after ADD: %+v", e)
	}
	// CHECK with another network namespace: not this pod's.
	c := call
	c.Command, c.Netns = "CHECK", lab.NetnsPath(br.pod)
	if _, e := c.run(t, pluginBin, conf); e == nil || !strings.Contains(e.Details, "is enrolled in network namespace") {
		t.Errorf("CHECK in another netns: %+v", e)
	}

	// A pod the controller does not place on node1: the agent refuses,
	// ADD fails.
	c = call
	c.Command, c.Args = "ADD", podArgs("shop", "ghost")
	if _, e := c.run(t, pluginBin, pluginConf(t, map[string]any{"node": "node1", "runDir": runDir, "timeout": "3s"}, br.result)); e == nil {
		t.Error("ADD of a pod unknown to the controller succeeded")
	}
	if p := enrolled(); p == nil {
		t.Error("shop/web was released by another pod's failed ADD")
	}
}
