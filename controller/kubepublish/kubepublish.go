// Package kubepublish keeps what the controller writes to the Kubernetes
// API up to date: the ConfigMap holding the CA's trust bundle (Istio's
// istio-ca-root-cert; agents read their --controller-ca from it), and the
// ValidatingWebhookConfiguration of the controller's admission webhook:
// its webhooks' caBundle (the CA's roots, which signed the webhook's
// serving certificate) and their failurePolicy, set to Fail once the
// webhook serves (the manifest ships Ignore so that a first install,
// before the controller runs, is not blocked; istiod does the same).
//
// A Publisher writes on every change it is given (SetRoots, SetFailClosed)
// and on every change of either object that makes it differ from what it
// wants: it watches both (a list and watch restricted to each object's
// name by the field selector metadata.name, so RBAC may limit list and
// watch to resourceNames), and a manifest applied again (which resets
// failurePolicy to Ignore) is repaired as soon as the API server tells of
// it. A change that leaves the object as wanted (the Publisher's own
// write among them) writes nothing. Every Options.Resync it also checks
// both, in case a watch is down. A failed write or watch is retried with
// exponential backoff; neither stops the Publisher. Errors and changes
// are reported to Options.OnEvent; the package logs nothing.
package kubepublish

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Defaults for Options.
const (
	DefaultConfigMap     = "fibmesh-ca-root"
	DefaultWebhookConfig = "fibmesh-validator"
	DefaultNamespace     = "fibmesh-system"
	// RootCertKey is the ConfigMap's key holding the PEM trust bundle.
	RootCertKey = "root-cert.pem"
	// FieldManager names the controller's writes in managedFields.
	FieldManager = "fibmesh-controller"

	DefaultResync     = time.Minute
	DefaultMinBackoff = 500 * time.Millisecond
	DefaultMaxBackoff = time.Minute
)

// ErrWebhookConfigNotFound is the error of a webhook-configuration Event
// when the ValidatingWebhookConfiguration does not exist (not installed
// yet, or installed without the webhook): it is looked for again every
// Resync, without backoff.
var ErrWebhookConfigNotFound = errors.New("ValidatingWebhookConfiguration not found")

// Options configure a Publisher.
type Options struct {
	// Client writes to the API server. Required.
	Client kubernetes.Interface
	// Namespace and ConfigMap name the trust bundle's ConfigMap; an empty
	// ConfigMap: none is written.
	Namespace, ConfigMap string
	// WebhookConfig names the ValidatingWebhookConfiguration to patch;
	// empty: none.
	WebhookConfig string
	// PatchCABundle: set the webhooks' caBundle to the roots (false when
	// the webhook serves a certificate the CA did not issue).
	PatchCABundle bool
	// Resync is the time between two checks when nothing changes (a
	// fallback: changes of the objects are watched); default
	// DefaultResync.
	Resync time.Duration
	// MinBackoff and MaxBackoff bound the wait before a failed write, or
	// a failed list or watch, is tried again (doubling from Min up to
	// Max); defaults DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// OnEvent, if not nil, is called from Run's goroutines after every
	// write and every failure, one call at a time.
	OnEvent func(Event)
}

// Event is the outcome of one attempt on one object.
type Event struct {
	// Object is "ConfigMap NAMESPACE/NAME" or
	// "ValidatingWebhookConfiguration NAME".
	Object string
	// Action is "created" or "updated" (Err is nil), or "" on failure.
	// A failed list or watch is an Event with Action "" and an Err
	// starting "watch ".
	Action string
	// Change says what was written, e.g. "caBundle, failurePolicy=Fail".
	Change string
	// Err is why the attempt failed (ErrWebhookConfigNotFound among
	// them); the attempt is retried.
	Err error
	// Retry is when the next attempt is due after a failure.
	Retry time.Duration
}

// Stats count what a Publisher did since New (for metrics and tests).
type Stats struct {
	// Writes is the number of successful creates and updates.
	Writes uint64
	// WatchEvents is the number of watch events (and listed objects)
	// about the two objects; WatchRepairs those of them that differed
	// from what the Publisher wants and so called for a check.
	WatchEvents, WatchRepairs uint64
	// WatchErrors is the number of failed lists and watches (each retried
	// after a backoff).
	WatchErrors uint64
}

