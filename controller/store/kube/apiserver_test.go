package kube_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	networkingapi "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/fibmesh/fibmesh/agent/svid"
	"github.com/fibmesh/fibmesh/agent/xdsclient"
	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/controller/nodetaint"
	"github.com/fibmesh/fibmesh/controller/store"
	"github.com/fibmesh/fibmesh/controller/store/kube"
	"github.com/fibmesh/fibmesh/controller/xds"
	"github.com/fibmesh/fibmesh/internal/kubetest"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/internal/yamldoc"
)

// The tests in this file run against a real kube-apiserver and etcd
// (internal/kubetest; make test provides both, elsewhere they skip). There
// is no kubelet and no controller-manager: the fixture's Pods (with their
// status) and EndpointSlices are written as the cluster would report
// them, as with the fake clientsets.

// istioKinds are the CRDs fibmesh reads, by resource name.
var istioKinds = []string{
	"virtualservices.networking.istio.io",
	"destinationrules.networking.istio.io",
	"serviceentries.networking.istio.io",
	"peerauthentications.security.istio.io",
	"authorizationpolicies.security.istio.io",
}

// istioCRDs returns the CRDs of istioKinds from the istio.io/api module
// the controller's types come from (kubernetes/customresourcedefinitions
// .gen.yaml; deploy/ ships a copy of the same file, which deploy's own
// test installs).
func istioCRDs(t *testing.T) []byte {
	t.Helper()
	out, err := exec.Command(testenv.GoTool(), "list", "-m", "-f", "{{.Dir}}", "istio.io/api").Output()
	if err != nil {
		t.Fatalf("go list -m istio.io/api: %v", err)
	}
	data, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "kubernetes", "customresourcedefinitions.gen.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	docs, err := yamldoc.Split(data)
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, d := range docs {
		var m metav1.PartialObjectMetadata
		if err := yaml.Unmarshal(d.Raw, &m); err != nil {
			t.Fatal(err)
		}
		if slices.Contains(istioKinds, m.Name) {
			keep = append(keep, string(d.Raw))
		}
	}
	if len(keep) != len(istioKinds) {
		t.Fatalf("istio.io/api's CRDs: found %d of %v", len(keep), istioKinds)
	}
	return []byte(strings.Join(keep, "\n---\n"))
}

// fixtureCluster starts an API server holding the Istio CRDs and
// controller/testdata/cluster.
func fixtureCluster(t *testing.T, ctx context.Context) (*kubetest.Cluster, *kube.Clients) {
	t.Helper()
	c := kubetest.Start(t)
	t.Logf("etcd + kube-apiserver ready in %s", c.Took.Round(time.Millisecond))
	start := time.Now()
	a, err := c.Applier()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(ctx, istioCRDs(t)); err != nil {
		t.Fatalf("Istio CRDs: %v", err)
	}
	// The admin's clients (kubetest's config: no client-side rate
	// limit to wait on, unlike Connect's 5 requests a second).
	ic, err := istioclient.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	clients := &kube.Clients{Kube: c.Clientset, Istio: ic}
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "cluster", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("fixture: %v (%d files)", err, len(files))
	}
	for _, f := range files {
		k, i := decodeFixture(t, f)
		for _, obj := range append(k, i...) {
			if err := create(ctx, clients, obj); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
		}
	}
	t.Logf("Istio CRDs and the fixture applied in %s", time.Since(start).Round(time.Millisecond))
	return c, clients
}

