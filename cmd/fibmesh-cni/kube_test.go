package main

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/fibmesh/fibmesh/internal/kubetest"
)

// kubeNode is a node's view of a real API server: the agent DaemonSet's
// ServiceAccount with the RBAC docs/cni.md asks for, its token and CA in a
// ServiceAccount directory, and the in-cluster environment.
type kubeNode struct {
	c   *kubetest.Cluster
	sa  string
	env []string
}

func newKubeNode(t *testing.T) *kubeNode {
	t.Helper()
	c := kubetest.Start(t)
	ctx := context.Background()
	cs := c.Clientset
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	meta := func(ns, name string, labels map[string]string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}
	}
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: meta("", "fibmesh-system", nil)},
		{ObjectMeta: meta("", "shop", nil)},
		{ObjectMeta: meta("", "quiet", map[string]string{"fibmesh.io/capture": "disabled"})},
	} {
		must(cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}))
		// No controller-manager makes it; pods need it to be admitted.
		must(cs.CoreV1().ServiceAccounts(ns.Name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: meta(ns.Name, "default", nil)}, metav1.CreateOptions{}))
	}
	must(cs.CoreV1().ServiceAccounts("fibmesh-system").Create(ctx, &corev1.ServiceAccount{ObjectMeta: meta("fibmesh-system", "fibmesh-agent", nil)}, metav1.CreateOptions{}))
	subj := []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "fibmesh-system", Name: "fibmesh-agent"}}
	must(cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: meta("", "fibmesh-cni", nil),
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods", "namespaces"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{}))
	must(cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: meta("", "fibmesh-cni", nil),
		RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "fibmesh-cni"}, Subjects: subj}, metav1.CreateOptions{}))
	must(cs.RbacV1().Roles("fibmesh-system").Create(ctx, &rbacv1.Role{ObjectMeta: meta("fibmesh-system", "fibmesh-cni", nil),
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, ResourceNames: []string{"fibmesh-agent"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{}))
	must(cs.RbacV1().RoleBindings("fibmesh-system").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: meta("fibmesh-system", "fibmesh-cni", nil),
		RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "fibmesh-cni"}, Subjects: subj}, metav1.CreateOptions{}))

	tok, err := c.Token(ctx, "fibmesh-system", "fibmesh-agent")
	if err != nil {
		t.Fatal(err)
	}
	n := &kubeNode{c: c, sa: t.TempDir()}
	atomicWrite(t, filepath.Join(n.sa, "token"), tok)
	atomicWrite(t, filepath.Join(n.sa, "ca.crt"), string(c.Config.TLSClientConfig.CAData))
	u, err := url.Parse(c.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	n.env = []string{"NODE_NAME=node1", "POD_NAMESPACE=fibmesh-system", "KUBERNETES_SERVICE_HOST=" + u.Hostname(), "KUBERNETES_SERVICE_PORT=" + u.Port()}
	return n
}

func (n *kubeNode) pod(t *testing.T, ns, name string, labels, annotations map[string]string) {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, Annotations: annotations},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	if _, err := n.c.Clientset.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// The plugin reads pods' labels with the kubeconfig the installer wrote
// from the ServiceAccount (with only the RBAC docs/cni.md lists): pods out
// of the mesh pass through with the agent down; a meshed pod fails; a pod
// the API server does not know fails too (fail closed).
func TestLabelsFromAPIServer(t *testing.T) {
	n := newKubeNode(t)
	n.pod(t, "shop", "web", map[string]string{"app": "web"}, nil)
	n.pod(t, "shop", "off", map[string]string{"fibmesh.io/capture": "disabled"}, nil)
	n.pod(t, "shop", "ambient-off", map[string]string{"istio.io/dataplane-mode": "none"}, nil)
	n.pod(t, "shop", "noinject", nil, map[string]string{"sidecar.istio.io/inject": "false"})
	n.pod(t, "quiet", "any", nil, nil)

	h := newHost(t)
	atomicWrite(t, filepath.Join(h.conf, "10-flannel.conflist"), flannelList)
	if _, err := runCmd(t, n.env, append([]string{"install"}, h.args("--once", "--service-account-dir", n.sa, "--host-conf-dir", h.conf, "--run-dir", t.TempDir())...)...); err != nil {
		t.Fatal(err)
	}
	l, _, err := readEntry(h.conf)
	if err != nil {
		t.Fatal(err)
	}
	if l["kubeconfig"] != filepath.Join(h.conf, KubeconfigName) {
		t.Fatalf("entry %v: no kubeconfig", l)
	}
	prev := json.RawMessage(`{"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}], "ips": [{"address": "10.244.1.7/24", "interface": 0}]}`)
	conf := pluginConf(t, l, prev)
	// A namespace path the plugin never opens when the pod passes
	// through (skel refuses the plugin's own namespace).
	call := cniCall{Command: "ADD", ContainerID: "c1", Netns: "/var/run/netns/fmcni-not-there", IfName: "eth0", Path: h.bin}
	for _, tt := range []struct {
		ns, name string
		pass     bool
		err      string
	}{
		{"shop", "off", true, ""},
		{"shop", "ambient-off", true, ""},
		{"shop", "noinject", true, ""},
		{"quiet", "any", true, ""},
		{"shop", "web", false, "the fibmesh agent is not running on node node1"},
		{"shop", "ghost", false, "cannot read the pod's labels from the API server"},
	} {
		c := call
		c.Args = podArgs(tt.ns, tt.name)
		out, e := c.run(t, filepath.Join(h.bin, "fibmesh-cni"), conf)
		if tt.pass {
			if e != nil {
				t.Errorf("%s/%s: %+v, want a pass-through", tt.ns, tt.name, e)
			} else if d := sameJSON(t, prev, out); d != "" {
				t.Errorf("%s/%s: prevResult changed:\n%s", tt.ns, tt.name, d)
			}
			continue
		}
		if e == nil || !strings.Contains(e.Msg, tt.err) {
			t.Errorf("%s/%s: %+v, want a CNI error saying %q", tt.ns, tt.name, e, tt.err)
		}
	}
}

