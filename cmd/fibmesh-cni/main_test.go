package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fibmesh/fibmesh/internal/testenv"
)

// pluginBin is the fibmesh-cni binary TestMain built: the tests run it as
// a container runtime and a DaemonSet would.
var pluginBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fibmesh-cni-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := testenv.BuildCommands(dir, "cmd/fibmesh-cni"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	pluginBin = filepath.Join(dir, "fibmesh-cni")
	code := m.Run()
	os.RemoveAll(dir)
	if refPluginsBuilt {
		os.RemoveAll(refPluginsDir)
	}
	os.Exit(code)
}

// cniCall is one invocation of a CNI plugin as a runtime makes it: the
// CNI_* environment and the network configuration on stdin.
type cniCall struct {
	Command, ContainerID, Netns, IfName, Args, Path string
	// InNetns runs the plugin inside that named network namespace (the
	// "host" a runtime would run it in), through ip netns exec.
	InNetns string
}

// cniError is the CNI spec's error object.
type cniError struct {
	Code    uint   `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details"`
}

// run execs bin with c's environment and stdin; it returns stdout and,
// when the plugin failed, its error object (the test fails if a failing
// plugin printed none, or exited 0 with one).
func (c cniCall) run(t *testing.T, bin string, stdin []byte) ([]byte, *cniError) {
	t.Helper()
	name, args := bin, []string(nil)
	if c.InNetns != "" {
		name, args = "ip", []string{"netns", "exec", c.InNetns, bin}
	}
	cmd := exec.Command(name, args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND=" + c.Command, "CNI_CONTAINERID=" + c.ContainerID,
		"CNI_NETNS=" + c.Netns, "CNI_IFNAME=" + c.IfName, "CNI_ARGS=" + c.Args, "CNI_PATH=" + c.Path}
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("%s %s (%s): exit %v\nstdout: %s\nstderr: %s", filepath.Base(bin), c.Command, c.Args, err, stdout.Bytes(), stderr.Bytes())
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %s: %v", bin, err)
	}
	if err == nil {
		return stdout.Bytes(), nil
	}
	var e cniError
	if jerr := json.Unmarshal(stdout.Bytes(), &e); jerr != nil || e.Msg == "" {
		t.Fatalf("%s %s failed (%v) without a CNI error object on stdout: %q", bin, c.Command, err, stdout.Bytes())
	}
	return stdout.Bytes(), &e
}

// podArgs is CNI_ARGS as the kubelet (containerd's CRI) passes it.
func podArgs(ns, name string) string {
	return "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + ns + ";K8S_POD_NAME=" + name + ";K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=0b5c1c1e"
}

// pluginConf is fibmesh-cni's configuration as a runtime hands it over:
// its conflist entry with the list's name and cniVersion and the previous
// plugin's result.
func pluginConf(t *testing.T, entry map[string]any, prevResult json.RawMessage) []byte {
	t.Helper()
	c := map[string]any{"cniVersion": "1.0.0", "name": "fmcni-test", "type": "fibmesh-cni"}
	for k, v := range entry {
		c[k] = v
	}
	if prevResult != nil {
		c["prevResult"] = prevResult
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Garbage on stdin, a configuration missing what fibmesh-cni needs, no
// prevResult: a CNI error object on stdout, a non-zero exit, a message
// naming what is wrong.
func TestBadConfig(t *testing.T) {
	call := cniCall{Command: "ADD", ContainerID: "c1", Netns: "/proc/self/ns/net", IfName: "eth0", Args: podArgs("shop", "web"), Path: "/opt/cni/bin"}
	prev := json.RawMessage(`{"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}], "ips": [{"address": "10.0.0.2/24", "interface": 0}]}`)
	for _, tt := range []struct {
		name    string
		command string
		stdin   []byte
		code    uint
		details string
	}{
		{"garbage", "ADD", []byte("\x00not json{"), 6, "fibmesh-cni configuration: invalid character"},
		{"garbage DEL", "DEL", []byte("{{{"), 6, "fibmesh-cni configuration"},
		{"no node", "ADD", pluginConf(t, nil, prev), 7, "node is required"},
		{"bad timeout", "ADD", pluginConf(t, map[string]any{"node": "node1", "timeout": "soon"}, prev), 7, `timeout "soon"`},
		{"not chained", "ADD", pluginConf(t, map[string]any{"node": "node1"}, nil), 7, "chained plugin"},
		{"bad prevResult", "ADD", pluginConf(t, map[string]any{"node": "node1"}, json.RawMessage(`{"cniVersion": "1.0.0", "ips": "many"}`)), 6, "prevResult"},
		{"bad CNI_ARGS", "ADD", nil, 4, "is not KEY=VALUE"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := call
			c.Command = tt.command
			stdin := tt.stdin
			if stdin == nil {
				c.Args = "K8S_POD_NAME"
				stdin = pluginConf(t, map[string]any{"node": "node1"}, prev)
			}
			_, e := c.run(t, pluginBin, stdin)
			if e == nil {
				t.Fatal("succeeded")
			}
			if e.Code != tt.code || !strings.Contains(e.Details, tt.details) {
				t.Errorf("error %+v, want code %d with details saying %q", e, tt.code, tt.details)
			}
		})
	}
}

// VERSION, as a runtime asks it.
func TestVersion(t *testing.T) {
	out, e := cniCall{Command: "VERSION"}.run(t, pluginBin, []byte(`{"cniVersion": "1.0.0"}`))
	if e != nil {
		t.Fatal(e)
	}
	var v struct {
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(out, &v); err != nil || !strings.Contains(strings.Join(v.SupportedVersions, ","), "1.0.0") {
		t.Errorf("VERSION: %s %v", out, err)
	}
}

// --help says what each command does and install's flags.
func TestHelp(t *testing.T) {
	out, err := exec.Command(pluginBin, "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "fibmesh-cni install") || !strings.Contains(string(out), "docs/cni.md") {
		t.Errorf("--help: %v\n%s", err, out)
	}
	out, err = exec.Command(pluginBin, "install", "--help").CombinedOutput()
	if err != nil {
		t.Errorf("install --help: %v", err)
	}
	for _, f := range []string{"-bin-dir", "-conf-dir", "-host-conf-dir", "-node", "-run-dir", "-exclude-namespaces", "-uninstall-on-exit", "-daemonset", "-namespace", "NODE_NAME", "POD_NAMESPACE"} {
		if !strings.Contains(string(out), f) {
			t.Errorf("install --help lacks %s:\n%s", f, out)
		}
	}
	if out, err := exec.Command(pluginBin, "frobnicate").CombinedOutput(); err == nil || !strings.Contains(string(out), `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %v\n%s", err, out)
	}
}
