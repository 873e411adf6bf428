package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/fibmesh/fibmesh/internal/yamldoc"
)

// ErrUnusable is wrapped by LoadDir's error when its input cannot be used
// at all: the path is missing or unreadable, or no file in it is YAML.
var ErrUnusable = errors.New("unusable input")

// kindInfo describes a consumed kind.
type kindInfo struct {
	versions   []string
	namespaced bool
	// newObj returns an empty typed object; spec, when not nil, returns
	// the object's proto spec (Istio kinds), decoded with protojson.
	newObj func() runtime.Object
	spec   func(runtime.Object) proto.Message
}

var kinds = map[schema.GroupKind]kindInfo{
	{Group: "", Kind: "Service"}:                       {versions: []string{"v1"}, namespaced: true, newObj: func() runtime.Object { return &corev1.Service{} }},
	{Group: "", Kind: "Pod"}:                           {versions: []string{"v1"}, namespaced: true, newObj: func() runtime.Object { return &corev1.Pod{} }},
	{Group: "", Kind: "Namespace"}:                     {versions: []string{"v1"}, newObj: func() runtime.Object { return &corev1.Namespace{} }},
	{Group: "", Kind: "Node"}:                          {versions: []string{"v1"}, newObj: func() runtime.Object { return &corev1.Node{} }},
	{Group: "", Kind: "ServiceAccount"}:                {versions: []string{"v1"}, namespaced: true, newObj: func() runtime.Object { return &corev1.ServiceAccount{} }},
	{Group: "discovery.k8s.io", Kind: "EndpointSlice"}: {versions: []string{"v1"}, namespaced: true, newObj: func() runtime.Object { return &discoveryv1.EndpointSlice{} }},
	{Group: "networking.istio.io", Kind: "VirtualService"}: {versions: netVersions, namespaced: true,
		newObj: func() runtime.Object { return &networkingv1.VirtualService{} },
		spec:   func(o runtime.Object) proto.Message { return &o.(*networkingv1.VirtualService).Spec }},
	{Group: "networking.istio.io", Kind: "DestinationRule"}: {versions: netVersions, namespaced: true,
		newObj: func() runtime.Object { return &networkingv1.DestinationRule{} },
		spec:   func(o runtime.Object) proto.Message { return &o.(*networkingv1.DestinationRule).Spec }},
	{Group: "networking.istio.io", Kind: "ServiceEntry"}: {versions: netVersions, namespaced: true,
		newObj: func() runtime.Object { return &networkingv1.ServiceEntry{} },
		spec:   func(o runtime.Object) proto.Message { return &o.(*networkingv1.ServiceEntry).Spec }},
	{Group: "security.istio.io", Kind: "PeerAuthentication"}: {versions: secVersions, namespaced: true,
		newObj: func() runtime.Object { return &securityv1.PeerAuthentication{} },
		spec:   func(o runtime.Object) proto.Message { return &o.(*securityv1.PeerAuthentication).Spec }},
	{Group: "security.istio.io", Kind: "AuthorizationPolicy"}: {versions: secVersions, namespaced: true,
		newObj: func() runtime.Object { return &securityv1.AuthorizationPolicy{} },
		spec:   func(o runtime.Object) proto.Message { return &o.(*securityv1.AuthorizationPolicy).Spec }},
}

var (
	netVersions = []string{"v1", "v1beta1", "v1alpha3"}
	secVersions = []string{"v1", "v1beta1"}
)

// DecodeFile decodes every document of a multi-document YAML (or JSON)
// file; file is used only to name the source in resources and errors.
//
// It returns the consumed resources, the well-formed objects of other
// kinds (skipped), and every *DecodeError joined with errors.Join: a bad
// document does not hide the good ones, nor the other bad ones. Empty and
// comment-only documents are ignored; a `kind: List` document yields its
// items. Namespaced objects without metadata.namespace get "default", as
// kubectl apply would give them. Istio kinds are decoded into the v1
// client-go types whatever served version was written; Resource.GVK keeps
// the version as written.
//
// Decoding is strict: unknown fields (also Istio's snake_case proto
// names, which the API server rejects), wrong types, duplicate keys, a
// missing metadata.name and a version that is not served for a known kind
// are errors.
func DecodeFile(file string, data []byte) (res, skipped []Resource, err error) {
	var errs []error
	docs, rerr := yamldoc.Split(data)
	for _, d := range docs {
		rs, sk, derr := decodeDoc(Source{File: file, Doc: d.N}, d.Raw)
		res = append(res, rs...)
		skipped = append(skipped, sk...)
		if derr != nil {
			errs = append(errs, derr)
		}
	}
	if re, ok := errors.AsType[*yamldoc.ReadError](rerr); ok {
		errs = append(errs, &DecodeError{Source: Source{File: file, Doc: re.N}, Err: fmt.Errorf("not valid YAML: %w", re.Err)})
	}
	return res, skipped, errors.Join(errs...)
}

