// Package kube is the config store that reads the Kubernetes API: shared
// informers (client-go) for Services, EndpointSlices, Pods, Namespaces,
// Nodes and ServiceAccounts, and (istio client-go) for networking.istio.io
// v1 VirtualServices, DestinationRules, ServiceEntries and
// security.istio.io v1 PeerAuthentications, AuthorizationPolicies.
//
// The first snapshot is published once every informer's cache is synced;
// after that, every add, update or delete is followed by a new snapshot
// built from the caches, once they have been quiet for a debounce
// interval. The informers only list and watch: deploy/rbac.yaml grants
// exactly that, and a test holds the two together.
package kube

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	istio "istio.io/client-go/pkg/clientset/versioned"
	istioinformers "istio.io/client-go/pkg/informers/externalversions"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/controller/store"
)

// Defaults for Options.
const (
	// DefaultDebounce coalesces the burst of events one change causes (a
	// rollout touches Pods, EndpointSlices and ReplicaSets within
	// milliseconds) into one snapshot.
	DefaultDebounce = 100 * time.Millisecond
)

// Options tune a Store. The zero value gives the defaults.
type Options struct {
	// Debounce is how long the caches must be quiet after an event before
	// a snapshot is built. Default DefaultDebounce.
	Debounce time.Duration
	// MaxDelay bounds how long a snapshot can be put off by a cluster
	// that is never quiet. Default 10 × Debounce.
	MaxDelay time.Duration
}

// Store reads the Kubernetes API. It implements store.Store.
type Store struct {
	kube  kubernetes.Interface
	istio istio.Interface
	opts  Options
	pub   *store.Publisher
	good  *config.Snapshot // last good snapshot; only Run's goroutine uses it
}

var _ store.Store = (*Store)(nil)

// New returns a Store that reads through the given clients (fake
// clientsets in tests). Nothing is read until Run.
func New(kube kubernetes.Interface, istio istio.Interface, opts Options) *Store {
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = 10 * opts.Debounce
	}
	if opts.MaxDelay < opts.Debounce {
		opts.MaxDelay = opts.Debounce
	}
	return &Store{kube: kube, istio: istio, opts: opts, pub: store.NewPublisher()}
}

// Updates implements store.Store. Updates from this store carry no Err
// in practice: the API server has validated its objects. The objects in a
// snapshot are the informers' cached objects, shared and read-only; their
// TypeMeta may be empty, Resource.GVK says what they are.
func (s *Store) Updates() <-chan store.Update { return s.pub.Updates() }

// kind is one informer and what its objects are.
type kind struct {
	gvk      schema.GroupVersionKind
	informer cache.SharedIndexInformer
}

// kinds creates the informers, in the order their resources appear in a
// snapshot.
func kinds(kf informers.SharedInformerFactory, ifac istioinformers.SharedInformerFactory) []kind {
	core := kf.Core().V1()
	net := ifac.Networking().V1()
	sec := ifac.Security().V1()
	gvk := func(group, kind string) schema.GroupVersionKind {
		return schema.GroupVersionKind{Group: group, Version: "v1", Kind: kind}
	}
	return []kind{
		{gvk("", "Namespace"), core.Namespaces().Informer()},
		{gvk("", "Node"), core.Nodes().Informer()},
		{gvk("", "ServiceAccount"), core.ServiceAccounts().Informer()},
		{gvk("", "Service"), core.Services().Informer()},
		{gvk("discovery.k8s.io", "EndpointSlice"), kf.Discovery().V1().EndpointSlices().Informer()},
		{gvk("", "Pod"), core.Pods().Informer()},
		{gvk("networking.istio.io", "VirtualService"), net.VirtualServices().Informer()},
		{gvk("networking.istio.io", "DestinationRule"), net.DestinationRules().Informer()},
		{gvk("networking.istio.io", "ServiceEntry"), net.ServiceEntries().Informer()},
		{gvk("security.istio.io", "PeerAuthentication"), sec.PeerAuthentications().Informer()},
		{gvk("security.istio.io", "AuthorizationPolicy"), sec.AuthorizationPolicies().Informer()},
	}
}

// dropManagedFields keeps server-side-apply bookkeeping, often the larger
// part of an object, out of the caches; nothing downstream reads it.
func dropManagedFields(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// Run implements store.Store. It starts the informers, waits for their
// caches to sync, publishes the first snapshot, then a new one after
// every change, until ctx is done; then it stops the informers and waits
// for their goroutines to end. It returns an error only if the informers
// cannot be set up.
func (s *Store) Run(ctx context.Context) error {
	defer s.pub.Close()

	kf := informers.NewSharedInformerFactoryWithOptions(s.kube, 0, informers.WithTransform(dropManagedFields))
	ifac := istioinformers.NewSharedInformerFactoryWithOptions(s.istio, 0, istioinformers.WithTransform(dropManagedFields))
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel() // Shutdown waits for informers, which stop on ctx.
		kf.Shutdown()
		ifac.Shutdown()
	}()

	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default: // a snapshot is already due
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}
	ks := kinds(kf, ifac)
	for _, k := range ks {
		if _, err := k.informer.AddEventHandler(handler); err != nil {
			return fmt.Errorf("watch %s: %w", k.gvk.Kind, err)
		}
	}

	kf.Start(ctx.Done())
	ifac.Start(ctx.Done())
	synced := make([]cache.InformerSynced, len(ks))
	for i, k := range ks {
		synced[i] = k.informer.HasSynced
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil // ctx is done
	}
	s.publish(ks)

	// quiet fires Debounce after the last event, deadline MaxDelay after
	// the first one since the last snapshot; both are stopped while no
	// snapshot is due.
	quiet, deadline := time.NewTimer(time.Hour), time.NewTimer(time.Hour)
	quiet.Stop()
	deadline.Stop()
	defer quiet.Stop()
	defer deadline.Stop()
	pending := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
			quiet.Reset(s.opts.Debounce)
			if !pending {
				pending = true
				deadline.Reset(s.opts.MaxDelay)
			}
			continue
		case <-quiet.C:
		case <-deadline.C:
		}
		pending = false
		quiet.Stop()
		deadline.Stop()
		s.publish(ks)
	}
}

// publish builds a snapshot from the caches and publishes it.
func (s *Store) publish(ks []kind) {
	snap, err := snapshot(ks)
	if err != nil {
		// Only an object of a type the informer was not built for
		// gets here, which would be a bug in this package.
		s.pub.Publish(store.Update{Snapshot: s.good, Err: err})
		return
	}
	s.good = snap
	s.pub.Publish(store.Update{Snapshot: snap})
}

// snapshot lists every cache. Resources are sorted by kind (in the order
// of kinds), namespace and name, so that equal cluster states give equal
// snapshots.
func snapshot(ks []kind) (*config.Snapshot, error) {
	snap := &config.Snapshot{}
	var errs []error
	for _, k := range ks {
		start := len(snap.Resources)
		for _, item := range k.informer.GetStore().List() {
			obj, ok := item.(runtime.Object)
			m, err := meta.Accessor(item)
			if !ok || err != nil {
				errs = append(errs, fmt.Errorf("%s informer holds a %T", k.gvk.Kind, item))
				continue
			}
			snap.Resources = append(snap.Resources, config.Resource{
				GVK:       k.gvk,
				Namespace: m.GetNamespace(),
				Name:      m.GetName(),
				Object:    obj,
			})
		}
		slices.SortFunc(snap.Resources[start:], func(a, b config.Resource) int {
			return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
		})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return snap, nil
}