// Publisher writes the trust bundle and the webhook configuration.
type Publisher struct {
	opts Options
	kick chan struct{}

	eventMu sync.Mutex // one OnEvent call at a time

	writes, watchEvents, watchRepairs, watchErrors atomic.Uint64

	// onWatch, if not nil, is called after each watch event is handled
	// with the object, the event's resourceVersion and whether it called
	// for a check (tests).
	onWatch func(object, resourceVersion string, repair bool)

	mu         sync.Mutex
	roots      []byte // PEM; nil: not known yet
	failClosed bool
}

// New returns a Publisher; nothing is written until Run.
func New(opts Options) (*Publisher, error) {
	if opts.Client == nil {
		return nil, errors.New("kubepublish: Options.Client is required")
	}
	if opts.ConfigMap != "" && opts.Namespace == "" {
		return nil, fmt.Errorf("kubepublish: ConfigMap %q needs a Namespace", opts.ConfigMap)
	}
	if opts.Resync <= 0 {
		opts.Resync = DefaultResync
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	return &Publisher{opts: opts, kick: make(chan struct{}, 1)}, nil
}

func (p *Publisher) poke() {
	select {
	case p.kick <- struct{}{}:
	default: // a sync is already due
	}
}

// SetRoots sets the trust bundle (PEM certificates) to publish. It does
// not block: call it from ca.CA.OnBundleChange.
func (p *Publisher) SetRoots(pem []byte) {
	p.mu.Lock()
	changed := !bytes.Equal(p.roots, pem)
	p.roots = bytes.Clone(pem)
	p.mu.Unlock()
	if changed {
		p.poke()
	}
}

// SetFailClosed makes the webhooks' failurePolicy Fail from now on: call
// it once the webhook serves. It does not block.
func (p *Publisher) SetFailClosed() {
	p.mu.Lock()
	changed := !p.failClosed
	p.failClosed = true
	p.mu.Unlock()
	if changed {
		p.poke()
	}
}

// Stats returns the counts so far.
func (p *Publisher) Stats() Stats {
	return Stats{Writes: p.writes.Load(), WatchEvents: p.watchEvents.Load(),
		WatchRepairs: p.watchRepairs.Load(), WatchErrors: p.watchErrors.Load()}
}

// report calls OnEvent, one call at a time.
func (p *Publisher) report(ev Event) {
	if p.opts.OnEvent == nil {
		return
	}
	p.eventMu.Lock()
	defer p.eventMu.Unlock()
	p.opts.OnEvent(ev)
}

func (p *Publisher) state() (roots []byte, failClosed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.roots, p.failClosed
}

// Run writes what is due until ctx is done; it returns nil then, once
// the watches it started have ended.
func (p *Publisher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, w := range p.watches() {
		wg.Go(func() { p.watchLoop(ctx, w) })
	}

	var backoff time.Duration
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.kick:
		case <-timer.C:
		}
		timer.Stop()
		failed := p.sync(ctx, func() time.Duration {
			backoff = min(max(2*backoff, p.opts.MinBackoff), p.opts.MaxBackoff)
			return backoff
		})
		if ctx.Err() != nil {
			return nil
		}
		wait := p.opts.Resync
		if failed {
			wait = backoff
		} else {
			backoff = 0
		}
		timer.Reset(wait)
	}
}

// sync makes one attempt on each object; nextBackoff is called once if
// any attempt failed (other than a webhook configuration not found), and
// sync reports whether one did.
func (p *Publisher) sync(ctx context.Context, nextBackoff func() time.Duration) bool {
	roots, failClosed := p.state()
	var evs []Event
	if p.opts.ConfigMap != "" && roots != nil {
		evs = append(evs, p.syncConfigMap(ctx, roots))
	}
	if p.opts.WebhookConfig != "" && (roots != nil || !p.opts.PatchCABundle) {
		evs = append(evs, p.syncWebhook(ctx, roots, failClosed))
	}
	failed := false
	for _, ev := range evs {
		if ev.Err != nil && !errors.Is(ev.Err, ErrWebhookConfigNotFound) {
			failed = true
		}
	}
	var retry time.Duration
	if failed {
		retry = nextBackoff()
	}
	for _, ev := range evs {
		if ev.Err != nil {
			ev.Retry = retry
			if errors.Is(ev.Err, ErrWebhookConfigNotFound) {
				ev.Retry = p.opts.Resync
			}
		}
		if ev.Err == nil && ev.Action != "" {
			p.writes.Add(1)
		}
		if ev.Err != nil || ev.Action != "" {
			p.report(ev)
		}
	}
	return failed
}

