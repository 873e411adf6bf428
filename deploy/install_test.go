package deploy

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/fibmesh/fibmesh/internal/kubetest"
)

// The install runs on a real kube-apiserver + etcd (internal/kubetest;
// make test provides both, elsewhere the tests skip). There is no
// kubelet, scheduler or controller-manager: the API server validates,
// defaults, admits and stores every object, and enforces RBAC, but no
// pod of the Deployment or the DaemonSet is ever created or run; what
// runs them is tested by the controller's and the agent's own tests.

const ns = "fibmesh-system"

// istioCRDs are the CRDs deploy/crds installs (the kinds fibmesh reads).
var istioCRDs = []string{
	"virtualservices.networking.istio.io",
	"destinationrules.networking.istio.io",
	"serviceentries.networking.istio.io",
	"peerauthentications.security.istio.io",
	"authorizationpolicies.security.istio.io",
}

// install applies dir (a kustomization) as a user would: kubectl apply -k.
// Where kubectl is not installed it applies the kustomization's resource
// files through client-go instead (without kustomize's transformers:
// labels, images and patches are then not applied).
func install(t *testing.T, ctx context.Context, c *kubetest.Cluster, dir string) string {
	t.Helper()
	if _, err := kubetest.Kubectl(); err == nil {
		out, err := c.Kubectl(ctx, "apply", "-k", dir)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	t.Logf("kubectl not installed: applying %s's resource files with client-go (no kustomize transformers)", dir)
	a, err := c.Applier()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range resourceFiles(t, dir) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Apply(ctx, data); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	return ""
}

// resourceFiles lists a kustomization's resource files, depth first.
func resourceFiles(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct{ Resources []string }
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	var out []string
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			out = append(out, resourceFiles(t, p)...)
		} else {
			out = append(out, p)
		}
	}
	return out
}