// create writes obj through the typed clients, as kubectl apply would,
// and a Pod's status as the kubelet would report it.
func create(ctx context.Context, c *kube.Clients, obj runtime.Object) error {
	opts := metav1.CreateOptions{}
	var err error
	switch o := obj.(type) {
	case *corev1.Namespace:
		_, err = c.Kube.CoreV1().Namespaces().Create(ctx, o, opts)
	case *corev1.Node:
		_, err = c.Kube.CoreV1().Nodes().Create(ctx, o, opts)
	case *corev1.ServiceAccount:
		_, err = c.Kube.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, opts)
	case *corev1.Service:
		_, err = c.Kube.CoreV1().Services(o.Namespace).Create(ctx, o, opts)
	case *discoveryv1.EndpointSlice:
		_, err = c.Kube.DiscoveryV1().EndpointSlices(o.Namespace).Create(ctx, o, opts)
	case *corev1.Pod:
		var p *corev1.Pod
		if p, err = c.Kube.CoreV1().Pods(o.Namespace).Create(ctx, o, opts); err == nil {
			p.Status = o.Status
			_, err = c.Kube.CoreV1().Pods(o.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		}
	case *networkingv1.VirtualService:
		_, err = c.Istio.NetworkingV1().VirtualServices(o.Namespace).Create(ctx, o, opts)
	case *networkingv1.DestinationRule:
		_, err = c.Istio.NetworkingV1().DestinationRules(o.Namespace).Create(ctx, o, opts)
	case *networkingv1.ServiceEntry:
		_, err = c.Istio.NetworkingV1().ServiceEntries(o.Namespace).Create(ctx, o, opts)
	case *securityv1.PeerAuthentication:
		_, err = c.Istio.SecurityV1().PeerAuthentications(o.Namespace).Create(ctx, o, opts)
	case *securityv1.AuthorizationPolicy:
		_, err = c.Istio.SecurityV1().AuthorizationPolicies(o.Namespace).Create(ctx, o, opts)
	default:
		return fmt.Errorf("%T not in the test's table", obj)
	}
	return err
}

// apiServerOwn are the namespaces the API server creates and fills by
// itself (the Service "kubernetes" and its EndpointSlice live in
// default): the fixture has none of them, so the golden model does not.
var apiServerOwn = []string{"default", "kube-system", "kube-public", "kube-node-lease"}

// withoutAPIServerOwn returns s without the objects in apiServerOwn
// namespaces, and those Namespaces.
func withoutAPIServerOwn(s *config.Snapshot) *config.Snapshot {
	out := &config.Snapshot{}
	for _, r := range s.Resources {
		if slices.Contains(apiServerOwn, r.Namespace) || (r.GVK.Kind == "Namespace" && slices.Contains(apiServerOwn, r.Name)) {
			continue
		}
		out.Resources = append(out.Resources, r)
	}
	return out
}

// TestAPIServerFixtureModelMatchesGolden: the fixture stored in a real
// API server, read by the kube store (real informers: list, then watch),
// builds exactly the file store's golden model, as the fake clientsets'
// TestExamplesModelMatchesGolden does.
func TestAPIServerFixtureModelMatchesGolden(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, _ := fixtureCluster(t, ctx)
	clients, err := kube.Connect(c.Kubeconfig) // as the controller does
	if err != nil {
		t.Fatal(err)
	}
	s := kube.New(clients.Kube, clients.Istio, kube.Options{Debounce: 10 * time.Millisecond})
	run(t, s)
	u := next(t, s, "the first snapshot", func(store.Update) bool { return true })
	matchGolden(t, withoutAPIServerOwn(u.Snapshot), "API server")
}

