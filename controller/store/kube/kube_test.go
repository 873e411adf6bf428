package kube_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	clientfeatures "k8s.io/client-go/features"
	clientfeaturestesting "k8s.io/client-go/features/testing"
	kubefake "k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	networkingapi "istio.io/api/networking/v1"

	"github.com/fibmesh/fibmesh/controller/ca"
	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/controller/store"
	"github.com/fibmesh/fibmesh/controller/store/kube"
	"github.com/fibmesh/fibmesh/internal/yamldoc"
)

// timeout bounds every wait for an Update; generous, since -race and a
// loaded machine slow the informers down. No test sleeps: they all wait on
// the Updates channel.
const timeout = 20 * time.Second

// watchedKinds is how many informers the store starts.
const watchedKinds = 11

// fakes are the two fake clientsets, with a hook that reports each watch
// once it is established: the fake clientsets drop events that happen
// between an informer's list and its watch, so a test must not change
// objects before every watch is in place.
type fakes struct {
	kube    *kubefake.Clientset
	istio   *istiofake.Clientset
	watches chan schema.GroupVersionResource
}

func newFakes(t *testing.T, kubeObjs, istioObjs []runtime.Object) *fakes {
	t.Helper()
	f := &fakes{
		kube:    kubefake.NewClientset(kubeObjs...),
		istio:   istiofake.NewSimpleClientset(istioObjs...),
		watches: make(chan schema.GroupVersionResource, 4*watchedKinds),
	}
	f.kube.PrependWatchReactor("*", f.reactor(f.kube.Tracker()))
	f.istio.PrependWatchReactor("*", f.reactor(f.istio.Tracker()))
	return f
}

func (f *fakes) reactor(tracker clienttesting.ObjectTracker) clienttesting.WatchReactionFunc {
	return func(action clienttesting.Action) (bool, watch.Interface, error) {
		w, err := tracker.Watch(action.GetResource(), action.GetNamespace())
		if err != nil {
			return false, nil, err
		}
		f.watches <- action.GetResource()
		return true, w, nil
	}
}

// waitWatches waits until every informer watches.
func (f *fakes) waitWatches(t *testing.T) {
	t.Helper()
	seen := map[schema.GroupVersionResource]bool{}
	deadline := time.After(timeout)
	for len(seen) < watchedKinds {
		select {
		case gvr := <-f.watches:
			seen[gvr] = true
		case <-deadline:
			t.Fatalf("only %d of %d informers watch: %v", len(seen), watchedKinds, seen)
		}
	}
}

// setup disables the WatchList protocol, which the Istio fake clientset
// does not speak (informers would wait for its initial-events bookmark
// forever), and makes sure no goroutine outlives the test.
func setup(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	clientfeaturestesting.SetFeatureDuringTest(t, clientfeatures.WatchListClient, false)
}

// run runs s until the test ends, and checks that Run returns nil then.
// Cleanups run last-in first-out, so the store is stopped before setup's
// leak check.
func run(t *testing.T, s *kube.Store) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(timeout):
			t.Errorf("Run did not return %v after its context was cancelled", timeout)
		}
	})
}

// next returns the first Update for which ok holds, failing the test if
// none comes within timeout.
func next(t *testing.T, s store.Store, what string, ok func(store.Update) bool) store.Update {
	t.Helper()
	deadline := time.After(timeout)
	var last store.Update
	for {
		select {
		case u, open := <-s.Updates():
			if !open {
				t.Fatalf("waiting for %s: Updates closed", what)
			}
			if u.Err != nil {
				t.Fatalf("waiting for %s: Update with error: %v", what, u.Err)
			}
			if ok(u) {
				return u
			}
			last = u
		case <-deadline:
			t.Fatalf("waiting for %s: none in %v; last snapshot: %v", what, timeout, keys(last.Snapshot))
		}
	}
}

