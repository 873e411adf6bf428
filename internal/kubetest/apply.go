package kubetest

import (
	"context"
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/fibmesh/fibmesh/internal/yamldoc"
)

// FieldManager is the server-side apply field manager of Apply.
const FieldManager = "kubetest"

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// Applier applies manifests with client-go, for tests where kubectl is
// not installed and for objects a test builds itself.
type Applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
	// DryRun makes every apply a server-side dry run (kubectl apply
	// --dry-run=server): validated and admitted, not stored.
	DryRun bool
}

// Applier returns an Applier acting as the admin.
func (c *Cluster) Applier() (*Applier, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	return &Applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}, nil
}

// Apply applies each object of the multi-document YAML data in order,
// with server-side apply (kubectl apply --server-side), and returns them
// as stored. CustomResourceDefinitions are waited for until they are
// Established before the next document of another kind (consecutive
// CRDs are established together) and before Apply returns, so data may
// hold CRDs and objects of their kinds. A namespaced object without a
// namespace goes to "default", as with kubectl. The error names the
// document.
func (a *Applier) Apply(ctx context.Context, data []byte) ([]*unstructured.Unstructured, error) {
	docs, err := yamldoc.Split(data)
	if err != nil {
		return nil, err
	}
	var out []*unstructured.Unstructured
	var crds []string // applied, not yet waited for
	wait := func() error {
		for _, name := range crds {
			if err := a.WaitEstablished(ctx, name); err != nil {
				return err
			}
		}
		crds = nil
		return nil
	}
	for _, d := range docs {
		if yamldoc.Blank(d.Raw) {
			continue
		}
		js, err := yamldoc.ToJSON(d.Raw)
		if err != nil {
			return out, fmt.Errorf("document %d: %w", d.N, err)
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(js); err != nil {
			return out, fmt.Errorf("document %d: %w", d.N, err)
		}
		isCRD := obj.GroupVersionKind().GroupKind() == crdGK
		if !isCRD {
			if err := wait(); err != nil {
				return out, err
			}
		}
		got, err := a.apply(ctx, obj)
		if err != nil {
			return out, fmt.Errorf("document %d: %w", d.N, err)
		}
		if isCRD && !a.DryRun {
			crds = append(crds, obj.GetName())
		}
		out = append(out, got)
	}
	return out, wait()
}

var crdGK = schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}

// ApplyObject applies one object (see Apply), and waits until it is
// Established if it is a CustomResourceDefinition.
func (a *Applier) ApplyObject(ctx context.Context, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	got, err := a.apply(ctx, obj)
	if err == nil && obj.GroupVersionKind().GroupKind() == crdGK && !a.DryRun {
		err = a.WaitEstablished(ctx, obj.GetName())
	}
	return got, err
}

func (a *Applier) apply(ctx context.Context, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	gvk := obj.GroupVersionKind()
	what := fmt.Sprintf("%s %s/%s", gvk.Kind, obj.GetNamespace(), obj.GetName())
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		a.mapper.Reset() // a CRD applied since discovery was read
		m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if obj.GetNamespace() == "" {
			obj.SetNamespace("default")
		}
		ri = a.dyn.Resource(m.Resource).Namespace(obj.GetNamespace())
	}
	body, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	opts := metav1.PatchOptions{FieldManager: FieldManager, Force: new(true)}
	if a.DryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	got, err := ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, body, opts)
	if err != nil {
		return nil, fmt.Errorf("apply %s: %w", what, err)
	}
	return got, nil
}

// WaitEstablished watches the CustomResourceDefinition name until its
// Established condition is True: from then on its kind is served.
func (a *Applier) WaitEstablished(ctx context.Context, name string) error {
	ri := a.dyn.Resource(crdGVR)
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	for {
		list, err := ri.List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return fmt.Errorf("CustomResourceDefinition %s: %w", name, err)
		}
		if len(list.Items) == 1 && established(&list.Items[0]) {
			return nil
		}
		w, err := ri.Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: list.GetResourceVersion()})
		if err != nil {
			return fmt.Errorf("CustomResourceDefinition %s: %w", name, err)
		}
		done, err := watchEstablished(ctx, w)
		w.Stop()
		if done || err != nil {
			if err != nil {
				err = fmt.Errorf("CustomResourceDefinition %s not Established: %w", name, err)
			}
			return err
		}
		// The watch ended (server timeout): list and watch again.
	}
}

// watchEstablished reads w until an object is Established (true), w ends
// (false) or ctx does (its error).
func watchEstablished(ctx context.Context, w watch.Interface) (bool, error) {
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return false, nil
			}
			if u, isU := ev.Object.(*unstructured.Unstructured); isU && ev.Type != watch.Deleted && established(u) {
				return true, nil
			}
		}
	}
}

func established(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if cm, ok := c.(map[string]any); ok && cm["type"] == "Established" && cm["status"] == "True" {
			return true
		}
	}
	return false
}
