package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// NetnsDir is where iproute2 keeps named network namespaces.
const NetnsDir = "/run/netns"

// ErrMissingTool is wrapped by the error Up returns when ip, ethtool or
// nsenter is not installed.
var ErrMissingTool = errors.New("missing tool")

// CommandError is a command of the lab's that failed. Its message names
// the command line and quotes its standard error.
type CommandError struct {
	Args   []string // the command line, program first
	Stderr string   // what the command wrote to standard error, trimmed
	Err    error    // the error from exec: usually an *exec.ExitError
}

// Error returns `"ip -n fm-node1 ...": exit status 2: <stderr>`.
func (e *CommandError) Error() string {
	msg := fmt.Sprintf("%q: %v", strings.Join(e.Args, " "), e.Err)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

// Unwrap returns the error from exec.
func (e *CommandError) Unwrap() error { return e.Err }

// NetnsPath returns the file that names netns: /run/netns/<netns>.
func NetnsPath(netns string) string { return filepath.Join(NetnsDir, netns) }

// NetnsExists reports whether a named network namespace exists.
func NetnsExists(netns string) bool {
	_, err := os.Stat(NetnsPath(netns))
	return err == nil
}

// checkTools returns an error naming the Debian packages to install if a
// program the lab shells out to is missing.
func checkTools() error {
	for _, t := range []struct{ prog, pkg string }{
		{"ip", "iproute2"}, {"ethtool", "ethtool"}, {"nsenter", "util-linux"},
	} {
		if _, err := exec.LookPath(t.prog); err != nil {
			return fmt.Errorf("%w: %s (package %s) is not in PATH: apt-get install ethtool iproute2 util-linux",
				ErrMissingTool, t.prog, t.pkg)
		}
	}
	return nil
}

// run runs a program and returns its standard output. A failure is a
// *CommandError carrying the command line and its standard error.
func run(ctx context.Context, prog string, args ...string) (string, error) {
	return runCmd(exec.CommandContext(ctx, prog, args...))
}

// ip runs "ip ARGS...".
func ip(ctx context.Context, args ...string) error {
	_, err := run(ctx, "ip", args...)
	return err
}

// ipn runs "ip -n NETNS ARGS...".
func ipn(ctx context.Context, netns string, args ...string) error {
	return ip(ctx, append([]string{"-n", netns}, args...)...)
}

// inNS runs a program inside netns through nsenter.
func inNS(ctx context.Context, netns, prog string, args ...string) error {
	_, err := runCmd(nsCommand(ctx, netns, prog, args...))
	return err
}

func runCmd(cmd *exec.Cmd) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &CommandError{Args: cmd.Args, Stderr: strings.TrimSpace(stderr.String()), Err: err}
	}
	return stdout.String(), nil
}