func decodeDoc(src Source, raw []byte) (res, skipped []Resource, err error) {
	js, yerr := yamldoc.ToJSON(raw)
	if yerr != nil {
		// YAML that is only strict-invalid (a duplicate key) still tells
		// which object it is.
		if loose, lerr := yaml.YAMLToJSON(raw); lerr == nil {
			if h, herr := readHeader(loose); herr == nil && (h.kind != "" || h.name != "") {
				return nil, nil, &DecodeError{Source: src, Kind: h.kind, Namespace: h.namespace, Name: h.name, Err: yerr}
			}
		}
		return nil, nil, &DecodeError{Source: src, Err: fmt.Errorf("not valid YAML: %w", yerr)}
	}
	if string(js) == "null" {
		return nil, nil, nil // a document with only a null: as empty
	}
	return decodeJSON(src, js)
}

// header is what every object has, read leniently so that an error
// elsewhere can still name the object.
type header struct {
	apiVersion, kind, name, namespace string
	fields                            map[string]json.RawMessage
	bad                               *fieldErr // the first of apiVersion, kind, metadata.name/namespace that is not a string
}

func readHeader(js []byte) (header, error) {
	var h header
	if err := json.Unmarshal(js, &h.fields); err != nil || h.fields == nil {
		return h, errors.New("not a Kubernetes object: want a mapping with apiVersion, kind and metadata")
	}
	str := func(raw json.RawMessage, field string, dst *string) {
		if raw == nil {
			return
		}
		if err := json.Unmarshal(raw, dst); err != nil && h.bad == nil {
			h.bad = &fieldErr{field: field, err: mustBeString(raw)}
		}
	}
	str(h.fields["apiVersion"], "apiVersion", &h.apiVersion)
	str(h.fields["kind"], "kind", &h.kind)
	if m := h.fields["metadata"]; m != nil {
		var meta map[string]json.RawMessage
		if json.Unmarshal(m, &meta) != nil {
			if h.bad == nil {
				h.bad = &fieldErr{field: "metadata", err: errors.New("must be a mapping")}
			}
		} else {
			str(meta["name"], "metadata.name", &h.name)
			str(meta["namespace"], "metadata.namespace", &h.namespace)
		}
	}
	return h, nil
}

// mustBeString explains a non-string where a string goes; YAML reads
// unquoted y, no, on, 1.10 and the like as booleans and numbers.
func mustBeString(raw json.RawMessage) error {
	switch v := strings.TrimSpace(string(raw)); {
	case v == "true" || v == "false" || (v != "" && (v[0] == '-' || v[0] >= '0' && v[0] <= '9')):
		return fmt.Errorf("must be a string, got %s: quote it (YAML reads unquoted y, no, on, off and numbers as booleans and numbers)", v)
	}
	return errors.New("must be a string")
}

func decodeJSON(src Source, js []byte) (res, skipped []Resource, err error) {
	h, herr := readHeader(js)
	if herr != nil {
		return nil, nil, &DecodeError{Source: src, Err: herr}
	}
	de := func(field string, e error) *DecodeError {
		return &DecodeError{Source: src, Kind: h.kind, Namespace: h.namespace, Name: h.name, Field: field, Err: e}
	}
	if h.bad != nil {
		return nil, nil, de(h.bad.field, h.bad.err)
	}
	if h.apiVersion == "" {
		return nil, nil, de("apiVersion", errors.New("is required"))
	}
	if h.kind == "" {
		return nil, nil, de("kind", errors.New("is required"))
	}
	gv, perr := schema.ParseGroupVersion(h.apiVersion)
	if perr != nil {
		return nil, nil, de("apiVersion", perr)
	}
	if h.kind == "List" && gv.Group == "" {
		return decodeList(src, h, de)
	}
	gvk := gv.WithKind(h.kind)
	info, ok := kinds[gvk.GroupKind()]
	if !ok {
		if h.name == "" {
			return nil, nil, de("metadata.name", errors.New("is required"))
		}
		return nil, []Resource{{GVK: gvk, Namespace: h.namespace, Name: h.name, Source: src}}, nil
	}
	if !slices.Contains(info.versions, gv.Version) {
		return nil, nil, de("apiVersion", fmt.Errorf("%s is not a served version of %s: use %s", h.apiVersion, h.kind, versionsOf(gv.Group, info.versions)))
	}
	obj := info.newObj()
	if info.spec == nil {
		if ferr := strictJSON(js, obj); ferr != nil {
			return nil, nil, de(ferr.field, ferr.err)
		}
	} else {
		// The spec is a proto whose own UnmarshalJSON (istio.io/api's
		// jsonshim) allows unknown fields: decode it apart, strictly.
		rest := maps.Clone(h.fields)
		spec := rest["spec"]
		delete(rest, "spec")
		delete(rest, "status") // status is the cluster's to write
		restJS, _ := json.Marshal(rest)
		if ferr := strictJSON(restJS, obj); ferr != nil {
			return nil, nil, de(ferr.field, ferr.err)
		}
		if spec != nil {
			if ferr := decodeSpec(spec, info.spec(obj)); ferr != nil {
				return nil, nil, de(ferr.field, ferr.err)
			}
		}
	}
	meta := obj.(interface {
		GetName() string
		GetNamespace() string
		SetNamespace(string)
	})
	if meta.GetName() == "" {
		return nil, nil, de("metadata.name", errors.New("is required"))
	}
	if info.namespaced && meta.GetNamespace() == "" {
		meta.SetNamespace("default")
	}
	if !info.namespaced && meta.GetNamespace() != "" {
		return nil, nil, de("metadata.namespace", fmt.Errorf("%s is cluster-scoped: remove the namespace", h.kind))
	}
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	return []Resource{{GVK: gvk, Namespace: meta.GetNamespace(), Name: meta.GetName(), Source: src, Object: obj}}, nil, nil
}