func keys(s *config.Snapshot) []string {
	if s == nil {
		return nil
	}
	var k []string
	for _, r := range s.Resources {
		k = append(k, r.Key())
	}
	return k
}

func find(s *config.Snapshot, key string) (config.Resource, bool) {
	for _, r := range s.Resources {
		if r.Key() == key {
			return r, true
		}
	}
	return config.Resource{}, false
}

// decodeFixture decodes a multi-document YAML file into typed objects,
// the Kubernetes ones and the Istio ones apart, the way kubectl would
// send them to the API server.
func decodeFixture(t *testing.T, file string) (kubeObjs, istioObjs []runtime.Object) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := yamldoc.Split(data)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	for _, d := range docs {
		doc := d.Raw
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatal(err)
		}
		var obj runtime.Object
		istio := false
		switch tm.Kind {
		case "":
			continue // comments only
		case "Namespace":
			obj = &corev1.Namespace{}
		case "Node":
			obj = &corev1.Node{}
		case "ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "Service":
			obj = &corev1.Service{}
		case "EndpointSlice":
			obj = &discoveryv1.EndpointSlice{}
		case "Pod":
			obj = &corev1.Pod{}
		case "VirtualService":
			obj, istio = &networkingv1.VirtualService{}, true
		case "DestinationRule":
			obj, istio = &networkingv1.DestinationRule{}, true
		case "ServiceEntry":
			obj, istio = &networkingv1.ServiceEntry{}, true
		case "PeerAuthentication":
			obj, istio = &securityv1.PeerAuthentication{}, true
		case "AuthorizationPolicy":
			obj, istio = &securityv1.AuthorizationPolicy{}, true
		default:
			t.Fatalf("%s: kind %s not in the test's table", file, tm.Kind)
		}
		if err := yamldoc.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("%s: %s: %v", file, tm.Kind, err)
		}
		if istio {
			istioObjs = append(istioObjs, obj)
		} else {
			kubeObjs = append(kubeObjs, obj)
		}
	}
	return kubeObjs, istioObjs
}

// normalize renders obj as JSON without what the API server adds or the
// informers leave out (type meta, resource version, managed fields), so
// that an object read from a file and one read from the API compare.
func normalize(t *testing.T, obj runtime.Object) map[string]any {
	t.Helper()
	obj = obj.DeepCopyObject()
	obj.GetObjectKind().SetGroupVersionKind(schema.GroupVersionKind{})
	m, err := meta.Accessor(obj)
	if err != nil {
		t.Fatal(err)
	}
	m.SetResourceVersion("")
	m.SetManagedFields(nil)
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

type resourceView struct {
	GVK    schema.GroupVersionKind
	Source config.Source
	Object map[string]any
}

func view(t *testing.T, s *config.Snapshot, source bool) map[string]resourceView {
	t.Helper()
	v := map[string]resourceView{}
	for _, r := range s.Resources {
		rv := resourceView{GVK: r.GVK, Object: normalize(t, r.Object)}
		if source {
			rv.Source = r.Source
		}
		if _, dup := v[r.Key()]; dup {
			t.Errorf("%s twice in snapshot", r.Key())
		}
		v[r.Key()] = rv
	}
	return v
}

// TestSnapshotMatchesLoadDir: the same objects, once in the cluster and
// once in a YAML file, give the same resources.
func TestSnapshotMatchesLoadDir(t *testing.T) {
	setup(t)
	fixture := filepath.Join("testdata", "cluster.yaml")
	fromFile, err := config.LoadDir(filepath.Dir(fixture))
	if err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
	if len(fromFile.Skipped) != 0 {
		t.Fatalf("LoadDir skipped %v; the fixture should hold only consumed kinds", keys(&config.Snapshot{Resources: fromFile.Skipped}))
	}

	kubeObjs, istioObjs := decodeFixture(t, fixture)
	f := newFakes(t, kubeObjs, istioObjs)
	s := kube.New(f.kube, f.istio, kube.Options{Debounce: 10 * time.Millisecond})
	run(t, s)
	u := next(t, s, "the first snapshot", func(store.Update) bool { return true })

	if len(u.Snapshot.Resources) != len(fromFile.Resources) {
		t.Errorf("cluster snapshot has %d resources %v, LoadDir %d %v",
			len(u.Snapshot.Resources), keys(u.Snapshot), len(fromFile.Resources), keys(fromFile))
	}
	for _, r := range u.Snapshot.Resources {
		if r.Source != (config.Source{}) {
			t.Errorf("%s: Source = %+v, want the zero Source (kubernetes)", r.Key(), r.Source)
		}
	}
	got := view(t, u.Snapshot, false)
	want := view(t, fromFile, false)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("cluster snapshot differs from LoadDir of %s (-file +cluster):\n%s", fixture, diff)
	}
}

