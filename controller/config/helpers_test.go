package config

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// istioView is an Istio object in a form cmp can compare: the client-go
// structs hold their spec protos by value, which protocmp cannot reach.
type istioView struct {
	TypeMeta   metav1.TypeMeta
	ObjectMeta metav1.ObjectMeta
	Spec       proto.Message
}

func objView(o runtime.Object) any {
	switch o := o.(type) {
	case *networkingv1.VirtualService:
		return istioView{o.TypeMeta, o.ObjectMeta, &o.Spec}
	case *networkingv1.DestinationRule:
		return istioView{o.TypeMeta, o.ObjectMeta, &o.Spec}
	case *networkingv1.ServiceEntry:
		return istioView{o.TypeMeta, o.ObjectMeta, &o.Spec}
	case *securityv1.PeerAuthentication:
		return istioView{o.TypeMeta, o.ObjectMeta, &o.Spec}
	case *securityv1.AuthorizationPolicy:
		return istioView{o.TypeMeta, o.ObjectMeta, &o.Spec}
	}
	return o
}

// resView is a Resource with its Object made comparable.
type resView struct {
	Key    string
	GVK    string
	Source Source
	Object any
}

func views(rs []Resource) []resView {
	var out []resView
	for _, r := range rs {
		out = append(out, resView{Key: r.Key(), GVK: r.GVK.String(), Source: r.Source, Object: objView(r.Object)})
	}
	return out
}

// decodeErrors flattens err (errors.Join trees) into its *DecodeError
// values, failing the test on any other error.
func decodeErrors(t testing.TB, err error) []*DecodeError {
	t.Helper()
	var out []*DecodeError
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		var d *DecodeError
		if !errors.As(e, &d) {
			t.Fatalf("error %q (%T) is not a *DecodeError", e, e)
		}
		out = append(out, d)
	}
	if err != nil {
		walk(err)
	}
	return out
}

func errStrings(t testing.TB, err error) []string {
	t.Helper()
	var out []string
	for _, d := range decodeErrors(t, err) {
		out = append(out, d.Error())
	}
	return out
}