// decodeList decodes the items of a v1 List; an item's error field path
// starts with items[i].
func decodeList(src Source, h header, de func(string, error) *DecodeError) (res, skipped []Resource, err error) {
	for k := range h.fields {
		switch k {
		case "apiVersion", "kind", "metadata", "items":
		default:
			return nil, nil, de(k, errors.New("unknown field"))
		}
	}
	var items []json.RawMessage
	if raw := h.fields["items"]; raw != nil {
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, nil, de("items", errors.New("must be a sequence"))
		}
	}
	var errs []error
	for i, item := range items {
		rs, sk, e := decodeJSON(src, item)
		res, skipped = append(res, rs...), append(skipped, sk...)
		if e == nil {
			continue
		}
		var des []*DecodeError
		collect(e, &des)
		for _, d := range des {
			if d.Field == "" {
				d.Field = fmt.Sprintf("items[%d]", i)
			} else if !strings.HasPrefix(d.Field, "items[") {
				d.Field = fmt.Sprintf("items[%d].%s", i, d.Field)
			}
		}
		errs = append(errs, e)
	}
	return res, skipped, errors.Join(errs...)
}

func versionsOf(group string, vs []string) string {
	out := make([]string, len(vs))
	for i, v := range vs {
		if group == "" {
			out[i] = v
		} else {
			out[i] = group + "/" + v
		}
	}
	return strings.Join(out, ", ")
}

type fieldErr struct {
	field string
	err   error
}

// strictJSON decodes Kubernetes objects as the API server does:
// case-sensitively, rejecting unknown and duplicate fields
// (yamldoc.UnmarshalJSONStrict; sigs.k8s.io/yaml's UnmarshalStrict
// would match field names case-insensitively).
func strictJSON(js []byte, obj any) *fieldErr {
	err := yamldoc.UnmarshalJSONStrict(js, obj)
	if err == nil {
		return nil
	}
	if fe, ok := errors.AsType[*yamldoc.FieldError](err); ok {
		return &fieldErr{field: fe.Field, err: fe.Err}
	}
	return &fieldErr{err: err}
}

// decodeSpec decodes an Istio spec with protojson, strictly, and on error
// finds the path of the offending field.
func decodeSpec(spec json.RawMessage, msg proto.Message) *fieldErr {
	md := msg.ProtoReflect().Descriptor()
	if ferr := checkFields(spec, md, "spec"); ferr != nil {
		return ferr
	}
	if err := protojson.Unmarshal(spec, msg); err != nil {
		if ferr := locate(spec, md, "spec"); ferr != nil {
			return ferr
		}
		return &fieldErr{field: "spec", err: cleanProtoErr(err)}
	}
	return nil
}

