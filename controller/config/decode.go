package config

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
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
// file. It returns the consumed resources, the well-formed objects of
// other kinds (skipped), and every *DecodeError joined with errors.Join:
// a bad document does not hide the good ones, nor the other bad ones.
// Namespaced objects without metadata.namespace get "default", as
// kubectl apply would give them.
func DecodeFile(file string, data []byte) (res, skipped []Resource, err error) {
	var errs []error
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for doc := 1; ; doc++ {
		raw, rerr := r.Read()
		if errors.Is(rerr, io.EOF) {
			break
		}
		src := Source{File: file, Doc: doc}
		if rerr != nil {
			errs = append(errs, &DecodeError{Source: src, Err: rerr})
			break
		}
		if blank(raw) {
			continue
		}
		rs, sk, derr := decodeDoc(src, raw)
		res = append(res, rs...)
		skipped = append(skipped, sk...)
		if derr != nil {
			errs = append(errs, derr)
		}
	}
	return res, skipped, errors.Join(errs...)
}

func blank(b []byte) bool {
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") && l != "---" {
			return false
		}
	}
	return true
}

type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Items []json.RawMessage `json:"items"`
}

func decodeDoc(src Source, raw []byte) (res, skipped []Resource, err error) {
	js, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return nil, nil, &DecodeError{Source: src, Err: fmt.Errorf("not valid YAML: %w", err)}
	}
	return decodeJSON(src, js)
}

