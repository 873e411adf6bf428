package cniconf

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const bridgeList = `{
  "cniVersion": "1.0.0",
  "name": "k8s-pod-network",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}`

var settings = Settings{Node: "node1", RunDir: "/run/fibmesh", ExcludeNamespaces: DefaultExcludeNamespaces, Timeout: "30s", LogLevel: "debug"}

func pluginTypes(t *testing.T, path string) []string {
	t.Helper()
	l, _, err := ReadList(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range l.Plugins {
		var x struct{ Type string }
		json.Unmarshal(p, &x)
		out = append(out, x.Type)
	}
	return out
}

func write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestInsertRemove(t *testing.T) {
	dir := t.TempDir()
	// The lexically first file is the primary; a later one is not touched.
	write(t, filepath.Join(dir, "10-flannel.conflist"), bridgeList)
	write(t, filepath.Join(dir, "99-other.conflist"), strings.Replace(bridgeList, "k8s-pod-network", "other", 1))
	write(t, filepath.Join(dir, "README"), "not a configuration")
	res, err := Insert(dir, settings)
	if err != nil {
		t.Fatal(err)
	}
	primary := filepath.Join(dir, "10-flannel.conflist")
	if res.Path != primary || !res.Changed {
		t.Fatalf("insert: %+v", res)
	}
	if got := strings.Join(pluginTypes(t, primary), ","); got != "bridge,portmap,fibmesh-cni" {
		t.Errorf("plugins %s, want fibmesh-cni last", got)
	}
	if got := strings.Join(pluginTypes(t, filepath.Join(dir, "99-other.conflist")), ","); got != "bridge,portmap" {
		t.Errorf("the other list changed: %s", got)
	}
	// The entry parses as the plugin reads it (the runtime adds name,
	// cniVersion and prevResult).
	l, _, _ := ReadList(primary)
	var entry map[string]any
	json.Unmarshal(l.Plugins[2], &entry)
	entry["cniVersion"], entry["name"] = "1.0.0", "k8s-pod-network"
	b, _ := json.Marshal(entry)
	c, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if c.Node != "node1" || c.TimeoutValue != 30*time.Second || !c.Excluded("kube-system") || c.Excluded("default") {
		t.Errorf("parsed entry: %+v", c.Settings)
	}
	// The other plugins are written back as they were.
	if !jsonEqual(l.Plugins[0], []byte(`{"type": "bridge", "bridge": "cni0", "isGateway": true, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]]}}`)) {
		t.Errorf("bridge entry changed: %s", l.Plugins[0])
	}

	// Idempotent: nothing written the second time.
	before, _ := os.Stat(primary)
	res, err = Insert(dir, settings)
	if err != nil || res.Changed {
		t.Fatalf("second insert: %+v %v", res, err)
	}
	if after, _ := os.Stat(primary); !after.ModTime().Equal(before.ModTime()) {
		t.Error("second insert rewrote the file")
	}
	// Changed settings replace the entry, still one, still last.
	s2 := settings
	s2.LogLevel = "info"
	if res, err = Insert(dir, s2); err != nil || !res.Changed {
		t.Fatalf("insert with new settings: %+v %v", res, err)
	}
	if got := strings.Join(pluginTypes(t, primary), ","); got != "bridge,portmap,fibmesh-cni" {
		t.Errorf("plugins %s", got)
	}
	// The primary plugin rewrites its file (our entry gone, or not last).
	write(t, primary, strings.Replace(bridgeList, `{"type": "portmap"`, `{"type": "fibmesh-cni", "node": "node1"}, {"type": "portmap"`, 1))
	if res, err = Insert(dir, s2); err != nil || !res.Changed {
		t.Fatalf("insert after a rewrite: %+v %v", res, err)
	}
	if got := strings.Join(pluginTypes(t, primary), ","); got != "bridge,portmap,fibmesh-cni" {
		t.Errorf("plugins %s", got)
	}
	// A new, lexically earlier primary: the entry moves there.
	write(t, filepath.Join(dir, "05-calico.conflist"), bridgeList)
	res, err = Insert(dir, s2)
	if err != nil || res.Path != filepath.Join(dir, "05-calico.conflist") || len(res.RemovedFrom) != 1 || res.RemovedFrom[0] != primary {
		t.Fatalf("new primary: %+v %v", res, err)
	}
	// Remove takes it out everywhere.
	changed, err := Remove(dir)
	if err != nil || len(changed) != 1 {
		t.Fatalf("remove: %v %v", changed, err)
	}
	for _, f := range []string{"05-calico.conflist", "10-flannel.conflist"} {
		if got := strings.Join(pluginTypes(t, filepath.Join(dir, f)), ","); got != "bridge,portmap" {
			t.Errorf("%s after remove: %s", f, got)
		}
	}
	if changed, err := Remove(dir); err != nil || len(changed) != 0 {
		t.Errorf("second remove: %v %v", changed, err)
	}
}

func TestInsertConvertsConf(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "10-bridge.conf")
	write(t, conf, `{"cniVersion": "0.4.0", "name": "mynet", "type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "10.22.0.0/16"}}`)
	if err := os.Chmod(conf, 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := Insert(dir, settings)
	if err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(dir, "10-bridge.conflist")
	if res.Path != list || res.Converted != conf {
		t.Fatalf("insert: %+v", res)
	}
	if _, err := os.Stat(conf); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still there: %v", conf, err)
	}
	l, perm, err := ReadList(list)
	if err != nil {
		t.Fatal(err)
	}
	if perm != 0o600 || string(l.Fields["name"]) != `"mynet"` || string(l.Fields["cniVersion"]) != `"0.4.0"` {
		t.Errorf("converted list: mode %v, fields %s", perm, l.Fields)
	}
	if got := strings.Join(pluginTypes(t, list), ","); got != "bridge,fibmesh-cni" {
		t.Errorf("plugins %s", got)
	}
}

func TestInsertErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := Insert(dir, settings)
	if !errors.Is(err, ErrNoConfig) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "primary CNI plugin") {
		t.Errorf("empty dir: %v", err)
	}
	if _, err := Insert(filepath.Join(dir, "missing"), settings); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing dir: %v", err)
	}
	write(t, filepath.Join(dir, "10-x.conflist"), `{"plugins": [{"name": "no type"}]}`)
	if _, err := Insert(dir, settings); err == nil || !strings.Contains(err.Error(), `plugins[0]: want an object with a "type"`) {
		t.Errorf("bad list: %v", err)
	}
	write(t, filepath.Join(dir, "10-x.conflist"), bridgeList)
	if _, err := Insert(dir, Settings{}); err == nil || !strings.Contains(err.Error(), "node is required") {
		t.Errorf("no node: %v", err)
	}
}

func TestParse(t *testing.T) {
	for _, tt := range []struct{ in, err string }{
		{`garbage`, "fibmesh-cni configuration: invalid character"},
		{`{"type": "fibmesh-cni"}`, "node is required"},
		{`{"type": "bridge", "node": "n1"}`, `type "bridge": want "fibmesh-cni"`},
		{`{"type": "fibmesh-cni", "node": "N_1"}`, `node "N_1"`},
		{`{"type": "fibmesh-cni", "node": "n1", "runDir": "run"}`, `runDir "run": want an absolute path`},
		{`{"type": "fibmesh-cni", "node": "n1", "timeout": "forever"}`, `timeout "forever"`},
		{`{"type": "fibmesh-cni", "node": "n1", "logLevel": "loud"}`, `logLevel "loud"`},
		{`{"type": "fibmesh-cni", "node": "n1", "excludeNamespaces": ["Kube System"]}`, `excludeNamespaces[0] "Kube System"`},
		{`{"type": "fibmesh-cni", "node": "n1", "kubeconfig": "kc"}`, `kubeconfig "kc"`},
		{`{"type": "fibmesh-cni", "node": "n1", "cniVersion": "1.0.0", "name": "x", "prevResult": {"cniVersion": "1.0.0"}, "runtimeConfig": {"x": 1}}`, ""},
	} {
		_, err := Parse([]byte(tt.in))
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("Parse(%s): %v, want %q", tt.in, err, tt.err)
		}
	}
}