// TestAPIServerController runs the fibmesh-controller binary with
// --kubeconfig against the API server, authenticated as its
// ServiceAccount with deploy/rbac.yaml's RBAC (a token from the
// TokenRequest API, as in a pod): it serves the golden model; an edit of
// a VirtualService through the API server reaches an xDS client; and an
// agent with its pod's projected token, over TLS with the root from the
// ConfigMap fibmesh-ca-root, gets its node's config (TokenReview), while
// another ServiceAccount's token is refused.
func TestAPIServerController(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := controllerBinary(t)
	c, clients := fixtureCluster(t, ctx)
	kubeconfig := controllerIdentity(t, ctx, c)
	p := startController(t, bin, "--kubeconfig", kubeconfig, "--ca-dir", t.TempDir())
	p.waitReady(t)

	t.Run("golden model", func(t *testing.T) {
		want, err := os.ReadFile(filepath.Join("..", "..", "model", "testdata", "examples.golden.json"))
		if err != nil {
			t.Fatal(err)
		}
		got := p.mustGet(t, "/debug/model")
		if d := cmp.Diff(modelJSON(t, want), modelJSON(t, got)); d != "" {
			t.Errorf("/debug/model differs from the golden model of examples/ (-golden +controller):\n%s", d)
		}
	})

	t.Run("edit reaches xDS", func(t *testing.T) {
		actx, acancel := context.WithCancel(ctx)
		defer acancel()
		a := startAgent(t, actx, p.xds, "node1")
		a.awaitWeights(t, 90, 10)

		start := time.Now()
		vss := clients.Istio.NetworkingV1().VirtualServices("production")
		vs, err := vss.Get(ctx, "reviews", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, h := range vs.Spec.Http {
			for _, r := range h.Route {
				switch r.Weight {
				case 90:
					r.Weight, n = 70, n+1
				case 10:
					r.Weight, n = 30, n+1
				}
			}
		}
		if n != 2 {
			t.Fatalf("VirtualService production/reviews: %d weights 90/10 changed, want 2: %v", n, vs.Spec.Http)
		}
		if _, err := vss.Update(ctx, vs, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		a.awaitWeights(t, 70, 30)
		t.Logf("VirtualService update -> RDS at the xDS client: %s", time.Since(start).Round(time.Millisecond))
	})

	t.Run("startup taint lifted", func(t *testing.T) {
		// A node that registered with fibmesh's startup taint loses it
		// once its agent has accepted its flow table: the controller,
		// as its ServiceAccount under deploy/'s RBAC, writes the node.
		// (The fixture has pods on node1 but no Node object: a kubelet
		// would register it, with the taint, like this.)
		nodes := c.Clientset.CoreV1().Nodes()
		n, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}, Spec: corev1.NodeSpec{
			Taints: []corev1.Taint{{Key: nodetaint.DefaultTaint, Effect: corev1.TaintEffectNoSchedule}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nodes.Delete(context.Background(), "node1", metav1.DeleteOptions{}) })
		w, err := nodes.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=node1", ResourceVersion: n.ResourceVersion})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		actx, acancel := context.WithCancel(ctx)
		defer acancel()
		start := time.Now()
		startAgent(t, actx, p.xds, "node1")
		timeout := time.After(wait)
		for lifted := false; !lifted; {
			select {
			case ev := <-w.ResultChan():
				if n, ok := ev.Object.(*corev1.Node); ok && !slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == nodetaint.DefaultTaint }) {
					lifted = true
				}
			case <-timeout:
				t.Fatalf("node1 still has %s %s after its agent connected", nodetaint.DefaultTaint, wait)
			}
		}
		t.Logf("agent connected -> startup taint lifted: %s", time.Since(start).Round(time.Millisecond))
	})

	t.Run("agent token over TLS", func(t *testing.T) {
		// What the DaemonSet's agent does: the controller's root from
		// the ConfigMap the controller publishes, its pod's projected
		// token (audience fibmesh-ca), checked by the controller with
		// TokenReview; the token's node is the node it gets config for.
		var rootPEM string
		testenv.Eventually(t, wait, "ConfigMap fibmesh-system/fibmesh-ca-root", func() error {
			cm, err := c.Clientset.CoreV1().ConfigMaps("fibmesh-system").Get(ctx, "fibmesh-ca-root", metav1.GetOptions{})
			if err != nil {
				return err
			}
			rootPEM = cm.Data["root-cert.pem"]
			return nil
		})
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM([]byte(rootPEM)) {
			t.Fatalf("ConfigMap fibmesh-ca-root root-cert.pem holds no certificate: %q", rootPEM)
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "fibmesh-agent-node2", Namespace: "fibmesh-system"},
			Spec: corev1.PodSpec{ServiceAccountName: "fibmesh-agent", NodeName: "node2",
				Containers: []corev1.Container{{Name: "agent", Image: "ghcr.io/fibmesh/fibmesh:latest"}}},
		}
		pod, err := c.Clientset.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		dial := func(t *testing.T, token string) *agent {
			tc := &tls.Config{RootCAs: roots, ServerName: "fibmesh-controller.fibmesh-system.svc", MinVersion: tls.VersionTLS13}
			conn, err := grpc.NewClient(p.xdsTLS, grpc.WithTransportCredentials(credentials.NewTLS(tc)),
				grpc.WithPerRPCCredentials(svid.Credentials(func(context.Context) (string, error) { return token, nil })))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			actx, acancel := context.WithCancel(ctx)
			t.Cleanup(acancel)
			a := &agent{Client: xdsclient.New(conn, xdsclient.Config{Node: "node2", Delta: true, Subscriptions: xds.AgentSubscriptions("node2")}), node: "node2", done: make(chan error, 1)}
			go func() { a.done <- a.Run(actx) }()
			return a
		}

		token, err := c.PodToken(ctx, pod, "fibmesh-ca")
		if err != nil {
			t.Fatal(err)
		}
		dial(t, token).awaitWeights(t, 70, 30)

		// A token of another ServiceAccount (the controller's own) is
		// refused.
		other, err := c.Token(ctx, "fibmesh-system", "fibmesh-controller", "fibmesh-ca")
		if err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-dial(t, other).done:
			if status.Code(err) != codes.Unauthenticated {
				t.Errorf("xDS stream with the controller's token ended with %v, want Unauthenticated", err)
			}
		case <-time.After(wait):
			t.Errorf("xDS stream with the controller's token not refused within %s", wait)
		}
	})
}