// readEntry returns fibmesh-cni's entry in the primary list of dir.
func readEntry(dir string) (map[string]any, string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "10-flannel.conflist"))
	if err != nil {
		return nil, "", err
	}
	var l struct{ Plugins []map[string]any }
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, "", err
	}
	for _, p := range l.Plugins {
		if p["type"] == "fibmesh-cni" {
			return p, string(b), nil
		}
	}
	return nil, string(b), nil
}

// At SIGTERM the installer keeps its entry while the DaemonSet exists,
// and removes it once the DaemonSet is being deleted or gone, as the
// API server says (with the ServiceAccount's RBAC only).
func TestInstallerExitFollowsDaemonSet(t *testing.T) {
	n := newKubeNode(t)
	ctx := context.Background()
	dsc := n.c.Clientset.AppsV1().DaemonSets("fibmesh-system")
	sel := map[string]string{"app": "fibmesh-agent"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "fibmesh-agent", Namespace: "fibmesh-system", Finalizers: []string{"fibmesh.io/test"}},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: sel}, Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: sel}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "fibmesh"}}}}},
	}
	if _, err := dsc.Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h := newHost(t)
	primary := filepath.Join(h.conf, "10-flannel.conflist")
	atomicWrite(t, primary, flannelList)
	args := h.args("--service-account-dir", n.sa, "--kubeconfig", "none")

	// The DaemonSet is there: an upgrade or a drain. Kept.
	p := startInstall(t, n.env, args...)
	p.stop(t)
	if got := plugins(t, primary); got != "flannel,portmap,fibmesh-cni" {
		t.Errorf("DaemonSet present: %s, want the entry kept", got)
	}
	// Being deleted (foreground deletion; a finalizer holds it here):
	// removed.
	if err := dsc.Delete(ctx, "fibmesh-agent", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	p = startInstall(t, n.env, args...)
	p.stop(t)
	if got := plugins(t, primary); got != "flannel,portmap" || !strings.Contains(p.logged(), "is being deleted") {
		t.Errorf("DaemonSet being deleted: %s, want the entry removed", got)
	}
	// Gone.
	if _, err := dsc.Patch(ctx, "fibmesh-agent", types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	p = startInstall(t, n.env, args...)
	p.stop(t)
	if got := plugins(t, primary); got != "flannel,portmap" || !strings.Contains(p.logged(), "is gone") {
		t.Errorf("DaemonSet gone: %s, want the entry removed", got)
	}
	// Another namespace's DaemonSet cannot be read (RBAC): kept, fail
	// closed.
	env := append(append([]string{}, n.env...), "POD_NAMESPACE=shop")
	p = startInstall(t, env, args...)
	p.stop(t)
	if got := plugins(t, primary); got != "flannel,portmap,fibmesh-cni" || !strings.Contains(p.logged(), "forbidden") {
		t.Errorf("DaemonSet not readable: %s, want the entry kept", got)
	}
}
