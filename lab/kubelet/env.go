package kubelet

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// containerEnv returns the environment of container c of pod p (p has its
// node and IP): PATH (binDir, where fibmesh-lab is, first: the examples'
// containers run "fibmesh-lab app echo" as the image would have it on its
// PATH) and HOME of the daemon, HOSTNAME as the pod's name,
// then the container's env in order, with $(VAR) references to earlier
// variables expanded and valueFrom.fieldRef resolved as the Downward API
// does. It says which field is wrong when an env entry cannot be
// resolved (a configMapKeyRef, an unknown fieldPath).
func containerEnv(p *corev1.Pod, c *corev1.Container, binDir string) ([]string, error) {
	vars := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	if binDir != "" {
		path = binDir + ":" + path
	}
	set("PATH", path)
	set("HOME", "/root")
	set("HOSTNAME", p.Name)
	for i, e := range c.Env {
		field := fmt.Sprintf("spec.containers[%s].env[%d]", c.Name, i)
		switch {
		case e.ValueFrom == nil:
			set(e.Name, expand(e.Value, vars))
		case e.ValueFrom.FieldRef != nil:
			v, err := fieldRef(p, e.ValueFrom.FieldRef.FieldPath)
			if err != nil {
				return nil, fmt.Errorf("%s (%s).valueFrom.fieldRef: %w", field, e.Name, err)
			}
			set(e.Name, v)
		default:
			return nil, fmt.Errorf("%s (%s).valueFrom: the lab resolves only fieldRef (no ConfigMaps, Secrets or resources): use value or fieldRef", field, e.Name)
		}
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+vars[k])
	}
	return out, nil
}

var labelPath = regexp.MustCompile(`^metadata\.(labels|annotations)\['([^']+)'\]$`)

// fieldRef resolves a Downward API field path.
func fieldRef(p *corev1.Pod, path string) (string, error) {
	switch path {
	case "metadata.name":
		return p.Name, nil
	case "metadata.namespace":
		return p.Namespace, nil
	case "metadata.uid":
		return string(p.UID), nil
	case "spec.nodeName":
		return p.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return p.Spec.ServiceAccountName, nil
	case "status.podIP":
		return p.Status.PodIP, nil
	case "status.hostIP":
		return p.Status.HostIP, nil
	}
	if m := labelPath.FindStringSubmatch(path); m != nil {
		if m[1] == "labels" {
			return p.Labels[m[2]], nil
		}
		return p.Annotations[m[2]], nil
	}
	return "", fmt.Errorf("fieldPath %q is not supported: use metadata.name, metadata.namespace, metadata.labels['KEY'], metadata.annotations['KEY'], spec.nodeName, spec.serviceAccountName, status.podIP or status.hostIP", path)
}

var varRef = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)`)

// expand replaces $(VAR) with the value of VAR when it is defined and
// "$$" with "$", as Kubernetes expands command, args and env values;
// undefined references stay as written.
func expand(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	return varRef.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		if v, ok := vars[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// argv returns the container's command and args with $(VAR) expanded
// from env ("K=V" entries). ok is false when the container has no
// command: the lab ignores images, so it has no entrypoint to run.
func argv(c *corev1.Container, env []string) (args []string, ok bool) {
	if len(c.Command) == 0 {
		return nil, false
	}
	vars := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	for _, a := range append(append([]string{}, c.Command...), c.Args...) {
		args = append(args, expand(a, vars))
	}
	return args, true
}
