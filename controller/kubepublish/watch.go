package kubepublish

import (
	"context"
	"errors"
	"fmt"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
)

// watched is one object the Publisher watches.
type watched struct {
	object string // as in Event.Object
	name   string
	// list returns the objects named name (none or one) and the list's
	// resourceVersion.
	list  func(ctx context.Context, opts metav1.ListOptions) ([]runtime.Object, string, error)
	watch func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	// differs reports whether obj (nil: the object does not exist) is not
	// what the Publisher wants, so that a check is due.
	differs func(obj runtime.Object) bool
}

// listOf adapts a typed client's List to watched.list: the list's items
// and its resourceVersion.
func listOf[L runtime.Object](list func(context.Context, metav1.ListOptions) (L, error)) func(context.Context, metav1.ListOptions) ([]runtime.Object, string, error) {
	return func(ctx context.Context, opts metav1.ListOptions) ([]runtime.Object, string, error) {
		l, err := list(ctx, opts)
		if err != nil {
			return nil, "", err
		}
		items, err := meta.ExtractList(l)
		if err != nil {
			return nil, "", err
		}
		acc, err := meta.ListAccessor(l)
		if err != nil {
			return nil, "", err
		}
		return items, acc.GetResourceVersion(), nil
	}
}

// watches returns the objects Options name.
func (p *Publisher) watches() []watched {
	var ws []watched
	if p.opts.ConfigMap != "" {
		ns, name := p.opts.Namespace, p.opts.ConfigMap
		cms := p.opts.Client.CoreV1().ConfigMaps(ns)
		ws = append(ws, watched{
			object: "ConfigMap " + ns + "/" + name, name: name,
			list:    listOf(cms.List),
			watch:   cms.Watch,
			differs: p.configMapDiffers,
		})
	}
	if p.opts.WebhookConfig != "" {
		api := p.opts.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations()
		ws = append(ws, watched{
			object: "ValidatingWebhookConfiguration " + p.opts.WebhookConfig, name: p.opts.WebhookConfig,
			list:    listOf(api.List),
			watch:   api.Watch,
			differs: p.webhookDiffers,
		})
	}
	return ws
}

// configMapDiffers: the ConfigMap is missing or holds other roots, once
// the roots are known.
func (p *Publisher) configMapDiffers(obj runtime.Object) bool {
	roots, _ := p.state()
	if roots == nil {
		return false
	}
	cm, ok := obj.(*corev1.ConfigMap)
	return !ok || cm.Data[RootCertKey] != string(roots)
}

// webhookDiffers: the webhook configuration's caBundle or failurePolicy
// is not the one syncWebhook would write. A deleted one calls for nothing
// (the Publisher does not create it; the resync reports it missing).
func (p *Publisher) webhookDiffers(obj runtime.Object) bool {
	roots, failClosed := p.state()
	if roots == nil && p.opts.PatchCABundle {
		return false
	}
	v, ok := obj.(*admissionregistrationv1.ValidatingWebhookConfiguration)
	if !ok {
		return false
	}
	_, change := desired(v, roots, p.opts.PatchCABundle, failClosed)
	return change != ""
}

// errWatchClosed is a watch the API server closed before it had run
// MinBackoff: treated as a failure, so that it is not opened again in a
// busy loop.
var errWatchClosed = errors.New("watch closed at once")

// watchLoop lists and watches w's object until ctx is done, calling for
// a check (poke) whenever it is listed or changed and differs from what
// the Publisher wants. A failed list or watch is reported and retried
// after a backoff (MinBackoff doubling to MaxBackoff); a watch the API
// server ends normally (its request timeout) is opened again from the
// last resourceVersion seen, an expired resourceVersion lists again.
func (p *Publisher) watchLoop(ctx context.Context, w watched) {
	sel := fields.OneTermEqualSelector("metadata.name", w.name).String()
	var backoff time.Duration
	// fail reports err and waits the backoff; false when ctx is done.
	fail := func(err error) bool {
		if ctx.Err() != nil {
			return false
		}
		p.watchErrors.Add(1)
		backoff = min(max(2*backoff, p.opts.MinBackoff), p.opts.MaxBackoff)
		p.report(Event{Object: w.object, Retry: backoff,
			Err: fmt.Errorf("watch %s (checked every %s meanwhile): %w", w.object, p.opts.Resync, err)})
		t := time.NewTimer(backoff)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	for ctx.Err() == nil {
		objs, rv, err := w.list(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			if !fail(fmt.Errorf("list: %w", err)) {
				return
			}
			continue
		}
		// What changed while nothing was watched.
		if len(objs) > 0 {
			m, _ := meta.Accessor(objs[0])
			p.handle(w, objs[0], m.GetResourceVersion())
		} else {
			p.handle(w, nil, rv)
		}
		for ctx.Err() == nil {
			start := time.Now()
			wi, err := w.watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: rv, AllowWatchBookmarks: true})
			if err == nil {
				rv, err = p.consume(ctx, w, wi, rv)
				wi.Stop()
				if err == nil && time.Since(start) < p.opts.MinBackoff {
					err = errWatchClosed
				}
			}
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				backoff = 0
				continue // ended by the API server: watch on from rv
			}
			if !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
				fail(err)
			}
			break // list again
		}
	}
}

// consume handles wi's events until it ends (nil: closed by the API
// server, or ctx is done) or sends an error; it returns the last
// resourceVersion seen.
func (p *Publisher) consume(ctx context.Context, w watched, wi watch.Interface, rv string) (string, error) {
	for {
		select {
		case <-ctx.Done():
			return rv, nil
		case ev, ok := <-wi.ResultChan():
			if !ok {
				return rv, nil
			}
			if ev.Type == watch.Error {
				return rv, apierrors.FromObject(ev.Object)
			}
			if m, err := meta.Accessor(ev.Object); err == nil && m.GetResourceVersion() != "" {
				rv = m.GetResourceVersion()
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				p.handle(w, ev.Object, rv)
			case watch.Deleted:
				p.handle(w, nil, rv)
			}
		}
	}
}

// handle calls for a check when obj differs from what is wanted.
func (p *Publisher) handle(w watched, obj runtime.Object, rv string) {
	p.watchEvents.Add(1)
	repair := w.differs(obj)
	if repair {
		p.watchRepairs.Add(1)
		p.poke()
	}
	if p.onWatch != nil {
		p.onWatch(w.object, rv, repair)
	}
}