// deployBase is the kustomize base of the manifests.
var deployBase = filepath.Join("..", "..", "..", "deploy", "base")

// baseDocs returns the documents of deploy/base's resources whose kind is
// one of kinds, as written (the base's transformers only add labels and
// pin the image, nothing RBAC depends on; deploy's own test applies the
// rendered kustomization).
func baseDocs(t *testing.T, kinds ...string) []byte {
	t.Helper()
	kb, err := os.ReadFile(filepath.Join(deployBase, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct{ Resources []string }
	if err := yaml.Unmarshal(kb, &k); err != nil {
		t.Fatalf("deploy/base/kustomization.yaml: %v", err)
	}
	var out []string
	for _, r := range k.Resources {
		data, err := os.ReadFile(filepath.Join(deployBase, r))
		if err != nil {
			t.Fatal(err)
		}
		docs, err := yamldoc.Split(data)
		if err != nil {
			t.Fatalf("deploy/base/%s: %v", r, err)
		}
		for _, d := range docs {
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(d.Raw, &tm); err != nil {
				t.Fatalf("deploy/base/%s: %v", r, err)
			}
			if slices.Contains(kinds, tm.Kind) {
				out = append(out, string(d.Raw))
			}
		}
	}
	return []byte(strings.Join(out, "\n---\n"))
}

// controllerIdentity applies deploy/base's namespace and RBAC and returns
// a kubeconfig with a token of the controller's ServiceAccount: the
// controller then has exactly the rights the manifests give it.
func controllerIdentity(t *testing.T, ctx context.Context, c *kubetest.Cluster) string {
	t.Helper()
	a, err := c.Applier()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(ctx, baseDocs(t, "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")); err != nil {
		t.Fatalf("deploy/base's RBAC: %v", err)
	}
	kc, err := c.ServiceAccountKubeconfig(ctx, "fibmesh-system", "fibmesh-controller")
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

// modelJSON decodes a model dump for comparison without its version (the
// controller numbers its models from the clock) and without the API
// server's own Service "kubernetes" in default (see apiServerOwn).
func modelJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("model: %v: %s", err, b)
	}
	delete(m, "version")
	if svcs, ok := m["services"].([]any); ok {
		m["services"] = slices.DeleteFunc(svcs, func(s any) bool {
			sm, _ := s.(map[string]any)
			ns, _ := sm["namespace"].(string)
			return slices.Contains(apiServerOwn, ns)
		})
	}
	return m
}

// The controller process and its xDS client, as cmd/fibmesh-controller's
// e2e tests run them.

// wait bounds each wait on the controller; generous for -race on a
// loaded machine.
const wait = 30 * time.Second

// binDir holds the controller binary, built on first use; TestMain
// removes it.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var controllerBin = sync.OnceValues(func() (string, error) {
	var err error
	if binDir, err = os.MkdirTemp("", "fibmesh-kube-bin-"); err != nil {
		return "", err
	}
	if err := testenv.BuildCommands(binDir, "cmd/fibmesh-controller"); err != nil {
		return "", err
	}
	return filepath.Join(binDir, "fibmesh-controller"), nil
})

