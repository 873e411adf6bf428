package kubepublish

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 10 * time.Second

// webhookConfig is deploy/'s ValidatingWebhookConfiguration as shipped
// (failurePolicy Ignore, no caBundle), with a second webhook called by
// url, as a test against a kube-apiserver on loopback configures it.
func webhookConfig() *admissionregistrationv1.ValidatingWebhookConfiguration {
	ignore := admissionregistrationv1.Ignore
	none := admissionregistrationv1.SideEffectClassNone
	path := "/validate"
	url := "https://127.0.0.1:15017/validate"
	return &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: DefaultWebhookConfig},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{
			{Name: "validation.fibmesh.io", FailurePolicy: &ignore, SideEffects: &none, AdmissionReviewVersions: []string{"v1"},
				ClientConfig: admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{
					Namespace: DefaultNamespace, Name: "fibmesh-controller", Path: &path}}},
			{Name: "url.validation.fibmesh.io", FailurePolicy: &ignore, SideEffects: &none, AdmissionReviewVersions: []string{"v1"},
				ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url}},
		},
	}
}

// run starts a Publisher on client and returns its events.
func run(t *testing.T, opts Options) (*Publisher, <-chan Event) {
	t.Helper()
	return runWith(t, opts, nil)
}

// runWith is run with onWatch set as the Publisher's test hook.
func runWith(t *testing.T, opts Options, onWatch func(object, rv string, repair bool)) (*Publisher, <-chan Event) {
	t.Helper()
	events := make(chan Event, 100)
	opts.OnEvent = func(ev Event) { events <- ev }
	if opts.Namespace == "" {
		opts.Namespace = DefaultNamespace
	}
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	p.onWatch = onWatch
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return p, events
}

// await returns the next event about object, failing on a timeout.
func await(t *testing.T, events <-chan Event, object string) Event {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case ev := <-events:
			if ev.Object == object {
				return ev
			}
		case <-timeout:
			t.Fatalf("no event about %s within %s", object, wait)
		}
	}
}

const (
	cmObject = "ConfigMap fibmesh-system/fibmesh-ca-root"
	vwcObj   = "ValidatingWebhookConfiguration fibmesh-validator"
)