// TestEvents: creates, updates and deletes of Kubernetes and Istio
// objects each show up in a later snapshot.
func TestEvents(t *testing.T) {
	setup(t)
	ctx := context.Background()
	f := newFakes(t, nil, nil)
	s := kube.New(f.kube, f.istio, kube.Options{Debounce: 10 * time.Millisecond})
	run(t, s)

	u := next(t, s, "the first snapshot", func(store.Update) bool { return true })
	if len(u.Snapshot.Resources) != 0 {
		t.Fatalf("first snapshot of an empty cluster: %v", keys(u.Snapshot))
	}
	f.waitWatches(t)

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: "shop"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 9080}}},
	}
	if _, err := f.kube.CoreV1().Services("shop").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	u = next(t, s, "the new Service", func(u store.Update) bool {
		_, ok := find(u.Snapshot, "Service shop/reviews")
		return ok
	})
	r, _ := find(u.Snapshot, "Service shop/reviews")
	if want := (schema.GroupVersionKind{Version: "v1", Kind: "Service"}); r.GVK != want {
		t.Errorf("GVK = %v, want %v", r.GVK, want)
	}

	svc.Spec.Ports[0].Port = 9090
	if _, err := f.kube.CoreV1().Services("shop").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	next(t, s, "the Service's new port", func(u store.Update) bool {
		r, ok := find(u.Snapshot, "Service shop/reviews")
		return ok && r.Object.(*corev1.Service).Spec.Ports[0].Port == 9090
	})

	vs := &networkingv1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: "shop"},
	}
	vs.Spec.Hosts = []string{"reviews"}
	if _, err := f.istio.NetworkingV1().VirtualServices("shop").Create(ctx, vs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	u = next(t, s, "the new VirtualService", func(u store.Update) bool {
		_, ok := find(u.Snapshot, "VirtualService shop/reviews")
		return ok
	})
	r, _ = find(u.Snapshot, "VirtualService shop/reviews")
	if want := (schema.GroupVersionKind{Group: "networking.istio.io", Version: "v1", Kind: "VirtualService"}); r.GVK != want {
		t.Errorf("GVK = %v, want %v", r.GVK, want)
	}
	if got := r.Object.(*networkingv1.VirtualService).Spec.GetHosts(); !slices.Equal(got, []string{"reviews"}) {
		t.Errorf("VirtualService hosts = %v", got)
	}

	vs.Spec.Http = []*networkingapi.HTTPRoute{{Name: "default"}}
	if _, err := f.istio.NetworkingV1().VirtualServices("shop").Update(ctx, vs, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	next(t, s, "the VirtualService's new route", func(u store.Update) bool {
		r, ok := find(u.Snapshot, "VirtualService shop/reviews")
		return ok && len(r.Object.(*networkingv1.VirtualService).Spec.GetHttp()) == 1
	})

	if err := f.kube.CoreV1().Services("shop").Delete(ctx, "reviews", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := f.istio.NetworkingV1().VirtualServices("shop").Delete(ctx, "reviews", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	next(t, s, "an empty snapshot after the deletes", func(u store.Update) bool {
		return len(u.Snapshot.Resources) == 0
	})
}

// TestRunStops: Run returns nil when its context is cancelled, also while
// it is still waiting for the caches, and closes Updates.
func TestRunStops(t *testing.T) {
	setup(t)
	f := newFakes(t, nil, nil)
	// Every list fails, so the caches never sync.
	f.kube.PrependReactor("list", "*", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("no API server today")
	})
	s := kube.New(f.kube, f.istio, kube.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(timeout):
		t.Fatal("Run did not return after its context was cancelled")
	}
	if _, open := <-s.Updates(); open {
		t.Error("Updates not closed after Run returned")
	}
}

// rbacFile is the controller's RBAC, which the tests below hold to the
// API calls it makes.
var rbacFile = filepath.Join("..", "..", "..", "deploy", "rbac.yaml")

// caClusterCalls are the cluster-scoped calls the controller's CA makes
// besides the store's informers: group/resource → verbs, as
// TestRBACCoversCA sees them made.
var caClusterCalls = map[string]map[string]bool{
	"tokenreviews.authentication.k8s.io": {"create": true},
}

// nodeTaintCalls are the calls controller/nodetaint makes to lift the
// startup taint: read a node, write it back.
var nodeTaintCalls = map[string]map[string]bool{
	"nodes": {"get": true, "update": true},
}

// TestRBACCoversInformers: deploy/rbac.yaml's ClusterRole grants exactly
// what the store's informers do, on exactly the resources they touch,
// and besides them only the CA's cluster-scoped calls (TokenReview) and
// controller/nodetaint's (get and update nodes).
func TestRBACCoversInformers(t *testing.T) {
	setup(t)
	f := newFakes(t, nil, nil)
	s := kube.New(f.kube, f.istio, kube.Options{})
	run(t, s)
	next(t, s, "the first snapshot", func(store.Update) bool { return true })
	f.waitWatches(t)

	// What the informers did: group/resource → verbs.
	used := map[string]map[string]bool{}
	for _, a := range append(f.kube.Actions(), f.istio.Actions()...) {
		gr := a.GetResource().GroupResource().String()
		if used[gr] == nil {
			used[gr] = map[string]bool{}
		}
		used[gr][a.GetVerb()] = true
	}
	if len(used) != watchedKinds {
		t.Errorf("informers touched %d resources, want %d: %v", len(used), watchedKinds, used)
	}

	rb := readRBAC(t, rbacFile)
	role := rb.clusterRole

	// What the ClusterRole grants: group/resource → verbs.
	granted := map[string]map[string]bool{}
	for i, rule := range role.Rules {
		if len(rule.ResourceNames) > 0 || len(rule.NonResourceURLs) > 0 {
			t.Errorf("ClusterRole rule %d: resourceNames/nonResourceURLs are not used by informers or TokenReview", i)
		}
		for _, g := range rule.APIGroups {
			for _, r := range rule.Resources {
				gr := schema.GroupResource{Group: g, Resource: r}.String()
				if granted[gr] == nil {
					granted[gr] = map[string]bool{}
				}
				for _, v := range rule.Verbs {
					granted[gr][v] = true
				}
			}
		}
	}
	// Informers list and watch; a real API server may be asked either
	// way (WatchList falls back to list), so both verbs are needed even
	// where the fakes saw only one.
	informerVerbs := map[string]bool{"list": true, "watch": true}
	for gr, verbs := range used {
		for v := range verbs {
			if !granted[gr][v] {
				t.Errorf("informers %s %s, rbac.yaml does not grant it", v, gr)
			}
		}
	}
	for gr, verbs := range caClusterCalls {
		for v := range verbs {
			if !granted[gr][v] {
				t.Errorf("the CA calls %s %s (TokenReview node authentication), rbac.yaml's ClusterRole does not grant it", v, gr)
			}
		}
	}
	for gr, verbs := range nodeTaintCalls {
		for v := range verbs {
			if !granted[gr][v] {
				t.Errorf("controller/nodetaint calls %s %s (the startup taint), rbac.yaml's ClusterRole does not grant it", v, gr)
			}
		}
	}
	for gr, verbs := range granted {
		want := map[string]bool{}
		if used[gr] != nil {
			maps.Copy(want, informerVerbs)
		}
		maps.Copy(want, caClusterCalls[gr])
		maps.Copy(want, nodeTaintCalls[gr])
		if len(want) == 0 {
			t.Errorf("rbac.yaml grants %v on %s, which neither an informer, the CA nor nodetaint uses", keysOf(verbs), gr)
			continue
		}
		if diff := cmp.Diff(want, verbs); diff != "" {
			t.Errorf("rbac.yaml verbs on %s, want exactly %v (-want +got):\n%s", gr, keysOf(want), diff)
		}
	}

	if rb.clusterBinding.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name}) {
		t.Errorf("ClusterRoleBinding refers to %+v, want ClusterRole %s", rb.clusterBinding.RoleRef, role.Name)
	}
	if !slices.Equal(rb.clusterBinding.Subjects, []rbacv1.Subject{rb.subject()}) {
		t.Errorf("ClusterRoleBinding subjects = %+v, want only %+v", rb.clusterBinding.Subjects, rb.subject())
	}
}

