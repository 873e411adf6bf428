package kubepublish

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/fibmesh/fibmesh/internal/kubetest"
)

// The test in this file runs against a real kube-apiserver and etcd
// (internal/kubetest; make test provides both, elsewhere it skips), with
// deploy/'s own manifests: the Publisher runs as the controller's
// ServiceAccount with controller-publish-rbac.yaml's rules only.

// repairDeadline bounds how long a repair may take: far under the
// Publisher's Resync of an hour in the test, so that only a watch can
// explain a repair within it.
const repairDeadline = 30 * time.Second

// testRoots returns a self-signed CA certificate, PEM.
func testRoots(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubepublish test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func readDeploy(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "base", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// watchUntil watches the object named name from resourceVersion rv (as
// the admin, restricted by field selector) until ok holds for an event's
// object; it returns that object's resourceVersion, failing the test
// after repairDeadline.
func watchUntil(t *testing.T, open func(context.Context, metav1.ListOptions) (watch.Interface, error), name, rv string, ok func(watch.EventType, runtime.Object) bool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), repairDeadline)
	defer cancel()
	w, err := open(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(), ResourceVersion: rv})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: no change as wanted within %s", name, repairDeadline)
		case ev, open := <-w.ResultChan():
			if !open {
				t.Fatalf("%s: watch closed", name)
			}
			if ev.Type == watch.Error {
				t.Fatalf("%s: watch: %v", name, ev.Object)
			}
			if ok(ev.Type, ev.Object) {
				return ev.Object.(metav1.Object).GetResourceVersion()
			}
		}
	}
}

// note is one watch event the Publisher handled.
type note struct {
	object, rv string
	repair     bool
}

// awaitNote returns whether the Publisher's watch of object called for a
// check on the event of resourceVersion rv.
func awaitNote(t *testing.T, notes <-chan note, object, rv string) bool {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case n := <-notes:
			if n.object == object && n.rv == rv {
				return n.repair
			}
		case <-timeout:
			t.Fatalf("the Publisher's watch of %s did not see resourceVersion %s within %s", object, rv, wait)
		}
	}
}

