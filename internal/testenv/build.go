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

// BinEnv names the environment variable that points to a directory of
// the module's commands, already built (make vmtest packs them, built
// statically on the host, into its VM, which has no Go toolchain).
// BuildCommands and MainWithCommands use them instead of building.
const BinEnv = "FIBMESH_TEST_BIN"

// PrebuiltDir returns $FIBMESH_TEST_BIN, or "" when the commands are to
// be built.
func PrebuiltDir() string { return os.Getenv(BinEnv) }

// prebuilt checks that dir holds an executable of each command's name.
func prebuilt(dir string, cmds ...string) error {
	for _, c := range cmds {
		p := filepath.Join(dir, filepath.Base(c))
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("%s=%s lacks %s: %w (build it there, or unset %s to build with the go tool)", BinEnv, dir, filepath.Base(c), err, BinEnv)
		}
		if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("%s=%s: %s is not an executable file (mode %v)", BinEnv, dir, p, st.Mode())
		}
	}
	return nil
}

// BuildCommands builds the module's commands (paths relative to the
// module root, e.g. "cmd/fibmesh-agent") into dir with the go tool, with
// -race when the test binary itself was built with it, so that the
// processes a test runs are checked as the test is. Tests that run the
// real binaries (the lab, the controller, the agents) call it once, from
// TestMain or a sync.Once. With $FIBMESH_TEST_BIN set it links the
// prebuilt commands from there into dir instead.
func BuildCommands(dir string, cmds ...string) error {
	if pre := PrebuiltDir(); pre != "" {
		if err := prebuilt(pre, cmds...); err != nil {
			return err
		}
		for _, c := range cmds {
			name := filepath.Base(c)
			if err := os.Symlink(filepath.Join(pre, name), filepath.Join(dir, name)); err != nil {
				return fmt.Errorf("prebuilt command: %w", err)
			}
		}
		return nil
	}
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
// without root the tests run (and skip themselves) with *dir empty. With
// $FIBMESH_TEST_BIN set, *dir is that directory and nothing is built. It
// returns the exit code for os.Exit.
func MainWithCommands(m *testing.M, dir *string, cmds ...string) int {
	if !IsRoot() {
		return m.Run()
	}
	if pre := PrebuiltDir(); pre != "" {
		if err := prebuilt(pre, cmds...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		*dir = pre
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
