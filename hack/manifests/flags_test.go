package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/internal/yamldoc"
)

// deployDir is the manifests' root.
var deployDir = filepath.Join("..", "..", "deploy")

// pathFlags are, by binary, the flags whose value is a path inside the
// container: it must lie under one of the container's mounts. (The
// installer's --run-dir and --host-conf-dir are paths on the host,
// written into the CNI entry.)
var pathFlags = map[string][]string{
	"fibmesh-agent":      {"controller-ca", "token-file", "run-dir", "pin-dir"},
	"fibmesh-controller": {"ca-dir", "ca-cert", "ca-key", "ca-roots", "webhook-cert", "webhook-key"},
	"fibmesh-cni":        {"bin-dir", "conf-dir"},
}

// TestManifestFlags: every container of the Deployment and the DaemonSet
// (in deploy/ and, with kubectl, in each overlay) runs a binary the image
// holds (the Dockerfile's ARG CMDS) with flags that binary accepts: the
// real binary is run with the manifest's command and arguments, and
// --help after them, which exits 0 only when every flag before it is
// defined and its value valid. Paths given to it are under the
// container's mounts.
func TestManifestFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the binaries")
	}
	image := imageCommands(t)
	bin := t.TempDir()
	if err := testenv.BuildCommands(bin, "cmd/fibmesh-agent", "cmd/fibmesh-controller", "cmd/fibmesh-cni"); err != nil {
		t.Fatal(err)
	}
	for name, pods := range rendered(t) {
		t.Run(name, func(t *testing.T) {
			if len(pods) != 2 {
				t.Fatalf("%d Deployments and DaemonSets, want 2", len(pods))
			}
			for owner, spec := range pods {
				for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
					checkContainer(t, owner+" container "+c.Name, c, image, bin)
				}
			}
		})
	}
}

// imageCommands returns the commands the Dockerfile puts in the image.
func imageCommands(t *testing.T) []string {
	b, err := os.ReadFile(filepath.Join("..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ARG CMDS="([^"]+)"$`).FindSubmatch(b)
	if m == nil {
		t.Fatal(`Dockerfile: no ARG CMDS="..." line`)
	}
	return strings.Fields(string(m[1]))
}

// rendered returns the pod specs of the Deployments and DaemonSets of
// deploy/ and, where kubectl (with kustomize) is installed, of each
// overlay, by kustomization and "Kind name".
func rendered(t *testing.T) map[string]map[string]corev1.PodSpec {
	out := map[string]map[string]corev1.PodSpec{}
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Log("kubectl not installed: checking deploy/base's files as written, no overlays")
		var all []byte
		for _, f := range []string{"controller.yaml", "agent.yaml"} {
			b, err := os.ReadFile(filepath.Join(deployDir, "base", f))
			if err != nil {
				t.Fatal(err)
			}
			all = append(append(all, b...), "\n---\n"...)
		}
		out["base"] = podSpecs(t, "deploy/base", all)
		return out
	}
	dirs := []string{deployDir}
	overlays, err := filepath.Glob(filepath.Join(deployDir, "overlays", "*"))
	if err != nil {
		t.Fatal(err)
	}
	dirs = append(dirs, overlays...)
	for _, d := range dirs {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, kubectl, "kustomize", d)
		cmd.Stderr = &stderr
		b, err := cmd.Output()
		cancel()
		if err != nil {
			t.Fatalf("kubectl kustomize %s: %v\n%s", d, err, stderr.Bytes())
		}
		name, _ := filepath.Rel(deployDir, d)
		out[name] = podSpecs(t, d, b)
	}
	return out
}

// podSpecs decodes the Deployments' and DaemonSets' pod specs of a
// multi-document YAML stream.
func podSpecs(t *testing.T, where string, data []byte) map[string]corev1.PodSpec {
	docs, err := yamldoc.Split(data)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	specs := map[string]corev1.PodSpec{}
	for _, d := range docs {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(d.Raw, &tm); err != nil {
			t.Fatalf("%s document %d: %v", where, d.N, err)
		}
		switch tm.Kind {
		case "Deployment":
			var o appsv1.Deployment
			if err := yamldoc.UnmarshalStrict(d.Raw, &o); err != nil {
				t.Fatalf("%s document %d: %v", where, d.N, err)
			}
			specs["Deployment "+o.Name] = o.Spec.Template.Spec
		case "DaemonSet":
			var o appsv1.DaemonSet
			if err := yamldoc.UnmarshalStrict(d.Raw, &o); err != nil {
				t.Fatalf("%s document %d: %v", where, d.N, err)
			}
			specs["DaemonSet "+o.Name] = o.Spec.Template.Spec
		}
	}
	return specs
}

// checkContainer runs c's command with its arguments and --help.
func checkContainer(t *testing.T, what string, c corev1.Container, image []string, bin string) {
	t.Helper()
	if !strings.HasPrefix(c.Image, "ghcr.io/fibmesh/fibmesh:") && !strings.HasPrefix(c.Image, "ghcr.io/fibmesh/fibmesh@") {
		t.Errorf("%s: image %q, want ghcr.io/fibmesh/fibmesh", what, c.Image)
	}
	if len(c.Command) == 0 {
		t.Errorf("%s: no command (the image's entrypoint is the controller): name the binary", what)
		return
	}
	dir, name := filepath.Split(c.Command[0])
	if dir != "/usr/local/bin/" || !slices.Contains(image, name) {
		t.Errorf("%s: command %s, want /usr/local/bin/ and one of the image's %v", what, c.Command[0], image)
		return
	}
	// $(VAR) from the container's env, as the kubelet expands it.
	env := map[string]string{}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			v = "from-" + strings.ToLower(e.Name) // a downward API value
		}
		env[e.Name] = v
	}
	expand := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	var args []string
	for _, a := range append(slices.Clone(c.Command[1:]), c.Args...) {
		args = append(args, expand.ReplaceAllStringFunc(a, func(m string) string {
			if v, ok := env[m[2:len(m)-1]]; ok {
				return v
			}
			t.Errorf("%s: %s refers to %s, which its env does not set", what, a, m)
			return m
		}))
	}
	for _, a := range args {
		flag, value, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !ok || !slices.Contains(pathFlags[name], flag) {
			continue
		}
		mounted := false
		for _, m := range c.VolumeMounts {
			if value == m.MountPath || strings.HasPrefix(value, strings.TrimSuffix(m.MountPath, "/")+"/") {
				mounted = true
			}
		}
		if !mounted {
			t.Errorf("%s: %s: %s is under none of the container's volumeMounts", what, a, value)
		}
	}
	cmd := exec.Command(filepath.Join(bin, name), append(args, "--help")...)
	cmd.Env = append(os.Environ(), "NODE_NAME=node-1", "POD_NAMESPACE=fibmesh-system")
	out, err := cmd.CombinedOutput()
	if err != nil {
		// The usage text follows the error: show the error's line.
		first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		t.Errorf("%s: %s %s --help: %v: %s", what, name, strings.Join(args, " "), err, first)
	}
}