// controllerBinary builds fibmesh-controller once per test binary (after
// checking that the API server is there: no build for a skipped test).
func controllerBinary(t *testing.T) string {
	t.Helper()
	if _, _, err := kubetest.Binaries(); err != nil && os.Getenv("CI") == "" {
		t.Skipf("kubetest: needs a real API server: %v", err)
	}
	bin, err := controllerBin()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

type controllerProc struct {
	cmd     *exec.Cmd
	xds     string // --xds-listen (plaintext)
	xdsTLS  string // --xds-tls-listen
	mon     string // --monitoring-listen
	webhook string // --webhook-listen
	log     strings.Builder
	logMu   sync.Mutex
	exited  chan struct{}
	exitErr error
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startController(t *testing.T, bin string, args ...string) *controllerProc {
	t.Helper()
	p := &controllerProc{xds: freeAddr(t), xdsTLS: freeAddr(t), mon: freeAddr(t), webhook: freeAddr(t), exited: make(chan struct{})}
	args = append(args, "--xds-listen", p.xds, "--xds-tls-listen", p.xdsTLS, "--monitoring-listen", p.mon, "--live-agent-port", "0",
		// The API server calls the webhook at https://127.0.0.1:PORT (no
		// Service routing here): its certificate must name that address.
		"--webhook-listen", p.webhook, "--xds-tls-san", "127.0.0.1")
	p.cmd = exec.Command(bin, args...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.logMu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.logMu.Unlock()
		}
		p.exitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("controller log:\n%s", p.logText())
		}
	})
	return p
}

func (p *controllerProc) logText() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.log.String()
}

var httpc = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func (p *controllerProc) get(path string) (int, []byte, error) {
	resp, err := httpc.Get("http://" + p.mon + path)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (p *controllerProc) mustGet(t *testing.T, path string) []byte {
	t.Helper()
	code, b, err := p.get(path)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s: %d %v: %s", path, code, err, b)
	}
	return b
}

// waitReady polls /readyz (a model is in force and pushed).
func (p *controllerProc) waitReady(t *testing.T) {
	t.Helper()
	testenv.Eventually(t, wait, "the controller's GET /readyz = 200", func() error {
		select {
		case <-p.exited:
			t.Fatalf("the controller exited (%v); its log:\n%s", p.exitErr, p.logText())
		default:
		}
		code, b, err := p.get("/readyz")
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("%d %v %s", code, err, b)
		}
		return nil
	})
}

// agent is an xDS client of one node.
type agent struct {
	*xdsclient.Client
	node string
	done chan error
}

func startAgent(t *testing.T, ctx context.Context, addr, node string) *agent {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	a := &agent{Client: xdsclient.New(conn, xdsclient.Config{Node: node, Delta: true, Subscriptions: xds.AgentSubscriptions(node)}), node: node, done: make(chan error, 1)}
	go func() { a.done <- a.Run(ctx) }()
	return a
}

const reviewsRoute = "reviews.production.svc.cluster.local:9080"

func (a *agent) weights() []uint32 {
	rc, ok := a.Resources(resource.RouteType)[reviewsRoute].(*routev3.RouteConfiguration)
	if !ok {
		return nil
	}
	var out []uint32
	for _, vh := range rc.VirtualHosts {
		for _, r := range vh.Routes {
			for _, wc := range r.GetRoute().GetWeightedClusters().GetClusters() {
				out = append(out, wc.GetWeight().GetValue())
			}
		}
	}
	return out
}