// syncConfigMap creates the ConfigMap or updates its RootCertKey; other
// keys and its labels are left as they are.
func (p *Publisher) syncConfigMap(ctx context.Context, roots []byte) Event {
	ns, name := p.opts.Namespace, p.opts.ConfigMap
	ev := Event{Object: "ConfigMap " + ns + "/" + name, Change: RootCertKey}
	cms := p.opts.Client.CoreV1().ConfigMaps(ns)
	cm, err := cms.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cm = &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
				Labels: map[string]string{"app.kubernetes.io/managed-by": FieldManager, "app.kubernetes.io/part-of": "fibmesh"}},
			Data: map[string]string{RootCertKey: string(roots)},
		}
		if _, err := cms.Create(ctx, cm, metav1.CreateOptions{FieldManager: FieldManager}); err != nil {
			ev.Err = fmt.Errorf("create %s: %w", ev.Object, err)
			return ev
		}
		ev.Action = "created"
		return ev
	case err != nil:
		ev.Err = fmt.Errorf("get %s: %w", ev.Object, err)
		return ev
	}
	if cm.Data[RootCertKey] == string(roots) {
		return ev
	}
	cm = cm.DeepCopy()
	cm.Data = maps.Clone(cm.Data)
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[RootCertKey] = string(roots)
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
		ev.Err = fmt.Errorf("update %s: %w", ev.Object, err)
		return ev
	}
	ev.Action = "updated"
	return ev
}

// syncWebhook sets every webhook's caBundle to roots (with
// PatchCABundle) and, when failClosed, its failurePolicy to Fail, with
// one Update (optimistic: a concurrent change makes it fail with a
// conflict, and the next attempt starts from a fresh Get).
func (p *Publisher) syncWebhook(ctx context.Context, roots []byte, failClosed bool) Event {
	name := p.opts.WebhookConfig
	ev := Event{Object: "ValidatingWebhookConfiguration " + name}
	api := p.opts.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	cur, err := api.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		ev.Err = fmt.Errorf("%w: %s (install deploy/ to have the webhook called)", ErrWebhookConfigNotFound, name)
		return ev
	}
	if err != nil {
		ev.Err = fmt.Errorf("get %s: %w", ev.Object, err)
		return ev
	}
	next, change := desired(cur, roots, p.opts.PatchCABundle, failClosed)
	if change == "" {
		return ev
	}
	if _, err := api.Update(ctx, next, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
		ev.Err = fmt.Errorf("update %s (%s): %w", ev.Object, change, err)
		return ev
	}
	ev.Action, ev.Change = "updated", change
	return ev
}

// desired returns cur with the caBundle and failurePolicy wanted, and
// what changed ("" for nothing).
func desired(cur *admissionregistrationv1.ValidatingWebhookConfiguration, roots []byte, patchCA, failClosed bool) (*admissionregistrationv1.ValidatingWebhookConfiguration, string) {
	next := cur.DeepCopy()
	caChanged, policyChanged := false, false
	for i := range next.Webhooks {
		w := &next.Webhooks[i]
		if patchCA && !bytes.Equal(w.ClientConfig.CABundle, roots) {
			w.ClientConfig.CABundle = bytes.Clone(roots)
			caChanged = true
		}
		if failClosed && (w.FailurePolicy == nil || *w.FailurePolicy != admissionregistrationv1.Fail) {
			fail := admissionregistrationv1.Fail
			w.FailurePolicy = &fail
			policyChanged = true
		}
	}
	switch {
	case caChanged && policyChanged:
		return next, "caBundle, failurePolicy=Fail"
	case caChanged:
		return next, "caBundle"
	case policyChanged:
		return next, "failurePolicy=Fail"
	}
	return next, ""
}