// TestRBACCoversCA: the API calls the controller's CA makes are the ones
// deploy/rbac.yaml grants. TokenReview's create is cluster-scoped (the
// ClusterRole, checked with the informers above); the CA Secret of
// --ca-secret fibmesh-system/cacerts is read with get, which the Role in
// fibmesh-system grants on that Secret only.
func TestRBACCoversCA(t *testing.T) {
	const ns, secret = "fibmesh-system", "cacerts"
	kc := kubefake.NewClientset()
	ctx := context.Background()
	// The fakes neither authenticate the token nor hold the Secret: the
	// calls fail, but they are made, and recorded, all the same.
	if _, err := ca.TokenReview(kc, []string{"fibmesh-ca"}).Authenticate(ctx, "agent-token"); err == nil {
		t.Error("the fake TokenReview authenticated a token")
	}
	if _, err := ca.FromSecret(ctx, kc, ns, secret, "cluster.local"); err == nil {
		t.Error("FromSecret succeeded without the Secret")
	}
	cluster := map[string]map[string]bool{}
	type call struct{ verb, namespace, name string }
	var secretCalls []call
	for _, a := range kc.Actions() {
		gr := a.GetResource().GroupResource().String()
		switch gr {
		case "secrets":
			c := call{verb: a.GetVerb(), namespace: a.GetNamespace()}
			if g, ok := a.(clienttesting.GetAction); ok {
				c.name = g.GetName()
			}
			secretCalls = append(secretCalls, c)
		default:
			if a.GetNamespace() != "" {
				t.Errorf("the CA calls %s %s in namespace %s: this test expects only cluster-scoped calls besides the Secret", a.GetVerb(), gr, a.GetNamespace())
			}
			if cluster[gr] == nil {
				cluster[gr] = map[string]bool{}
			}
			cluster[gr][a.GetVerb()] = true
		}
	}
	if d := cmp.Diff(caClusterCalls, cluster); d != "" {
		t.Errorf("the CA's cluster-scoped calls differ from caClusterCalls, which TestRBACCoversInformers holds rbac.yaml to (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]call{{"get", ns, secret}}, secretCalls, cmp.AllowUnexported(call{})); d != "" {
		t.Errorf("the CA's Secret calls (-want +got):\n%s", d)
	}

	rb := readRBAC(t, rbacFile)
	if rb.role == nil || rb.binding == nil {
		t.Fatalf("%s: want a Role and a RoleBinding granting get on Secret %s/%s", rbacFile, ns, secret)
	}
	if rb.role.Namespace != ns {
		t.Errorf("Role %s is in namespace %q, want %s (the CA Secret's)", rb.role.Name, rb.role.Namespace, ns)
	}
	want := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{secret}, Verbs: []string{"get"}}}
	if d := cmp.Diff(want, rb.role.Rules); d != "" {
		t.Errorf("Role %s/%s rules: want exactly get on Secret %s (-want +got):\n%s", rb.role.Namespace, rb.role.Name, secret, d)
	}
	if rb.binding.Namespace != ns {
		t.Errorf("RoleBinding %s is in namespace %q, want %s", rb.binding.Name, rb.binding.Namespace, ns)
	}
	if rb.binding.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: rb.role.Name}) {
		t.Errorf("RoleBinding refers to %+v, want Role %s", rb.binding.RoleRef, rb.role.Name)
	}
	if !slices.Equal(rb.binding.Subjects, []rbacv1.Subject{rb.subject()}) {
		t.Errorf("RoleBinding subjects = %+v, want only %+v", rb.binding.Subjects, rb.subject())
	}
}

