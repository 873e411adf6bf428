package kube

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const kubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443"}
users:
- name: u
  user: {token: t}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`

func TestConnect(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(good, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Connect(good)
	if err != nil || c.Kube == nil || c.Istio == nil {
		t.Fatalf("Connect(%s) = %+v, %v", good, c, err)
	}

	missing := filepath.Join(dir, "missing")
	if _, err := Connect(missing); err == nil || !strings.Contains(err.Error(), "kubeconfig "+missing) {
		t.Errorf("Connect(%s) = %v, want an error naming it", missing, err)
	}

	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := Connect(""); !errors.Is(err, ErrNoCluster) {
		t.Errorf(`Connect("") outside a pod = %v, want ErrNoCluster`, err)
	}
}
