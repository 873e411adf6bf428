package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/fibmesh/fibmesh/internal/cniconf"
	"github.com/fibmesh/fibmesh/internal/testenv"
)

const flannelList = `{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    {"type": "flannel", "delegate": {"hairpinMode": true, "isDefaultGateway": true}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

// hostDirs are a node's /opt/cni/bin and /etc/cni/net.d, as the
// DaemonSet mounts them.
type hostDirs struct{ bin, conf string }

func newHost(t *testing.T) hostDirs {
	t.Helper()
	root := t.TempDir()
	h := hostDirs{bin: filepath.Join(root, "opt/cni/bin"), conf: filepath.Join(root, "etc/cni/net.d")}
	for _, d := range []string{h.bin, h.conf} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func (h hostDirs) args(extra ...string) []string {
	return append([]string{"--bin-dir", h.bin, "--conf-dir", h.conf}, extra...)
}

// plugins returns the plugin types of the conflist at path.
func plugins(t *testing.T, path string) string {
	t.Helper()
	l, _, err := cniconf.ReadList(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range l.Plugins {
		var x struct{ Type string }
		json.Unmarshal(p, &x)
		out = append(out, x.Type)
	}
	return strings.Join(out, ",")
}

// atomicWrite writes as a primary plugin's installer does: a temporary
// file renamed into place.
func atomicWrite(t *testing.T, path, body string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func runCmd(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(pluginBin, args...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
	out, err := cmd.CombinedOutput()
	t.Logf("fibmesh-cni %s: %v\n%s", strings.Join(args, " "), err, out)
	return string(out), err
}

// install --once: the binary copied, the entry last in the primary, a
// second run changes nothing; uninstall takes both away.
func TestInstallOnce(t *testing.T) {
	h := newHost(t)
	primary := filepath.Join(h.conf, "10-flannel.conflist")
	atomicWrite(t, primary, flannelList)
	atomicWrite(t, filepath.Join(h.conf, "20-other.conflist"), strings.Replace(flannelList, "cbr0", "other", 1))
	if _, err := runCmd(t, []string{"NODE_NAME=node7"}, append([]string{"install"}, h.args("--once", "--kubeconfig", "none", "--exclude-namespaces", "kube-system,fibmesh-system,monitoring", "--timeout", "20s")...)...); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(pluginBin)
	got, err := os.ReadFile(filepath.Join(h.bin, "fibmesh-cni"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("binary in %s: %d bytes, %v; want a copy of %s", h.bin, len(got), err, pluginBin)
	}
	if fi, _ := os.Stat(filepath.Join(h.bin, "fibmesh-cni")); fi.Mode().Perm() != 0o755 {
		t.Errorf("binary mode %v", fi.Mode())
	}
	if p := plugins(t, primary); p != "flannel,portmap,fibmesh-cni" {
		t.Errorf("primary plugins %s, want fibmesh-cni last", p)
	}
	if p := plugins(t, filepath.Join(h.conf, "20-other.conflist")); p != "flannel,portmap" {
		t.Errorf("another list was changed: %s", p)
	}
	l, _, _ := cniconf.ReadList(primary)
	var s cniconf.Settings
	json.Unmarshal(l.Plugins[2], &s)
	if s.Node != "node7" || s.RunDir != "/run/fibmesh" || strings.Join(s.ExcludeNamespaces, ",") != "kube-system,fibmesh-system,monitoring" || s.Timeout != "20s" || s.Kubeconfig != "" {
		t.Errorf("entry %+v", s)
	}
	before, _ := os.ReadFile(primary)
	if _, err := runCmd(t, []string{"NODE_NAME=node7"}, append([]string{"install"}, h.args("--once", "--kubeconfig", "none", "--exclude-namespaces", "kube-system,fibmesh-system,monitoring", "--timeout", "20s")...)...); err != nil {
		t.Errorf("second install: %v", err)
	}
	if after, _ := os.ReadFile(primary); !bytes.Equal(before, after) {
		t.Errorf("second install changed the file:\n%s\n->\n%s", before, after)
	}
	if _, err := runCmd(t, nil, append([]string{"uninstall"}, h.args()...)...); err != nil {
		t.Fatal(err)
	}
	if p := plugins(t, primary); p != "flannel,portmap" {
		t.Errorf("after uninstall: %s", p)
	}
	if _, err := os.Stat(filepath.Join(h.bin, "fibmesh-cni")); !os.IsNotExist(err) {
		t.Errorf("binary still there: %v", err)
	}
}

// A single-plugin .conf becomes a .conflist; an empty directory or a
// missing node is a clear error.
func TestInstallConfAndErrors(t *testing.T) {
	h := newHost(t)
	out, err := runCmd(t, nil, append([]string{"install"}, h.args("--once", "--node", "n1", "--kubeconfig", "none")...)...)
	if err == nil || !strings.Contains(out, "no CNI network configuration in "+h.conf) || !strings.Contains(out, "primary CNI plugin") {
		t.Errorf("empty conf dir: %v", err)
	}
	out, err = runCmd(t, nil, append([]string{"install"}, h.args("--once")...)...)
	if err == nil || !strings.Contains(out, "--node (or $NODE_NAME) is required") {
		t.Errorf("no node: %v", err)
	}
	conf := filepath.Join(h.conf, "10-bridge.conf")
	atomicWrite(t, conf, `{"cniVersion": "0.4.0", "name": "mynet", "type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "10.22.0.0/16"}}`)
	if _, err := runCmd(t, nil, append([]string{"install"}, h.args("--once", "--node", "n1", "--kubeconfig", "none")...)...); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(conf); !os.IsNotExist(err) {
		t.Errorf("%s still there", conf)
	}
	if p := plugins(t, filepath.Join(h.conf, "10-bridge.conflist")); p != "bridge,fibmesh-cni" {
		t.Errorf("converted: %s", p)
	}
}

