// Package cniconf is fibmesh-cni's configuration: the entry its installer
// writes into the node's primary CNI network configuration list (the
// conflist the container runtime reads from /etc/cni/net.d), how that
// list is found, edited and written, and how the plugin reads its own
// configuration from the runtime's stdin.
package cniconf

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
)

// PluginType is the plugin's "type" in a conflist: the name of its binary
// in the runtime's CNI bin directory.
const PluginType = "fibmesh-cni"

// DefaultTimeout bounds how long ADD waits for the agent to enrol a pod.
// The agent itself gives up after 30s (its --enrol-timeout); the kubelet's
// runtime request timeout is 2m.
const DefaultTimeout = 45 * time.Second

// DefaultExcludeNamespaces are the namespaces whose pods are never
// captured: the cluster's own and fibmesh's.
var DefaultExcludeNamespaces = []string{"kube-system", "fibmesh-system"}

// Settings are fibmesh-cni's own fields in its conflist entry: what the
// installer writes and the plugin reads.
type Settings struct {
	// Type is PluginType.
	Type string `json:"type"`
	// Node is the node's name: the agent's socket is RunDir/Node/enrol.sock.
	Node string `json:"node"`
	// RunDir is the agent's --run-dir on the host ("" means
	// /run/fibmesh, api/enrol.DefaultRunDir).
	RunDir string `json:"runDir,omitempty"`
	// ExcludeNamespaces are namespaces whose pods pass through uncaptured
	// (absent: DefaultExcludeNamespaces; [] excludes none).
	ExcludeNamespaces []string `json:"excludeNamespaces"`
	// Kubeconfig is the path on the host of the kubeconfig the plugin
	// reads pods' and namespaces' labels with ("": no label lookup, only
	// ExcludeNamespaces exclude).
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// Timeout bounds ADD's wait for the agent, a Go duration ("45s").
	Timeout string `json:"timeout,omitempty"`
	// LogLevel of what the plugin writes to stderr (the runtime's log):
	// debug, info, warn or error.
	LogLevel string `json:"logLevel,omitempty"`
}

// Config is what the plugin reads on stdin: the runtime's common fields
// (cniVersion, name, prevResult) and Settings.
type Config struct {
	// Common are the fields every plugin gets (types.PluginConf).
	Common types.PluginConf
	Settings

	// TimeoutValue is Timeout parsed (DefaultTimeout when empty).
	TimeoutValue time.Duration
	// Level is LogLevel parsed.
	Level slog.Level
}

// Parse reads the plugin's configuration as the runtime hands it over and
// checks it, naming the field that is wrong and what it should be.
func Parse(b []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(b, &c.Common); err != nil {
		return nil, fmt.Errorf("fibmesh-cni configuration: %w (want the JSON object of a conflist entry: {\"type\": %q, \"node\": NODE, ...})", err, PluginType)
	}
	if err := json.Unmarshal(b, &c.Settings); err != nil {
		return nil, fmt.Errorf("fibmesh-cni configuration: %w", err)
	}
	if err := c.Settings.Validate(); err != nil {
		return nil, err
	}
	if c.ExcludeNamespaces == nil {
		c.ExcludeNamespaces = DefaultExcludeNamespaces
	}
	c.TimeoutValue = DefaultTimeout
	if c.Timeout != "" {
		c.TimeoutValue, _ = time.ParseDuration(c.Timeout) // checked by Validate
	}
	c.Level, _ = parseLevel(c.LogLevel)
	return &c, nil
}

// Validate says what is wrong with s, naming the field.
func (s *Settings) Validate() error {
	var errs []error
	if s.Type != PluginType {
		errs = append(errs, fmt.Errorf("type %q: want %q", s.Type, PluginType))
	}
	if s.Node == "" {
		errs = append(errs, errors.New(`node is required: the node's name, as the agent's --node (the installer's --node or NODE_NAME)`))
	} else if msgs := validation.IsDNS1123Subdomain(s.Node); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("node %q: %s", s.Node, strings.Join(msgs, "; ")))
	}
	if s.RunDir != "" && !filepath.IsAbs(s.RunDir) {
		errs = append(errs, fmt.Errorf("runDir %q: want an absolute path (the agent's --run-dir, default /run/fibmesh)", s.RunDir))
	}
	for i, ns := range s.ExcludeNamespaces {
		if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("excludeNamespaces[%d] %q: %s", i, ns, strings.Join(msgs, "; ")))
		}
	}
	if s.Kubeconfig != "" && !filepath.IsAbs(s.Kubeconfig) {
		errs = append(errs, fmt.Errorf("kubeconfig %q: want an absolute path on the host", s.Kubeconfig))
	}
	if s.Timeout != "" {
		d, err := time.ParseDuration(s.Timeout)
		if err != nil || d <= 0 || d > 5*time.Minute {
			errs = append(errs, fmt.Errorf("timeout %q: want a duration between 0s and 5m, such as \"45s\"", s.Timeout))
		}
	}
	if _, err := parseLevel(s.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("fibmesh-cni configuration: %w", errors.Join(errs...))
	}
	return nil
}

// Excluded reports whether namespace ns is one whose pods pass through.
func (s *Settings) Excluded(ns string) bool { return slices.Contains(s.ExcludeNamespaces, ns) }

func parseLevel(s string) (slog.Level, error) {
	switch s {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("logLevel %q: want debug, info, warn or error", s)
}

// PodArgs are the Kubernetes fields of CNI_ARGS
// ("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=name;...").
type PodArgs struct {
	Namespace, Name, UID string
}

// ParseArgs reads CNI_ARGS. A pair without "=" is an error; unknown keys
// are ignored.
func ParseArgs(s string) (PodArgs, error) {
	var a PodArgs
	if s == "" {
		return a, nil
	}
	for kv := range strings.SplitSeq(s, ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return PodArgs{}, fmt.Errorf("CNI_ARGS: %q is not KEY=VALUE", kv)
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			a.Namespace = v
		case "K8S_POD_NAME":
			a.Name = v
		case "K8S_POD_UID":
			a.UID = v
		}
	}
	return a, nil
}