func keysOf(m map[string]bool) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	slices.Sort(k)
	return k
}

// rbac is deploy/rbac.yaml: a ServiceAccount, a ClusterRole and its
// binding, and optionally one Role and its binding.
type rbac struct {
	sa             *corev1.ServiceAccount
	clusterRole    *rbacv1.ClusterRole
	clusterBinding *rbacv1.ClusterRoleBinding
	role           *rbacv1.Role
	binding        *rbacv1.RoleBinding
}

// subject is the controller's ServiceAccount as a binding's subject.
func (rb *rbac) subject() rbacv1.Subject {
	return rbacv1.Subject{Kind: "ServiceAccount", Name: rb.sa.Name, Namespace: rb.sa.Namespace}
}

// readRBAC decodes rbac.yaml strictly; it must hold exactly one
// ServiceAccount, one ClusterRole and one ClusterRoleBinding, and may
// hold one Role and one RoleBinding.
func readRBAC(t *testing.T, file string) *rbac {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var rb rbac
	one := func(kind string, have bool) {
		if have {
			t.Fatalf("%s: more than one %s", file, kind)
		}
	}
	docs, err := yamldoc.Split(data)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	for _, d := range docs {
		i, doc := d.N, d.Raw
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("%s document %d: %v", file, i, err)
		}
		var obj any
		switch tm.Kind {
		case "ClusterRole":
			one(tm.Kind, rb.clusterRole != nil)
			rb.clusterRole = &rbacv1.ClusterRole{}
			obj = rb.clusterRole
		case "ClusterRoleBinding":
			one(tm.Kind, rb.clusterBinding != nil)
			rb.clusterBinding = &rbacv1.ClusterRoleBinding{}
			obj = rb.clusterBinding
		case "Role":
			one(tm.Kind, rb.role != nil)
			rb.role = &rbacv1.Role{}
			obj = rb.role
		case "RoleBinding":
			one(tm.Kind, rb.binding != nil)
			rb.binding = &rbacv1.RoleBinding{}
			obj = rb.binding
		case "ServiceAccount":
			one(tm.Kind, rb.sa != nil)
			rb.sa = &corev1.ServiceAccount{}
			obj = rb.sa
		default:
			t.Fatalf("%s document %d: unexpected kind %q", file, i, tm.Kind)
		}
		if err := yamldoc.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("%s document %d (%s): %v", file, i, tm.Kind, err)
		}
	}
	if rb.clusterRole == nil || rb.clusterBinding == nil || rb.sa == nil {
		t.Fatalf("%s: want a ClusterRole, a ClusterRoleBinding and a ServiceAccount", file)
	}
	if (rb.role == nil) != (rb.binding == nil) {
		t.Fatalf("%s: a Role needs a RoleBinding, and a RoleBinding a Role", file)
	}
	return &rb
}