// installProc is a running `fibmesh-cni install`.
type installProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  bytes.Buffer
	done chan error
}

func (p *installProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.Write(b)
}

func (p *installProc) logged() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func startInstall(t *testing.T, env []string, args ...string) *installProc {
	t.Helper()
	p := &installProc{done: make(chan error, 1)}
	p.cmd = exec.Command(pluginBin, append([]string{"install"}, args...)...)
	p.cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		t.Logf("installer log:\n%s", p.logged())
	})
	testenv.Until(t, 10*time.Second, "the installer watching", func() bool { return strings.Contains(p.logged(), "watching the CNI configuration directory") })
	return p
}

// stop sends SIGTERM, as the kubelet does, and waits for a clean exit.
func (p *installProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err // for Cleanup
		if err != nil {
			t.Errorf("installer exit: %v\n%s", err, p.logged())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("installer did not exit on SIGTERM:\n%s", p.logged())
	}
}

// The installer keeps its entry in place while it runs: the primary
// plugin rewriting its file, a new primary appearing, and a rotated
// ServiceAccount token (the kubeconfig follows). At SIGTERM it keeps the
// entry unless told or the DaemonSet is deleted.
func TestInstallWatch(t *testing.T) {
	h := newHost(t)
	sa := t.TempDir()
	writeSA := func(token string) {
		atomicWrite(t, filepath.Join(sa, "token"), token)
		atomicWrite(t, filepath.Join(sa, "ca.crt"), "-----BEGIN CERTIFICATE-----\nMIIBnot-a-real-ca\n-----END CERTIFICATE-----\n")
	}
	writeSA("token-1")
	primary := filepath.Join(h.conf, "10-flannel.conflist")
	atomicWrite(t, primary, flannelList)
	env := []string{"NODE_NAME=node1", "KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443"}
	// No POD_NAMESPACE: at exit the DaemonSet cannot be looked up, and
	// the entry stays (fail closed).
	p := startInstall(t, env, h.args("--service-account-dir", sa, "--host-conf-dir", "/etc/cni/net.d")...)
	if got := plugins(t, primary); got != "flannel,portmap,fibmesh-cni" {
		t.Fatalf("plugins %s", got)
	}
	kc := filepath.Join(h.conf, KubeconfigName)
	readToken := func() string {
		cfg, err := clientcmd.LoadFromFile(kc)
		if err != nil {
			return err.Error()
		}
		if fi, err := os.Stat(kc); err != nil || fi.Mode().Perm() != 0o600 {
			return "mode " + fi.Mode().String()
		}
		if cfg.Clusters["cluster"].Server != "https://10.96.0.1:443" {
			return "server " + cfg.Clusters["cluster"].Server
		}
		return cfg.AuthInfos["fibmesh-cni"].Token
	}
	if tok := readToken(); tok != "token-1" {
		t.Errorf("kubeconfig token: %s", tok)
	}
	l, _, _ := cniconf.ReadList(primary)
	var s cniconf.Settings
	json.Unmarshal(l.Plugins[2], &s)
	if s.Kubeconfig != "/etc/cni/net.d/"+KubeconfigName {
		t.Errorf("entry's kubeconfig %q, want the host's path", s.Kubeconfig)
	}

	// The primary plugin rewrites its file without the entry.
	atomicWrite(t, primary, flannelList)
	testenv.Until(t, 10*time.Second, "the entry re-inserted", func() bool { return plugins(t, primary) == "flannel,portmap,fibmesh-cni" })
	// ... or in place (truncate and write).
	if err := os.WriteFile(primary, []byte(flannelList), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.Until(t, 10*time.Second, "the entry re-inserted", func() bool { return plugins(t, primary) == "flannel,portmap,fibmesh-cni" })
	// A new primary: the entry moves.
	calico := filepath.Join(h.conf, "05-calico.conflist")
	atomicWrite(t, calico, strings.ReplaceAll(flannelList, "flannel", "calico"))
	testenv.Until(t, 10*time.Second, "the entry in the new primary", func() bool {
		return plugins(t, calico) == "calico,portmap,fibmesh-cni" && plugins(t, primary) == "flannel,portmap"
	})
	// The token rotates.
	writeSA("token-2")
	testenv.Until(t, 10*time.Second, "the kubeconfig's token refreshed", func() bool { return readToken() == "token-2" })

	p.stop(t)
	if got := plugins(t, calico); got != "calico,portmap,fibmesh-cni" {
		t.Errorf("after SIGTERM without a deleted DaemonSet: %s, want the entry kept", got)
	}
	if !strings.Contains(p.logged(), "entry kept") {
		t.Errorf("the installer did not say it kept the entry")
	}
	if _, err := os.Stat(filepath.Join(h.bin, "fibmesh-cni")); err != nil {
		t.Errorf("binary: %v", err)
	}

	// --uninstall-on-exit: everything goes at SIGTERM.
	p = startInstall(t, env, h.args("--service-account-dir", sa, "--uninstall-on-exit")...)
	p.stop(t)
	if got := plugins(t, calico); got != "calico,portmap" {
		t.Errorf("after SIGTERM with --uninstall-on-exit: %s", got)
	}
	for _, f := range []string{kc, filepath.Join(h.bin, "fibmesh-cni")} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s still there: %v", f, err)
		}
	}
}

// Started before the primary plugin wrote its configuration, the
// installer says so and inserts the entry once it appears.
func TestInstallWaitsForPrimary(t *testing.T) {
	h := newHost(t)
	p := startInstall(t, []string{"NODE_NAME=node1"}, h.args("--kubeconfig", "none")...)
	if !strings.Contains(p.logged(), "no CNI network configuration in "+h.conf) {
		t.Errorf("no error logged for the missing primary")
	}
	primary := filepath.Join(h.conf, "10-flannel.conflist")
	atomicWrite(t, primary, flannelList)
	testenv.Until(t, 10*time.Second, "the entry inserted", func() bool { return plugins(t, primary) == "flannel,portmap,fibmesh-cni" })
	p.stop(t)
}