// awaitWeights reads a's updates until the reviews route's weights are
// want.
func (a *agent) awaitWeights(t *testing.T, want ...uint32) {
	t.Helper()
	timeout := time.After(wait)
	for !slices.Equal(a.weights(), want) {
		select {
		case u := <-a.Updates():
			if u.NACK != nil {
				t.Fatalf("%s NACKed %s %s: %v", a.node, xds.ShortType(u.TypeURL), u.Version, u.NACK)
			}
		case err := <-a.done:
			t.Fatalf("%s's stream ended (%v) while waiting for reviews weights %v", a.node, err, want)
		case <-timeout:
			t.Fatalf("%s: reviews weights %v after %s, want %v", a.node, a.weights(), wait, want)
		}
	}
}

// warnings collects the warnings the API server returns (admission
// webhooks' among them), as kubectl prints them.
type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	w.list = append(w.list, text)
	w.mu.Unlock()
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.list
	w.list = nil
	return l
}

// TestAPIServerWebhook registers deploy/base's ValidatingWebhookConfiguration
// (pointed at the controller by URL: no Service routing without a
// kubelet and kube-proxy) and runs the controller with its webhook: the
// controller sets the caBundle and failurePolicy Fail and publishes the
// CA root ConfigMap; the API server then rejects the analyze tests'
// broken VirtualServices with their IST codes, accepts good ones (with
// Istio's warnings), and, with the controller gone, fails closed.
func TestAPIServerWebhook(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := controllerBinary(t)
	c, _ := fixtureCluster(t, ctx)
	kubeconfig := controllerIdentity(t, ctx, c)
	p := startController(t, bin, "--kubeconfig", kubeconfig, "--ca-dir", t.TempDir())

	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	if err := yaml.Unmarshal(baseDocs(t, "ValidatingWebhookConfiguration"), &vwc); err != nil || vwc.Name != "fibmesh-validator" || len(vwc.Webhooks) == 0 {
		t.Fatalf("deploy/base's ValidatingWebhookConfiguration fibmesh-validator: %v %+v", err, vwc)
	}
	url := "https://" + p.webhook + "/validate"
	for i := range vwc.Webhooks {
		vwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url}
	}
	whs := c.Clientset.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	if _, err := whs.Create(ctx, &vwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p.waitReady(t)

	var caBundle []byte
	testenv.Eventually(t, wait, "the controller sets fibmesh-validator's caBundle and failurePolicy Fail", func() error {
		got, err := whs.Get(ctx, "fibmesh-validator", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, w := range got.Webhooks {
			if len(w.ClientConfig.CABundle) == 0 || w.FailurePolicy == nil || *w.FailurePolicy != admissionregistrationv1.Fail {
				return fmt.Errorf("webhook %s: caBundle %d bytes, failurePolicy %v", w.Name, len(w.ClientConfig.CABundle), w.FailurePolicy)
			}
		}
		caBundle = got.Webhooks[0].ClientConfig.CABundle
		return nil
	})
	// The caBundle is the CA's roots (/debug/ca/roots lists their
	// SHA-256 fingerprints).
	var roots []struct{ SHA256 string }
	if err := json.Unmarshal(p.mustGet(t, "/debug/ca/roots"), &roots); err != nil {
		t.Fatal(err)
	}
	var want, got []string
	for _, r := range roots {
		want = append(want, r.SHA256)
	}
	for rest := caBundle; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		sum := sha256.Sum256(b.Bytes)
		got = append(got, hex.EncodeToString(sum[:]))
	}
	slices.Sort(want)
	slices.Sort(got)
	if len(got) == 0 || !slices.Equal(got, want) {
		t.Errorf("caBundle's certificates %v, want the CA's roots %v", got, want)
	}
	cm, err := c.Clientset.CoreV1().ConfigMaps("fibmesh-system").Get(ctx, "fibmesh-ca-root", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("ConfigMap fibmesh-system/fibmesh-ca-root (the agents' --controller-ca): %v", err)
	}
	if cm.Data["root-cert.pem"] != string(caBundle) {
		t.Errorf("ConfigMap fibmesh-ca-root root-cert.pem:\n%s\nwant the caBundle:\n%s", cm.Data["root-cert.pem"], caBundle)
	}

	// Writes go through a client that keeps the API server's warnings.
	var warned warnings
	cfg := rest.CopyConfig(c.Config)
	cfg.WarningHandler = &warned
	ic, err := istioclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	vss := ic.NetworkingV1().VirtualServices("production")
	setWeights := func(w1, w2 int32) error {
		vs, err := vss.Get(ctx, "reviews", metav1.GetOptions{})
		if err != nil {
			return err
		}
		split := canarySplit(t, vs)
		split.Route[0].Weight, split.Route[1].Weight = w1, w2
		_, err = vss.Update(ctx, vs, metav1.UpdateOptions{})
		return err
	}
	denied := func(t *testing.T, err error, code string) {
		t.Helper()
		if err == nil {
			t.Fatalf("accepted, want denied with %s", code)
		}
		if !strings.Contains(err.Error(), `admission webhook "validation.fibmesh.io" denied the request`) || !strings.Contains(err.Error(), "["+code+"]") {
			t.Errorf("error %q, want the webhook's denial with [%s]", err, code)
		}
	}

	t.Run("good update accepted", func(t *testing.T) {
		warned.take()
		if err := setWeights(80, 20); err != nil {
			t.Fatal(err)
		}
		if w := warned.take(); len(w) != 0 {
			t.Errorf("warnings %q for a good VirtualService, want none", w)
		}
	})
	t.Run("weights all zero: IST0106", func(t *testing.T) {
		denied(t, setWeights(0, 0), "IST0106")
		vs, err := vss.Get(ctx, "reviews", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if w := canarySplit(t, vs).Route[0].Weight; w != 80 {
			t.Errorf("stored weight %d after the denied update, want the last accepted 80", w)
		}
	})
	t.Run("second VirtualService for the same host: IST0109", func(t *testing.T) {
		vs := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "reviews-too", Namespace: "production"}}
		vs.Spec.Hosts = []string{"reviews"}
		vs.Spec.Http = []*networkingapi.HTTPRoute{{Route: []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: "reviews"}}}}}
		_, err := vss.Create(ctx, vs, metav1.CreateOptions{})
		denied(t, err, "IST0109")
	})
	t.Run("missing host: accepted with IST0101 as a warning", func(t *testing.T) {
		warned.take()
		vs := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "typo", Namespace: "production"}}
		vs.Spec.Hosts = []string{"reviews.example.com"}
		vs.Spec.Http = []*networkingapi.HTTPRoute{{Route: []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: "reviwes"}}}}}
		if _, err := vss.Create(ctx, vs, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if w := warned.take(); !slices.ContainsFunc(w, func(s string) bool { return strings.Contains(s, "[IST0101]") }) {
			t.Errorf("warnings %q, want IST0101's", w)
		}
	})
	t.Run("controller gone: fails closed", func(t *testing.T) {
		p.cmd.Process.Kill()
		<-p.exited
		err := setWeights(60, 40)
		if err == nil || !strings.Contains(err.Error(), "failed calling webhook") {
			t.Errorf("update with the webhook down: %v, want refused (failurePolicy Fail)", err)
		}
	})
}

// canarySplit is the fixture's reviews route "canary-split" (v1 90, v2 10).
func canarySplit(t *testing.T, vs *networkingv1.VirtualService) *networkingapi.HTTPRoute {
	t.Helper()
	for _, h := range vs.Spec.Http {
		if h.Name == "canary-split" && len(h.Route) == 2 {
			return h
		}
	}
	t.Fatalf("VirtualService %s/%s has no route canary-split with two destinations: %v", vs.Namespace, vs.Name, vs.Spec.Http)
	return nil
}