func getVWC(t *testing.T, c *fake.Clientset) *admissionregistrationv1.ValidatingWebhookConfiguration {
	t.Helper()
	v, err := c.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(context.Background(), DefaultWebhookConfig, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func policies(v *admissionregistrationv1.ValidatingWebhookConfiguration) []string {
	var out []string
	for _, w := range v.Webhooks {
		out = append(out, string(*w.FailurePolicy))
	}
	return out
}

// TestPublish: the ConfigMap is created with the roots and updated when
// they change (its other keys kept); every webhook, by service or by
// url, gets the roots as caBundle, and failurePolicy Fail only after
// SetFailClosed.
func TestPublish(t *testing.T) {
	c := fake.NewClientset(webhookConfig())
	p, events := run(t, Options{Client: c, ConfigMap: DefaultConfigMap, WebhookConfig: DefaultWebhookConfig, PatchCABundle: true})
	p.SetRoots([]byte("ROOT1"))
	if ev := await(t, events, cmObject); ev.Err != nil || ev.Action != "created" {
		t.Fatalf("first ConfigMap event %+v, want created", ev)
	}
	if ev := await(t, events, vwcObj); ev.Err != nil || ev.Change != "caBundle" {
		t.Fatalf("first webhook event %+v, want caBundle updated", ev)
	}
	cm, err := c.CoreV1().ConfigMaps(DefaultNamespace).Get(context.Background(), DefaultConfigMap, metav1.GetOptions{})
	if err != nil || cm.Data[RootCertKey] != "ROOT1" {
		t.Fatalf("ConfigMap %v %v, want %s = ROOT1", cm, err, RootCertKey)
	}
	v := getVWC(t, c)
	for _, w := range v.Webhooks {
		if string(w.ClientConfig.CABundle) != "ROOT1" {
			t.Errorf("webhook %s caBundle %q, want ROOT1", w.Name, w.ClientConfig.CABundle)
		}
	}
	if got := policies(v); strings.Join(got, ",") != "Ignore,Ignore" {
		t.Errorf("failurePolicy %v before SetFailClosed, want Ignore", got)
	}

	p.SetFailClosed()
	if ev := await(t, events, vwcObj); ev.Err != nil || ev.Change != "failurePolicy=Fail" {
		t.Fatalf("webhook event %+v, want failurePolicy=Fail", ev)
	}
	if got := policies(getVWC(t, c)); strings.Join(got, ",") != "Fail,Fail" {
		t.Errorf("failurePolicy %v after SetFailClosed, want Fail", got)
	}

	// A rotation: both follow; a key someone else added stays.
	cm.Data["extra"] = "kept"
	if _, err := c.CoreV1().ConfigMaps(DefaultNamespace).Update(context.Background(), cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	p.SetRoots([]byte("ROOT2ROOT1"))
	if ev := await(t, events, cmObject); ev.Err != nil || ev.Action != "updated" {
		t.Fatalf("ConfigMap event %+v, want updated", ev)
	}
	if ev := await(t, events, vwcObj); ev.Err != nil || ev.Change != "caBundle" {
		t.Fatalf("webhook event %+v, want caBundle", ev)
	}
	cm, _ = c.CoreV1().ConfigMaps(DefaultNamespace).Get(context.Background(), DefaultConfigMap, metav1.GetOptions{})
	if cm.Data[RootCertKey] != "ROOT2ROOT1" || cm.Data["extra"] != "kept" {
		t.Errorf("ConfigMap data %v, want the new roots and the extra key", cm.Data)
	}
	if got := string(getVWC(t, c).Webhooks[1].ClientConfig.CABundle); got != "ROOT2ROOT1" {
		t.Errorf("caBundle %q after rotation", got)
	}
}

// TestResyncRepairs: a manifest applied again (caBundle emptied,
// failurePolicy back to Ignore) is repaired at the next resync; a
// webhook configuration that does not exist yet is reported (without
// backoff) and patched once it appears.
func TestResyncRepairs(t *testing.T) {
	c := fake.NewClientset()
	p, events := run(t, Options{Client: c, ConfigMap: DefaultConfigMap, WebhookConfig: DefaultWebhookConfig, PatchCABundle: true,
		Resync: 20 * time.Millisecond})
	p.SetRoots([]byte("ROOT"))
	p.SetFailClosed()
	ev := await(t, events, vwcObj)
	if !errors.Is(ev.Err, ErrWebhookConfigNotFound) || ev.Retry != 20*time.Millisecond {
		t.Fatalf("event %+v, want ErrWebhookConfigNotFound retried at the resync interval", ev)
	}
	if _, err := c.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(context.Background(), webhookConfig(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for ev = await(t, events, vwcObj); ev.Err != nil; ev = await(t, events, vwcObj) {
	}
	if ev.Change != "caBundle, failurePolicy=Fail" {
		t.Errorf("event %+v, want caBundle and failurePolicy", ev)
	}
	// kubectl apply -k deploy/ again.
	if _, err := c.AdmissionregistrationV1().ValidatingWebhookConfigurations().Update(context.Background(), webhookConfig(), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if ev := await(t, events, vwcObj); ev.Err != nil || ev.Change != "caBundle, failurePolicy=Fail" {
		t.Fatalf("event %+v after the manifest was applied again, want both repaired", ev)
	}
}

// TestRetryWithBackoff: failed writes are reported and retried, each
// wait longer than the one before up to MaxBackoff, until one succeeds.
func TestRetryWithBackoff(t *testing.T) {
	c := fake.NewClientset(webhookConfig())
	fails := 4
	c.PrependReactor("create", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		if fails > 0 {
			fails--
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, DefaultConfigMap, errors.New("RBAC"))
		}
		return false, nil, nil
	})
	p, events := run(t, Options{Client: c, ConfigMap: DefaultConfigMap, MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond})
	p.SetRoots([]byte("ROOT"))
	var retries []time.Duration
	for {
		ev := await(t, events, cmObject)
		if ev.Err == nil {
			break
		}
		if !apierrors.IsForbidden(ev.Err) || !strings.Contains(ev.Err.Error(), "create ConfigMap fibmesh-system/fibmesh-ca-root") {
			t.Errorf("error %v, want the Forbidden wrapped with what was written", ev.Err)
		}
		retries = append(retries, ev.Retry)
	}
	want := []time.Duration{time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond, 4 * time.Millisecond}
	if len(retries) != len(want) {
		t.Fatalf("retries %v, want %v", retries, want)
	}
	for i := range want {
		if retries[i] != want[i] {
			t.Errorf("retries %v, want %v", retries, want)
			break
		}
	}
}

// TestOwnCertificate: with PatchCABundle false (the webhook serves a
// certificate from files), the caBundle is left to whoever issued it;
// failurePolicy is still set.
func TestOwnCertificate(t *testing.T) {
	v := webhookConfig()
	v.Webhooks[0].ClientConfig.CABundle = []byte("CERT-MANAGER")
	c := fake.NewClientset(v)
	p, events := run(t, Options{Client: c, WebhookConfig: DefaultWebhookConfig})
	p.SetRoots([]byte("ROOT"))
	p.SetFailClosed()
	for ev := await(t, events, vwcObj); ev.Change != "failurePolicy=Fail"; ev = await(t, events, vwcObj) {
		if ev.Err != nil {
			t.Fatal(ev.Err)
		}
	}
	got := getVWC(t, c)
	if string(got.Webhooks[0].ClientConfig.CABundle) != "CERT-MANAGER" || got.Webhooks[1].ClientConfig.CABundle != nil {
		t.Errorf("caBundles %q %q, want them untouched", got.Webhooks[0].ClientConfig.CABundle, got.Webhooks[1].ClientConfig.CABundle)
	}
	if _, err := c.CoreV1().ConfigMaps(DefaultNamespace).Get(context.Background(), DefaultConfigMap, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a ConfigMap was written without Options.ConfigMap: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("New without a client: no error")
	}
	if _, err := New(Options{Client: fake.NewClientset(), ConfigMap: "x"}); err == nil || !strings.Contains(err.Error(), "needs a Namespace") {
		t.Errorf("New with a ConfigMap and no namespace: %v", err)
	}
}

// TestWatchRetries: a list the API server refuses (RBAC without list and
// watch) is reported as a watch error and tried again with backoff, the
// writes going on meanwhile; once it works, a change is repaired at once
// (Resync is an hour).
func TestWatchRetries(t *testing.T) {
	c := fake.NewClientset(webhookConfig())
	fails := 3
	c.PrependReactor("list", "validatingwebhookconfigurations", func(k8stesting.Action) (bool, runtime.Object, error) {
		if fails > 0 {
			fails--
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "validatingwebhookconfigurations"}, "", errors.New("RBAC"))
		}
		return false, nil, nil
	})
	// The fake delivers only changes made after a watch is registered.
	watching := make(chan struct{}, 1)
	c.PrependWatchReactor("validatingwebhookconfigurations", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := c.Tracker().Watch(a.GetResource(), a.GetNamespace())
		select {
		case watching <- struct{}{}:
		default:
		}
		return true, w, err
	})
	p, events := run(t, Options{Client: c, WebhookConfig: DefaultWebhookConfig, PatchCABundle: true,
		Resync: time.Hour, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond})
	p.SetRoots([]byte("ROOT"))
	var retries []time.Duration
	wrote := false
	for len(retries) < 3 || !wrote {
		ev := await(t, events, vwcObj)
		switch {
		case ev.Err == nil:
			wrote = true
		case strings.HasPrefix(ev.Err.Error(), "watch "+vwcObj) && apierrors.IsForbidden(ev.Err):
			retries = append(retries, ev.Retry)
		default:
			t.Fatalf("event %+v, want a watch error or a write", ev)
		}
	}
	if want := []time.Duration{time.Millisecond, 2 * time.Millisecond, 2 * time.Millisecond}; !slices.Equal(retries, want) {
		t.Errorf("watch retries %v, want %v", retries, want)
	}
	// Once the watch is open, apply the manifest again.
	select {
	case <-watching:
	case <-time.After(wait):
		t.Fatalf("no watch opened within %s", wait)
	}
	if _, err := c.AdmissionregistrationV1().ValidatingWebhookConfigurations().Update(context.Background(), webhookConfig(), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if ev := await(t, events, vwcObj); ev.Err != nil || ev.Change != "caBundle" {
		t.Fatalf("event %+v after the manifest was applied again, want caBundle repaired by the watch", ev)
	}
	if s := p.Stats(); s.WatchErrors != 3 || s.WatchRepairs == 0 || s.Writes != 2 {
		t.Errorf("stats %+v, want 3 watch errors, a repair, 2 writes", s)
	}
}