func TestParseExcluded(t *testing.T) {
	for _, tt := range []struct {
		in       string
		excluded bool
	}{
		{`{"type": "fibmesh-cni", "node": "n1"}`, true},
		{`{"type": "fibmesh-cni", "node": "n1", "excludeNamespaces": null}`, true},
		{`{"type": "fibmesh-cni", "node": "n1", "excludeNamespaces": []}`, false},
		{`{"type": "fibmesh-cni", "node": "n1", "excludeNamespaces": ["monitoring"]}`, false},
	} {
		c, err := Parse([]byte(tt.in))
		if err != nil || c.Excluded("kube-system") != tt.excluded {
			t.Errorf("Parse(%s): kube-system excluded %v (%v), want %v", tt.in, c != nil && c.Excluded("kube-system"), err, tt.excluded)
		}
	}
}

func TestParseArgs(t *testing.T) {
	a, err := ParseArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u1")
	if err != nil || a != (PodArgs{"shop", "web-1", "u1"}) {
		t.Errorf("%+v %v", a, err)
	}
	if _, err := ParseArgs("K8S_POD_NAME"); err == nil {
		t.Error("a key without a value parsed")
	}
}

// FuzzParse: any input either parses into a valid configuration or is an
// error naming fibmesh-cni's configuration; never a panic.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"type": "fibmesh-cni", "node": "n1", "cniVersion": "1.0.0", "name": "x", "prevResult": {"cniVersion": "1.0.0"}}`))
	f.Add([]byte(`{"type": "fibmesh-cni", "node": "n1", "timeout": "1s", "excludeNamespaces": ["a"], "logLevel": "warn"}`))
	f.Add([]byte(`garbage`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fibmesh-cni configuration: ") {
				t.Errorf("error %q does not name the configuration", err)
			}
			return
		}
		if c.Node == "" || c.Type != PluginType || c.TimeoutValue <= 0 {
			t.Errorf("accepted %q as %+v", b, c.Settings)
		}
	})
}

// FuzzList: whatever a conflist holds, inserting keeps every other plugin
// and puts fibmesh-cni last exactly once; removing restores the plugins.
func FuzzList(f *testing.F) {
	f.Add([]byte(bridgeList))
	f.Add([]byte(`{"cniVersion": "0.4.0", "name": "mynet", "type": "bridge"}`))
	f.Add([]byte(`{"plugins": [{"type": "fibmesh-cni"}, {"type": "x"}, {"type": "fibmesh-cni"}]}`))
	f.Add([]byte(`{"plugins": null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseList(b)
		if err != nil {
			return
		}
		var others []string
		for _, p := range l.Plugins {
			if !isOurs(p) {
				others = append(others, string(p))
			}
		}
		if _, err := l.Insert(settings); err != nil {
			t.Fatal(err)
		}
		out, err := l.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		l2, err := ParseList(out)
		if err != nil {
			t.Fatalf("our output does not parse: %v\n%s", err, out)
		}
		if changed, _ := l2.Insert(settings); changed {
			t.Errorf("second insert changed %s", out)
		}
		n := len(l2.Plugins)
		if n == 0 || !isOurs(l2.Plugins[n-1]) {
			t.Fatalf("not last: %s", out)
		}
		l2.Remove()
		if len(l2.Plugins) != len(others) {
			t.Fatalf("plugins %d after insert+remove, want %d", len(l2.Plugins), len(others))
		}
		for i, p := range l2.Plugins {
			if !jsonEqual(p, []byte(others[i])) {
				t.Errorf("plugin %d: %s, want %s", i, p, others[i])
			}
		}
	})
}
