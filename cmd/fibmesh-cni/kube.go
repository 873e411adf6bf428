package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// errNotFound is getMeta's error for a 404.
var errNotFound = errors.New("not found")

// getMeta GETs the object at path (/api/v1/namespaces/NS/pods/NAME) from
// the API server cfg points to and returns its metadata. A plain GET keeps
// the plugin, which the runtime starts for every pod, free of the typed
// clients.
func getMeta(ctx context.Context, cfg *rest.Config, path string) (*metav1.ObjectMeta, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(strings.TrimSuffix(cfg.Host, "/") + path)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("GET %s: %w", path, errNotFound)
	case resp.StatusCode != http.StatusOK:
		var st metav1.Status
		if json.Unmarshal(body, &st) == nil && st.Message != "" {
			return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, st.Message)
		}
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	var obj struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	if err := json.Unmarshal(body, &obj); err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	return &obj.Metadata, nil
}

// podLabels are what decides whether a pod is in the mesh
// (model.CaptureOff).
type podLabels struct {
	podLabels, podAnnotations, nsLabels map[string]string
}

// podMeta reads namespace/name's labels and annotations and its
// namespace's labels with kubeconfig.
func podMeta(ctx context.Context, kubeconfig, namespace, name string) (*podLabels, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	pod, err := getMeta(ctx, cfg, "/api/v1/namespaces/"+url.PathEscape(namespace)+"/pods/"+url.PathEscape(name))
	if err != nil {
		return nil, err
	}
	ns, err := getMeta(ctx, cfg, "/api/v1/namespaces/"+url.PathEscape(namespace))
	if err != nil {
		return nil, err
	}
	return &podLabels{podLabels: pod.Labels, podAnnotations: pod.Annotations, nsLabels: ns.Labels}, nil
}