// TestInstall: kubectl apply -k deploy/ on an empty cluster succeeds;
// the CRDs are Established; the workloads are stored as written;
// applying again changes nothing (an upgrade to the same manifests); the
// DaemonSet, the Deployment and every overlay pass a server-side dry run;
// and the ServiceAccounts have exactly the rights the components need.
func TestInstall(t *testing.T) {
	c := kubetest.Start(t)
	t.Logf("etcd + kube-apiserver ready in %s", c.Took.Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	start := time.Now()
	out := install(t, ctx, c, ".")
	t.Logf("deploy/ installed in %s", time.Since(start).Round(time.Millisecond))
	a, err := c.Applier()
	if err != nil {
		t.Fatal(err)
	}
	for _, crd := range istioCRDs {
		if err := a.WaitEstablished(ctx, crd); err != nil {
			t.Error(err)
		}
	}

	t.Run("stored", func(t *testing.T) {
		cs := c.Clientset
		ds, err := cs.AppsV1().DaemonSets(ns).Get(ctx, "fibmesh-agent", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		spec := ds.Spec.Template.Spec
		if !spec.HostNetwork || spec.PriorityClassName != "system-node-critical" || spec.ServiceAccountName != "fibmesh-agent" {
			t.Errorf("DaemonSet fibmesh-agent: hostNetwork %v, priorityClassName %q, serviceAccountName %q; want true, system-node-critical, fibmesh-agent",
				spec.HostNetwork, spec.PriorityClassName, spec.ServiceAccountName)
		}
		if ru := ds.Spec.UpdateStrategy.RollingUpdate; ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ru == nil || ru.MaxUnavailable == nil || *ru.MaxUnavailable != intstr.FromInt32(1) {
			t.Errorf("DaemonSet fibmesh-agent updateStrategy %+v, want RollingUpdate with maxUnavailable 1", ds.Spec.UpdateStrategy)
		}
		for _, ctr := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
			if sc := ctr.SecurityContext; sc != nil && sc.Privileged != nil && *sc.Privileged {
				t.Errorf("DaemonSet fibmesh-agent container %s is privileged, want capabilities only", ctr.Name)
			}
		}
		audience := ""
		for _, v := range spec.Volumes {
			if v.Projected == nil {
				continue
			}
			for _, src := range v.Projected.Sources {
				if src.ServiceAccountToken != nil {
					audience = src.ServiceAccountToken.Audience
				}
			}
		}
		if audience != "fibmesh-ca" {
			t.Errorf("DaemonSet fibmesh-agent's projected ServiceAccount token has audience %q, want fibmesh-ca (the controller's --token-audience)", audience)
		}

		dep, err := cs.AppsV1().Deployments(ns).Get(ctx, "fibmesh-controller", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 1 || dep.Spec.Template.Spec.ServiceAccountName != "fibmesh-controller" {
			t.Errorf("Deployment fibmesh-controller: replicas %v, serviceAccountName %q; want 1, fibmesh-controller", dep.Spec.Replicas, dep.Spec.Template.Spec.ServiceAccountName)
		}
		svc, err := cs.CoreV1().Services(ns).Get(ctx, "fibmesh-controller", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ports := map[int32]int32{}
		for _, p := range svc.Spec.Ports {
			ports[p.Port] = p.TargetPort.IntVal
		}
		for port, target := range map[int32]int32{15012: 15012, 15014: 15014, 443: 15017} {
			if got, ok := ports[port]; !ok || (got != target && got != 0) {
				t.Errorf("Service fibmesh-controller port %d -> %d, want -> %d (ports %v)", port, got, target, svc.Spec.Ports)
			}
		}
		vwc, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, "fibmesh-validator", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range vwc.Webhooks {
			if w.FailurePolicy == nil || *w.FailurePolicy != admissionregistrationv1.Ignore || len(w.ClientConfig.CABundle) != 0 || w.ClientConfig.Service == nil || w.ClientConfig.Service.Name != "fibmesh-controller" {
				t.Errorf("webhook %s: failurePolicy %v, caBundle %d bytes, service %+v; want Ignore and none until the controller sets them, Service fibmesh-controller", w.Name, w.FailurePolicy, len(w.ClientConfig.CABundle), w.ClientConfig.Service)
			}
		}
	})

	if out == "" {
		return // no kubectl: the rest is kubectl's
	}
	t.Run("apply again changes nothing", func(t *testing.T) {
		// kubectl diff exits 1 when an object would change. (kubectl
		// apply's own "configured" is no measure: kubectl 1.32 sends an
		// empty patch to the PodDisruptionBudget on every apply.)
		if out, err := c.Kubectl(ctx, "diff", "-k", "."); err != nil {
			t.Errorf("kubectl diff -k deploy/ after installing it: %v\n%s", err, out)
		}
	})
	t.Run("server dry run", func(t *testing.T) {
		rendered, err := c.Kubectl(ctx, "kustomize", ".")
		if err != nil {
			t.Fatal(err)
		}
		var workloads []string
		for _, doc := range strings.Split(string(rendered), "\n---\n") {
			if strings.Contains(doc, "\nkind: DaemonSet\n") || strings.Contains(doc, "\nkind: Deployment\n") {
				workloads = append(workloads, doc)
			}
		}
		if len(workloads) != 2 {
			t.Fatalf("deploy/ renders %d DaemonSets and Deployments, want 2", len(workloads))
		}
		f := filepath.Join(t.TempDir(), "workloads.yaml")
		if err := os.WriteFile(f, []byte(strings.Join(workloads, "\n---\n")), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := c.Kubectl(ctx, "apply", "--dry-run=server", "--server-side", "--force-conflicts", "-f", f)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"daemonset.apps/fibmesh-agent serverside-applied (server dry run)", "deployment.apps/fibmesh-controller serverside-applied (server dry run)"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("kubectl apply --dry-run=server: %s, want %q", out, want)
			}
		}
		overlays, err := filepath.Glob(filepath.Join("overlays", "*", "kustomization.yaml"))
		if err != nil || len(overlays) == 0 {
			t.Fatalf("overlays: %v %v", overlays, err)
		}
		for _, o := range overlays {
			dir := filepath.Dir(o)
			if _, err := c.Kubectl(ctx, "apply", "--dry-run=server", "-k", dir); err != nil {
				t.Errorf("overlay %s: %v", dir, err)
			}
		}
	})
	t.Run("RBAC", func(t *testing.T) { testRBAC(t, ctx, c) })
	t.Run("examples apply", func(t *testing.T) {
		// The demo mesh's manifests (the users' view: Deployments,
		// Services, Istio objects) are valid for a real API server with
		// the CRDs installed. The webhook is not serving (no controller
		// runs): failurePolicy Ignore lets the Istio objects through.
		if _, err := c.Kubectl(ctx, "apply", "-f", filepath.Join("..", "examples", "00-namespaces.yaml")); err != nil {
			t.Fatal(err)
		}
		// What kube-controller-manager's ServiceAccount controller does
		// in a cluster: a ServiceAccount "default" in every namespace,
		// which the examples' bare Pods run as.
		nss, err := c.Clientset.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nss.Items {
			sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: n.Name}}
			if _, err := c.Clientset.CoreV1().ServiceAccounts(n.Name).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
		}
		out, err := c.Kubectl(ctx, "apply", "-f", filepath.Join("..", "examples"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "virtualservice.networking.istio.io/reviews created") {
			t.Errorf("kubectl apply -f examples/: %s, want VirtualService reviews created", out)
		}
	})
}

// access is one request's attributes and whether it must be allowed.
type access struct {
	allow bool
	ra    authorizationv1.ResourceAttributes
}

func can(verb, group, resource, namespace, name string) access {
	return access{true, authorizationv1.ResourceAttributes{Verb: verb, Group: group, Resource: resource, Namespace: namespace, Name: name}}
}

func cannot(verb, group, resource, namespace, name string) access {
	a := can(verb, group, resource, namespace, name)
	a.allow = false
	return a
}

// testRBAC asks the API server, as each ServiceAccount (impersonated, as
// kubectl auth can-i --as does), what it may do: what its component
// needs, and not the rest.
func testRBAC(t *testing.T, ctx context.Context, c *kubetest.Cluster) {
	var controller []access
	// The kube store's informers (controller/store/kube): list and watch,
	// cluster-wide.
	for _, r := range [][2]string{
		{"", "services"}, {"", "pods"}, {"", "namespaces"}, {"", "nodes"}, {"", "serviceaccounts"},
		{"discovery.k8s.io", "endpointslices"},
		{"networking.istio.io", "virtualservices"}, {"networking.istio.io", "destinationrules"}, {"networking.istio.io", "serviceentries"},
		{"security.istio.io", "peerauthentications"}, {"security.istio.io", "authorizationpolicies"},
	} {
		controller = append(controller, can("list", r[0], r[1], "", ""), can("watch", r[0], r[1], "", ""),
			cannot("delete", r[0], r[1], "production", "x"), cannot("create", r[0], r[1], "production", ""))
	}
	controller = append(controller,
		can("create", "authentication.k8s.io", "tokenreviews", "", ""),
		can("get", "", "secrets", ns, "cacerts"),
		can("get", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "fibmesh-validator"),
		can("patch", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "fibmesh-validator"),
		can("create", "", "configmaps", ns, ""),
		can("get", "", "configmaps", ns, "fibmesh-ca-root"),
		can("update", "", "configmaps", ns, "fibmesh-ca-root"),
		// controller/kubepublish's watches, by name (field selector
		// metadata.name).
		can("list", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "fibmesh-validator"),
		can("watch", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "fibmesh-validator"),
		can("list", "", "configmaps", ns, "fibmesh-ca-root"),
		can("watch", "", "configmaps", ns, "fibmesh-ca-root"),

		// controller/nodetaint lifts the startup taint: read the node,
		// write it back.
		can("get", "", "nodes", "", "node1"),
		can("update", "", "nodes", "", "node1"),
		cannot("delete", "", "nodes", "", "node1"),
		cannot("create", "", "nodes", "", ""),
		cannot("update", "", "nodes/status", "", "node1"),

		cannot("get", "", "secrets", ns, "other"),
		cannot("list", "", "secrets", ns, ""),
		cannot("get", "", "secrets", "kube-system", "cacerts"),
		cannot("get", "", "pods", "production", "x"), // informers never read single objects
		cannot("create", "", "namespaces", "", ""),
		cannot("patch", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "other"),
		cannot("create", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", ""),
		cannot("update", "", "configmaps", ns, "other"),
		cannot("list", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", ""),
		cannot("watch", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "other"),
		cannot("list", "", "configmaps", ns, ""),
		cannot("watch", "", "configmaps", ns, ""),
		cannot("get", "", "configmaps", ns, "other"),
		cannot("watch", "", "configmaps", "production", "fibmesh-ca-root"),
		cannot("create", "", "configmaps", "production", ""),
		cannot("create", "", "serviceaccounts/token", ns, "fibmesh-agent"),
	)
	agent := []access{
		can("get", "", "pods", "production", "x"),
		can("get", "", "namespaces", "", "production"),
		can("get", "apps", "daemonsets", ns, "fibmesh-agent"),

		cannot("list", "", "pods", "", ""),
		cannot("get", "", "secrets", ns, "cacerts"),
		cannot("create", "authentication.k8s.io", "tokenreviews", "", ""),
		cannot("get", "apps", "daemonsets", ns, "other"),
		cannot("delete", "", "pods", "production", "x"),
		cannot("get", "", "configmaps", ns, "fibmesh-ca-root"), // it gets the root from its volume
	}
	for _, sa := range []struct {
		name string
		want []access
	}{{"fibmesh-controller", controller}, {"fibmesh-agent", agent}} {
		t.Run(sa.name, func(t *testing.T) {
			cfg := c.AsServiceAccount(ns, sa.name)
			for _, a := range sa.want {
				ok, reason, err := kubetest.CanI(ctx, cfg, a.ra)
				if err != nil {
					t.Fatal(err)
				}
				if ok != a.allow {
					t.Errorf("%s may %s %s/%s %s/%s: %v (%s), want %v", sa.name, a.ra.Verb, a.ra.Group, a.ra.Resource, a.ra.Namespace, a.ra.Name, ok, reason, a.allow)
				}
			}
		})
	}
}