// TestWatchRepairsAtOnce: with deploy/'s manifests on a real API server
// and a Resync of an hour, the webhook configuration applied as shipped
// (failurePolicy Ignore), applied again after the controller set Fail
// (kubectl apply -k deploy/, a GitOps sync), or with its caBundle
// emptied, and the ConfigMap with stale roots or deleted, are put back
// as soon as the watch sees them; a change that leaves an object as
// wanted, and the Publisher's own writes, write nothing.
func TestWatchRepairsAtOnce(t *testing.T) {
	c := kubetest.Start(t)
	ctx := context.Background()
	admin := c.Clientset
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: DefaultNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	apply, err := c.Applier()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apply.Apply(ctx, readDeploy(t, "controller-publish-rbac.yaml")); err != nil {
		t.Fatal(err)
	}
	shipped := readDeploy(t, "webhook.yaml")
	if !bytes.Contains(shipped, []byte("failurePolicy: Ignore")) {
		t.Fatal("deploy/base/webhook.yaml no longer ships failurePolicy Ignore: update this test")
	}

	// The controller, as its ServiceAccount.
	cfg := c.AsServiceAccount(DefaultNamespace, "fibmesh-controller")
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hc.CloseIdleConnections) // after the Publisher's Run returned
	cs, err := kubernetes.NewForConfigAndClient(cfg, hc)
	if err != nil {
		t.Fatal(err)
	}
	notes := make(chan note, 1000)
	p, events := runWith(t, Options{Client: cs, ConfigMap: DefaultConfigMap, WebhookConfig: DefaultWebhookConfig,
		PatchCABundle: true, Resync: time.Hour},
		func(object, rv string, repair bool) { notes <- note{object, rv, repair} })
	roots := testRoots(t)
	p.SetRoots(roots)
	p.SetFailClosed()
	if ev := await(t, events, cmObject); ev.Err != nil || ev.Action != "created" {
		t.Fatalf("ConfigMap event %+v, want created", ev)
	}
	if ev := await(t, events, vwcObj); !errors.Is(ev.Err, ErrWebhookConfigNotFound) {
		t.Fatalf("webhook event %+v before deploy/ is applied, want not found", ev)
	}

	vwcs := admin.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	asWanted := func(_ watch.EventType, o runtime.Object) bool {
		v := o.(*admissionregistrationv1.ValidatingWebhookConfiguration)
		for _, w := range v.Webhooks {
			if w.FailurePolicy == nil || *w.FailurePolicy != admissionregistrationv1.Fail || !bytes.Equal(w.ClientConfig.CABundle, roots) {
				return false
			}
		}
		return len(v.Webhooks) > 0
	}
	// applyWebhook applies manifest as kubectl apply --server-side does
	// and returns when the Publisher has put it back, and how long that
	// took.
	applyWebhook := func(what string, manifest []byte) {
		t.Helper()
		writes := p.Stats().Writes
		start := time.Now()
		got, err := apply.Apply(ctx, manifest)
		if err != nil {
			t.Fatal(err)
		}
		applied := got[0].GetResourceVersion()
		if policy := firstPolicy(got[0].Object); policy != "Ignore" {
			t.Fatalf("%s: applied failurePolicy %q, want Ignore", what, policy)
		}
		fixed := watchUntil(t, vwcs.Watch, DefaultWebhookConfig, applied, asWanted)
		t.Logf("%s: failurePolicy Fail and caBundle back after %s (Resync 1h)", what, time.Since(start).Round(time.Millisecond))
		ev := await(t, events, vwcObj)
		for errors.Is(ev.Err, ErrWebhookConfigNotFound) { // SetRoots' and SetFailClosed's checks
			ev = await(t, events, vwcObj)
		}
		if ev.Err != nil || ev.Action != "updated" {
			t.Fatalf("%s: webhook event %+v, want updated", what, ev)
		}
		if !awaitNote(t, notes, vwcObj, applied) {
			t.Errorf("%s: the Publisher's watch saw the applied object and called for no repair", what)
		}
		if awaitNote(t, notes, vwcObj, fixed) {
			t.Errorf("%s: the Publisher's own write called for another check", what)
		}
		if got := p.Stats().Writes - writes; got != 1 {
			t.Errorf("%s: %d writes, want 1", what, got)
		}
	}
	// First install: the Publisher patches the configuration it did not
	// find as soon as it is created.
	applyWebhook("first apply of deploy/base/webhook.yaml", shipped)
	// kubectl apply -k deploy/ again: failurePolicy back to Ignore.
	applyWebhook("deploy/base/webhook.yaml applied again", shipped)
	// A manifest with caBundle "" (as deploy/ once shipped).
	applyWebhook("applied with caBundle \"\"", bytes.Replace(shipped, []byte("    clientConfig:\n"), []byte("    clientConfig:\n      caBundle: \"\"\n"), 1))

	// A change that leaves the object as wanted writes nothing.
	writes := p.Stats().Writes
	labeled, err := vwcs.Patch(ctx, DefaultWebhookConfig, types.MergePatchType, []byte(`{"metadata":{"labels":{"team":"mesh"}}}`), metav1.PatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if awaitNote(t, notes, vwcObj, labeled.ResourceVersion) {
		t.Error("a label added to the webhook configuration called for a check")
	}

	// The ConfigMap: stale roots applied, then deleted.
	cms := admin.CoreV1().ConfigMaps(DefaultNamespace)
	rootsBack := func(typ watch.EventType, o runtime.Object) bool {
		return typ != watch.Deleted && o.(*corev1.ConfigMap).Data[RootCertKey] == string(roots)
	}
	start := time.Now()
	got, err := apply.Apply(ctx, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: "+DefaultConfigMap+"\n  namespace: "+DefaultNamespace+"\ndata:\n  root-cert.pem: stale\n"))
	if err != nil {
		t.Fatal(err)
	}
	fixed := watchUntil(t, cms.Watch, DefaultConfigMap, got[0].GetResourceVersion(), rootsBack)
	t.Logf("ConfigMap applied with stale roots: roots back after %s", time.Since(start).Round(time.Millisecond))
	if ev := await(t, events, cmObject); ev.Err != nil || ev.Action != "updated" {
		t.Fatalf("ConfigMap event %+v, want updated", ev)
	}
	if !awaitNote(t, notes, cmObject, got[0].GetResourceVersion()) || awaitNote(t, notes, cmObject, fixed) {
		t.Error("ConfigMap: the stale roots called for no check, or the Publisher's own write did")
	}
	cm, err := cms.Get(ctx, DefaultConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := cms.Delete(ctx, DefaultConfigMap, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	watchUntil(t, cms.Watch, DefaultConfigMap, cm.ResourceVersion, rootsBack)
	t.Logf("ConfigMap deleted: created again after %s", time.Since(start).Round(time.Millisecond))
	if ev := await(t, events, cmObject); ev.Err != nil || ev.Action != "created" {
		t.Fatalf("ConfigMap event %+v, want created", ev)
	}
	cm, err = cms.Get(ctx, DefaultConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["extra"] = "kept"
	cm, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if awaitNote(t, notes, cmObject, cm.ResourceVersion) {
		t.Error("a key added to the ConfigMap called for a check")
	}
	// 3 webhook repairs and 2 of the ConfigMap, counted above; none since.
	if got := p.Stats().Writes - writes; got != 2 {
		t.Errorf("%d writes after the webhook was labeled, want 2 (the ConfigMap's repairs)", got)
	}
	if v, err := vwcs.Get(ctx, DefaultWebhookConfig, metav1.GetOptions{}); err != nil || v.ResourceVersion != labeled.ResourceVersion {
		t.Errorf("webhook configuration written after it was labeled: %v %v", v.ResourceVersion, err)
	}
	if got, err := cms.Get(ctx, DefaultConfigMap, metav1.GetOptions{}); err != nil || got.ResourceVersion != cm.ResourceVersion {
		t.Errorf("ConfigMap written after a key was added: %v", err)
	}
	if s := p.Stats(); s.WatchErrors != 0 {
		t.Errorf("stats %+v: watch errors (RBAC refused list or watch by name?)", s)
	}
}

// firstPolicy returns the first webhook's failurePolicy.
func firstPolicy(obj map[string]any) string {
	ws, _ := obj["webhooks"].([]any)
	if len(ws) == 0 {
		return ""
	}
	w, _ := ws[0].(map[string]any)
	s, _ := w["failurePolicy"].(string)
	return s
}