func decodeJSON(src Source, js []byte) (res, skipped []Resource, err error) {
	var h header
	if err := json.Unmarshal(js, &h); err != nil {
		return nil, nil, &DecodeError{Source: src, Err: fmt.Errorf("not a Kubernetes object (want a mapping with apiVersion, kind, metadata): %w", err)}
	}
	de := func(field string, e error) *DecodeError {
		return &DecodeError{Source: src, Kind: h.Kind, Namespace: h.Metadata.Namespace, Name: h.Metadata.Name, Field: field, Err: e}
	}
	if h.APIVersion == "" || h.Kind == "" {
		return nil, nil, de("", errors.New("apiVersion and kind are required"))
	}
	gv, perr := schema.ParseGroupVersion(h.APIVersion)
	if perr != nil {
		return nil, nil, de("apiVersion", perr)
	}
	if h.Kind == "List" && gv.Group == "" {
		var errs []error
		for i, item := range h.Items {
			rs, sk, e := decodeJSON(src, item)
			res, skipped = append(res, rs...), append(skipped, sk...)
			if e != nil {
				var d *DecodeError
				if errors.As(e, &d) && d.Field != "" {
					d.Field = fmt.Sprintf("items[%d].%s", i, d.Field)
				}
				errs = append(errs, e)
			}
		}
		return res, skipped, errors.Join(errs...)
	}
	gvk := gv.WithKind(h.Kind)
	info, ok := kinds[gvk.GroupKind()]
	if !ok {
		if h.Metadata.Name == "" {
			return nil, nil, de("metadata.name", errors.New("is required"))
		}
		return nil, []Resource{{GVK: gvk, Namespace: h.Metadata.Namespace, Name: h.Metadata.Name, Source: src}}, nil
	}
	if !contains(info.versions, gv.Version) {
		return nil, nil, de("apiVersion", fmt.Errorf("%s is not a served version of %s: use %s", h.APIVersion, h.Kind, versionsOf(gv.Group, info.versions)))
	}
	obj := info.newObj()
	if info.spec == nil {
		if ferr := strictJSON(js, obj); ferr != nil {
			return nil, nil, de(ferr.field, ferr.err)
		}
	} else {
		var parts map[string]json.RawMessage
		if err := json.Unmarshal(js, &parts); err != nil {
			return nil, nil, de("", err)
		}
		spec := parts["spec"]
		delete(parts, "spec")
		for k := range parts {
			switch k {
			case "apiVersion", "kind", "metadata", "status":
			default:
				return nil, nil, de(k, errors.New("unknown field"))
			}
		}
		delete(parts, "status") // status is the cluster's to write
		rest, _ := json.Marshal(parts)
		if ferr := strictJSON(rest, obj); ferr != nil {
			return nil, nil, de(ferr.field, ferr.err)
		}
		if len(spec) > 0 {
			msg := info.spec(obj)
			if ferr := checkFields(spec, msg.ProtoReflect().Descriptor(), "spec"); ferr != nil {
				return nil, nil, de(ferr.field, ferr.err)
			}
			if err := (protojson.UnmarshalOptions{}).Unmarshal(spec, msg); err != nil {
				return nil, nil, de("spec", cleanProtoErr(err))
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
		return nil, nil, de("metadata.namespace", fmt.Errorf("%s is cluster-scoped: remove the namespace", h.Kind))
	}
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	return []Resource{{GVK: gvk, Namespace: meta.GetNamespace(), Name: meta.GetName(), Source: src, Object: obj}}, nil, nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
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

// strictJSON decodes Kubernetes objects case-sensitively, rejecting
// unknown and duplicate fields (sigs.k8s.io/json, as the API server).
func strictJSON(js []byte, obj any) *fieldErr {
	strict, err := sigsjson.UnmarshalStrict(js, obj)
	if err != nil {
		return &fieldErr{field: jsonErrField(err), err: err}
	}
	if len(strict) > 0 {
		return &fieldErr{field: strictField(strict[0]), err: strict[0]}
	}
	return nil
}

// strictField pulls the field path out of `unknown field "spec.foo"`.
func strictField(err error) string {
	s := err.Error()
	if i := strings.Index(s, `"`); i >= 0 {
		if j := strings.Index(s[i+1:], `"`); j >= 0 {
			return s[i+1 : i+1+j]
		}
	}
	return ""
}

func jsonErrField(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return te.Field
	}
	return ""
}

// checkFields walks a JSON value against a proto message descriptor and
// reports the first field the message does not have, with its path.
// (protojson reports unknown fields without saying where they are.)
func checkFields(js json.RawMessage, md protoreflect.MessageDescriptor, path string) *fieldErr {
	if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		return nil // well-known types have their own JSON forms
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(js, &obj); err != nil {
		return nil // not an object: protojson reports the type error
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fd := md.Fields().ByJSONName(k)
		if fd == nil {
			fd = md.Fields().ByTextName(k)
		}
		p := path + "." + k
		if fd == nil {
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
			mk := make([]string, 0, len(m))
			for x := range m {
				mk = append(mk, x)
			}
			sort.Strings(mk)
			for _, x := range mk {
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

func cleanProtoErr(err error) error {
	// protojson errors start with "proto: (line 1:23): ", positions in
	// JSON converted from the user's YAML: meaningless to them.
	s := err.Error()
	if i := strings.Index(s, "): "); i >= 0 && strings.HasPrefix(s, "proto:") {
		s = s[i+3:]
	}
	return errors.New(s)
}

// LoadDir decodes every .yaml, .yml and .json file under dir (recursively,
// in path order; dotfiles and editor backups skipped) into one Snapshot
// sorted by kind, namespace and name. Two objects with the same kind,
// namespace and name are an error naming both sources. The error joins
// every *DecodeError; it wraps ErrUnusable when dir cannot be read or no
// file in it holds YAML at all. The snapshot holds the good resources
// even when there are errors.
func LoadDir(dir string) (*Snapshot, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnusable, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory", ErrUnusable, dir)
	}
	var files []string
	others := 0
	// A trailing separator makes WalkDir follow a root that is a symlink
	// (a ConfigMap mount is one).
	root := strings.TrimSuffix(dir, string(filepath.Separator)) + string(filepath.Separator)
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if p != root && (strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~") || strings.HasSuffix(name, ".swp")) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case d.IsDir():
		case strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml") || strings.HasSuffix(name, ".json"):
			files = append(files, filepath.Clean(p))
		default:
			others++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnusable, err)
	}
	snap := &Snapshot{}
	var errs []error
	docs, yamlDocs := 0, 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: %w", ErrUnusable, err))
			continue
		}
		res, sk, err := DecodeFile(f, b)
		snap.Resources = append(snap.Resources, res...)
		snap.Skipped = append(snap.Skipped, sk...)
		docs += len(res) + len(sk)
		if err != nil {
			errs = append(errs, err)
			if !notYAMLOnly(err) {
				yamlDocs++
			}
		}
	}
	sortResources(snap.Resources)
	sortResources(snap.Skipped)
	for i := 1; i < len(snap.Resources); i++ {
		a, b := snap.Resources[i-1], snap.Resources[i]
		if a.GVK.GroupKind() == b.GVK.GroupKind() && a.Namespace == b.Namespace && a.Name == b.Name {
			errs = append(errs, &DecodeError{Source: b.Source, Kind: b.GVK.Kind, Namespace: b.Namespace, Name: b.Name,
				Err: fmt.Errorf("defined twice: also in %s", a.Source)})
		}
	}
	// An empty directory is an empty mesh; a directory whose files are
	// none of them YAML is a wrong path.
	if docs == 0 && yamlDocs == 0 && (others > 0 || len(errs) > 0) {
		errs = append(errs, fmt.Errorf("%w: no file under %s holds YAML (want .yaml, .yml or .json files of Kubernetes objects)", ErrUnusable, dir))
	}
	return snap, errors.Join(errs...)
}

// notYAMLOnly says whether every error in err is a document that is not
// YAML at all.
func notYAMLOnly(err error) bool {
	var des []*DecodeError
	collect(err, &des)
	for _, d := range des {
		if d.Kind != "" {
			return false
		}
	}
	return len(des) > 0
}

func collect(err error, out *[]*DecodeError) {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			collect(e, out)
		}
		return
	}
	var d *DecodeError
	if errors.As(err, &d) {
		*out = append(*out, d)
	}
}

func sortResources(rs []Resource) {
	sort.SliceStable(rs, func(i, j int) bool {
		a, b := rs[i], rs[j]
		if a.GVK.Group != b.GVK.Group {
			return a.GVK.Group < b.GVK.Group
		}
		if a.GVK.Kind != b.GVK.Kind {
			return a.GVK.Kind < b.GVK.Kind
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
}
