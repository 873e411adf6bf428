package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// Module is this repository's module path; BuildCommands takes the
// commands' paths below it ("cmd/fibmesh-agent").
const Module = "github.com/fibmesh/fibmesh"

// BuildCommands builds the module's commands (paths relative to the
// module root, e.g. "cmd/fibmesh-agent") into dir with the go tool, with
// -race when the test binary itself was built with it, so that the
// processes a test runs are checked as the test is. Tests that run the
// real binaries (the lab, the controller, the agents) call it once, from
// TestMain or a sync.Once.
func BuildCommands(dir string, cmds ...string) error {
	args := []string{"build"}
	if RaceEnabled() {
		args = append(args, "-race")
	}
	args = append(args, "-o", dir+string(filepath.Separator))
	for _, c := range cmds {
		args = append(args, Module+"/"+c)
	}
	out, err := exec.Command(GoTool(), args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// RaceEnabled reports whether the test binary was built with -race.
func RaceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// GoTool is the go command: the one on PATH, else $GOROOT/bin/go.
func GoTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

// MainWithCommands is a TestMain body for tests that run the module's
// binaries: as root it builds cmds (BuildCommands) into a temporary
// directory, stores its path in *dir, runs the tests and removes it;
// without root the tests run (and skip themselves) with *dir empty. It
// returns the exit code for os.Exit.
func MainWithCommands(m *testing.M, dir *string, cmds ...string) int {
	if !IsRoot() {
		return m.Run()
	}
	d, err := os.MkdirTemp("", "fibmesh-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(d)
	if err := BuildCommands(d, cmds...); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	*dir = d
	return m.Run()
}
