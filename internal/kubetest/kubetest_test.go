package kubetest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fibmesh/fibmesh/internal/kubetest"
)

// TestCluster: the API server is the stamped v1.34 build, enforces RBAC
// on an impersonated ServiceAccount, issues tokens that its TokenReview
// accepts for their audience only, and serves CRDs Apply installs.
func TestCluster(t *testing.T) {
	c := kubetest.Start(t)
	t.Logf("etcd + kube-apiserver ready in %s", c.Took.Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	v, err := c.Clientset.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v.GitVersion, "v1.") || v.GitVersion == "v0.0.0-master" || v.Major != "1" {
		t.Errorf("server version %+v: want a stamped v1.x (hack/kube-apiserver/build.sh's -ldflags)", v)
	}
	if _, err := kubetest.Kubectl(); err == nil {
		out, err := c.Kubectl(ctx, "version")
		if err != nil {
			t.Fatal(err)
		}
		// kubectl (v1.32 here) may warn of its own skew to the
		// server, not of an unparsable server version.
		if !strings.Contains(string(out), "Server Version: "+v.GitVersion) {
			t.Errorf("kubectl version: %s, want Server Version: %s", out, v.GitVersion)
		}
	}

	const ns, sa = "kubetest", "reader"
	if _, err := c.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Clientset.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("impersonated ServiceAccount without RBAC", func(t *testing.T) {
		cfg := c.AsServiceAccount(ns, sa)
		_, err := kubetest.Client(t, cfg).CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), kubetest.ServiceAccountUser(ns, sa)) {
			t.Errorf("listing pods as %s: %v, want Forbidden naming the user", kubetest.ServiceAccountUser(ns, sa), err)
		}
		ok, _, err := kubetest.CanI(ctx, cfg, authorizationv1.ResourceAttributes{Namespace: ns, Verb: "list", Resource: "pods"})
		if err != nil || ok {
			t.Errorf("can-i list pods as %s: %v, %v; want no", sa, ok, err)
		}
		ok, _, err = kubetest.CanI(ctx, c.Config, authorizationv1.ResourceAttributes{Namespace: ns, Verb: "delete", Resource: "pods"})
		if err != nil || !ok {
			t.Errorf("can-i delete pods as the admin: %v, %v; want yes", ok, err)
		}
	})

	t.Run("TokenRequest and TokenReview", func(t *testing.T) {
		tok, err := c.Token(ctx, ns, sa, "fibmesh-ca")
		if err != nil {
			t.Fatal(err)
		}
		review := func(aud string) *authenticationv1.TokenReviewStatus {
			r, err := c.Clientset.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
				Spec: authenticationv1.TokenReviewSpec{Token: tok, Audiences: []string{aud}},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return &r.Status
		}
		if st := review("fibmesh-ca"); !st.Authenticated || st.User.Username != kubetest.ServiceAccountUser(ns, sa) {
			t.Errorf("TokenReview for audience fibmesh-ca: %+v, want %s authenticated", st, kubetest.ServiceAccountUser(ns, sa))
		}
		if st := review("someone-else"); st.Authenticated {
			t.Errorf("TokenReview for another audience: %+v, want refused", st)
		}
	})

	t.Run("Apply a CRD and an object of its kind", func(t *testing.T) {
		a, err := c.Applier()
		if err != nil {
			t.Fatal(err)
		}
		objs, err := a.Apply(ctx, []byte(widgetCRD+"---\n"+widget))
		if err != nil {
			t.Fatal(err)
		}
		if len(objs) != 2 || objs[1].GetKind() != "Widget" || objs[1].GetNamespace() != "default" {
			t.Fatalf("applied %v, want the CRD then the Widget in default", objs)
		}
		a.DryRun = true
		if _, err := a.Apply(ctx, []byte(strings.Replace(widget, "size: 3", "size: many", 1))); err == nil || !strings.Contains(err.Error(), "spec.size") {
			t.Errorf("dry-run apply of a Widget with a string size: %v, want the schema's error on spec.size", err)
		}
	})
}

const widgetCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.kubetest.fibmesh.io
spec:
  group: kubetest.fibmesh.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
`

const widget = `apiVersion: kubetest.fibmesh.io/v1
kind: Widget
metadata:
  name: w
spec:
  size: 3
`
