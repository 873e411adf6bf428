package lab

import (
	"errors"
	"fmt"
	"strings"
)

// Defaults applied by Config.WithDefaults to zero-valued fields.
const (
	DefaultNodes       = 2
	DefaultPodsPerNode = 2
	DefaultPrefix      = "fm-"
	DefaultStateDir    = "/run/fibmesh/lab"
)

// Limits enforced by Config.Validate.
const (
	// MaxNodes is the largest node count: node and pod indexes are written
	// as one decimal digit in names and as one byte in MACs and IPs.
	MaxNodes = 9
	// MaxPodsPerNode is the largest pod count per node, for the same reason.
	MaxPodsPerNode = 9
	// MaxNetnsName is the longest network namespace name the lab creates.
	MaxNetnsName = 30
	// requiredPrefix starts every lab prefix, so that Cleanup can never be
	// pointed at namespaces that are not the lab's.
	requiredPrefix = "fm-"
	// longestSuffix is the longest name part appended to the prefix
	// ("node9-pod9").
	longestSuffix = len("node9-pod9")
)

// ErrInvalidConfig is wrapped by every error Config.Validate returns.
var ErrInvalidConfig = errors.New("invalid lab config")

// Config describes the cluster that Up builds. Zero fields take the
// defaults (see WithDefaults).
type Config struct {
	// Nodes is the number of nodes, 1..9 (default 2).
	Nodes int
	// PodsPerNode is the number of pods on every node, 1..9 (default 2).
	PodsPerNode int
	// Prefix starts the name of every network namespace the lab creates
	// (default "fm-"). It must start with "fm-", contain only lower-case
	// letters, digits and '-', and be at most 20 characters so that the
	// longest namespace name stays within 30 characters.
	Prefix string
	// StateDir is where Up writes cluster.yaml (default /run/fibmesh/lab).
	StateDir string
}

// WithDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Nodes == 0 {
		c.Nodes = DefaultNodes
	}
	if c.PodsPerNode == 0 {
		c.PodsPerNode = DefaultPodsPerNode
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	return c
}

// Validate reports the first problem with c, naming the field and the fix.
// It does not apply defaults: call WithDefaults first. Every error wraps
// ErrInvalidConfig.
func (c Config) Validate() error {
	if c.Nodes < 1 || c.Nodes > MaxNodes {
		return fmt.Errorf("%w: Nodes is %d, want 1..%d", ErrInvalidConfig, c.Nodes, MaxNodes)
	}
	if c.PodsPerNode < 1 || c.PodsPerNode > MaxPodsPerNode {
		return fmt.Errorf("%w: PodsPerNode is %d, want 1..%d", ErrInvalidConfig, c.PodsPerNode, MaxPodsPerNode)
	}
	if err := validatePrefix(c.Prefix); err != nil {
		return err
	}
	if c.StateDir == "" {
		return fmt.Errorf("%w: StateDir is empty, want a directory such as %s", ErrInvalidConfig, DefaultStateDir)
	}
	return nil
}

// validatePrefix checks a namespace name prefix. Cleanup relies on it too:
// an empty or foreign prefix would make it delete namespaces that are not
// the lab's.
func validatePrefix(p string) error {
	if !strings.HasPrefix(p, requiredPrefix) {
		return fmt.Errorf("%w: Prefix %q must start with %q", ErrInvalidConfig, p, requiredPrefix)
	}
	if max := MaxNetnsName - longestSuffix; len(p) > max {
		return fmt.Errorf("%w: Prefix %q is %d characters, want at most %d so that %q stays within %d",
			ErrInvalidConfig, p, len(p), max, p+"node9-pod9", MaxNetnsName)
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return fmt.Errorf("%w: Prefix %q contains %q, want only a-z, 0-9 and '-'", ErrInvalidConfig, p, r)
		}
	}
	return nil
}
