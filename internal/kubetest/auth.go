package kubetest

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// As returns the admin's config impersonating user (and groups), as
// kubectl --as does: requests are authorized as that user's.
func (c *Cluster) As(user string, groups ...string) *rest.Config {
	cfg := rest.CopyConfig(c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	return cfg
}

// AsServiceAccount is As for the ServiceAccount namespace/name: the user
// system:serviceaccount:NAMESPACE:NAME, to which the API server adds the
// groups system:serviceaccounts and system:serviceaccounts:NAMESPACE, as
// for the SA's own token.
func (c *Cluster) AsServiceAccount(namespace, name string) *rest.Config {
	return c.As(ServiceAccountUser(namespace, name))
}

// Client returns a clientset for cfg (from As, AsServiceAccount).
func Client(t testing.TB, cfg *rest.Config) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("kubetest: clientset: %v", err)
	}
	return cs
}

// CanI asks the API server whether cfg's user may do what ra describes
// (kubectl auth can-i: a SelfSubjectAccessReview as that user), and
// returns the answer and the authorizer's reason.
func CanI(ctx context.Context, cfg *rest.Config, ra authorizationv1.ResourceAttributes) (bool, string, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return false, "", err
	}
	r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &ra},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, "", fmt.Errorf("SelfSubjectAccessReview %+v: %w", ra, err)
	}
	return r.Status.Allowed, r.Status.Reason + r.Status.EvaluationError, nil
}

// Token returns a token of the ServiceAccount namespace/name for
// audiences (the issuer's when none), through the TokenRequest API, as
// the kubelet gets a projected token for a pod. The ServiceAccount must
// exist.
func (c *Cluster) Token(ctx context.Context, namespace, name string, audiences ...string) (string, error) {
	tr, err := c.Clientset.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("TokenRequest for %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

// ServiceAccountUser is the user name of the ServiceAccount
// namespace/name: system:serviceaccount:NAMESPACE:NAME.
func ServiceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// ServiceAccountKubeconfig writes a kubeconfig that authenticates as the
// ServiceAccount namespace/name with a token from Token (an hour's),
// as a pod of that ServiceAccount would, and returns its path: a process
// run with it has exactly the RBAC that ServiceAccount is granted.
func (c *Cluster) ServiceAccountKubeconfig(ctx context.Context, namespace, name string) (string, error) {
	tok, err := c.Token(ctx, namespace, name)
	if err != nil {
		return "", err
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: c.Config.Host, CertificateAuthorityData: c.pki.PEM}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: tok}
	kc.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: name, Namespace: namespace}
	kc.CurrentContext = "kubetest"
	path := filepath.Join(c.Dir, "kubeconfig-"+namespace+"-"+name)
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return "", fmt.Errorf("write kubeconfig: %w", err)
	}
	return path, nil
}

// PodToken returns a token of pod's ServiceAccount bound to the pod, for
// audiences, as the kubelet gets one for a projected volume: the API
// server adds the pod's node (user extra authentication.kubernetes.io/
// node-name) when pod.Spec.NodeName is set. pod must be stored (its UID).
func (c *Cluster) PodToken(ctx context.Context, pod *corev1.Pod, audiences ...string) (string, error) {
	tr, err := c.Clientset.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, pod.Spec.ServiceAccountName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:      audiences,
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("TokenRequest for pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return tr.Status.Token, nil
}