func isWKT(md protoreflect.MessageDescriptor) bool {
	return strings.HasPrefix(string(md.FullName()), "google.protobuf.")
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// checkFields walks a JSON value against a proto message descriptor and
// reports the first field (in path order) the message does not have.
// protojson reports unknown fields without saying where they are, and
// accepts the proto (snake_case) names that the CRDs' schemas reject.
func checkFields(js json.RawMessage, md protoreflect.MessageDescriptor, path string) *fieldErr {
	if isWKT(md) {
		return nil // well-known types have their own JSON forms
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(js, &obj); err != nil {
		return nil // not an object: protojson reports the type error
	}
	for _, k := range sortedKeys(obj) {
		p := path + "." + k
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			if alt := md.Fields().ByTextName(k); alt != nil {
				return &fieldErr{field: p, err: fmt.Errorf("unknown field %q in %s: use %q", k, md.Name(), alt.JSONName())}
			}
			return &fieldErr{field: p, err: fmt.Errorf("unknown field %q in %s", k, md.Name())}
		}
		v := obj[k]
		switch {
		case fd.IsMap():
			if fd.MapValue().Kind() != protoreflect.MessageKind {
				continue
			}
			var m map[string]json.RawMessage
			if json.Unmarshal(v, &m) != nil {
				continue
			}
			for _, x := range sortedKeys(m) {
				if e := checkFields(m[x], fd.MapValue().Message(), fmt.Sprintf("%s[%s]", p, x)); e != nil {
					return e
				}
			}
		case fd.Kind() != protoreflect.MessageKind:
		case fd.IsList():
			var l []json.RawMessage
			if json.Unmarshal(v, &l) != nil {
				continue
			}
			for i, x := range l {
				if e := checkFields(x, fd.Message(), fmt.Sprintf("%s[%d]", p, i)); e != nil {
					return e
				}
			}
		default:
			if e := checkFields(v, fd.Message(), p); e != nil {
				return e
			}
		}
	}
	return nil
}

// locate finds the deepest field of js (a JSON object for md) that
// protojson rejects, by decoding one field, one element, one map entry at
// a time. It returns nil when every field decodes alone (the error is
// then between fields, such as two members of a oneof).
func locate(js json.RawMessage, md protoreflect.MessageDescriptor, path string) *fieldErr {
	var obj map[string]json.RawMessage
	if json.Unmarshal(js, &obj) != nil {
		return nil
	}
	try := func(k string, v any) error {
		one, _ := json.Marshal(map[string]any{k: v})
		return protojson.Unmarshal(one, dynamicpb.NewMessage(md))
	}
	for _, k := range sortedKeys(obj) {
		v := obj[k]
		err := try(k, v)
		if err == nil {
			continue
		}
		p := path + "." + k
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			return &fieldErr{field: p, err: cleanProtoErr(err)}
		}
		var sub protoreflect.MessageDescriptor
		switch {
		case fd.IsMap():
			sub = fd.MapValue().Message()
		case fd.Kind() == protoreflect.MessageKind:
			sub = fd.Message()
		}
		if sub != nil && isWKT(sub) {
			if sub.FullName() == "google.protobuf.Duration" && !fd.IsList() && !fd.IsMap() {
				return &fieldErr{field: p, err: fmt.Errorf("invalid duration %s: want a string such as \"10s\" or \"1.5s\"", v)}
			}
			sub = nil
		}
		var l []json.RawMessage
		var m map[string]json.RawMessage
		switch {
		case fd.IsList() && json.Unmarshal(v, &l) == nil:
			for i, x := range l {
				if e := try(k, []json.RawMessage{x}); e != nil {
					pi := fmt.Sprintf("%s[%d]", p, i)
					if sub != nil {
						if d := locate(x, sub, pi); d != nil {
							return d
						}
					}
					return &fieldErr{field: pi, err: cleanProtoErr(e)}
				}
			}
		case fd.IsMap() && json.Unmarshal(v, &m) == nil:
			for _, x := range sortedKeys(m) {
				if e := try(k, map[string]json.RawMessage{x: m[x]}); e != nil {
					px := fmt.Sprintf("%s[%s]", p, x)
					if sub != nil {
						if d := locate(m[x], sub, px); d != nil {
							return d
						}
					}
					return &fieldErr{field: px, err: cleanProtoErr(e)}
				}
			}
		case sub != nil && !fd.IsList() && !fd.IsMap():
			if d := locate(v, sub, p); d != nil {
				return d
			}
		}
		return &fieldErr{field: p, err: cleanProtoErr(err)}
	}
	return nil
}

// protoErrPrefix matches protojson's "proto: (line 1:23): ": positions in
// JSON converted from the user's YAML mean nothing to them, and the space
// after "proto:" is randomly a non-breaking one (protobuf-go makes its
// error text unstable on purpose).
var protoErrPrefix = regexp.MustCompile(`^proto:[\s\x{00a0}]*(syntax error )?(\(line \d+:\d+\):[\s\x{00a0}]*)?`)

func cleanProtoErr(err error) error {
	return errors.New(protoErrPrefix.ReplaceAllString(err.Error(), ""))
}
