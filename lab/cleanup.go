package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// BPFPinRoot is the bpffs directory under which fibmesh pins per-node BPF
// state, one directory per node namespace (/sys/fs/bpf/fibmesh/<netns>).
const BPFPinRoot = "/sys/fs/bpf/fibmesh"

// cleanupTimeout bounds the iproute2 commands of one cleanup.
const cleanupTimeout = 2 * time.Minute

// Down removes everything the lab created, as Cleanup does for its prefix,
// and its state file in Config.StateDir. It is idempotent: calling it on a
// lab that is already gone returns nil.
func (l *Lab) Down() error {
	if err := cleanup(l.Config.Prefix, l.Config.StateDir); err != nil {
		return fmt.Errorf("lab down: %w", err)
	}
	return nil
}

// Cleanup removes, for the given prefix, every network namespace whose name
// starts with prefix (as listed by "ip netns list"), every link in the root
// namespace whose name starts with prefix, the pinned BPF state directories
// /sys/fs/bpf/fibmesh/<prefix>*, and the state file in DefaultStateDir when
// it describes a lab whose prefix starts with prefix. It works without any state file (for
// example after a crash) and is idempotent.
//
// Matching is by plain prefix: Cleanup("fm-") also removes the namespaces
// of a lab with prefix "fm-tl-". prefix must pass the same checks as
// Config.Prefix, so it can never match namespaces that are not fibmesh's.
func Cleanup(prefix string) error {
	if err := cleanup(prefix, DefaultStateDir); err != nil {
		return fmt.Errorf("lab cleanup: %w", err)
	}
	return nil
}

func cleanup(prefix, stateDir string) error {
	if err := validatePrefix(prefix); err != nil {
		return err
	}
	if err := checkTools(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()

	var errs []error
	out, err := run(ctx, "ip", "netns", "list")
	if err != nil {
		return fmt.Errorf("list network namespaces: %w", err)
	}
	var ours []string
	for _, ns := range parseNetnsList(out) {
		if strings.HasPrefix(ns, prefix) {
			ours = append(ours, ns)
		}
	}
	// Processes still in the namespaces (containers, agents, the
	// controller of a lab whose daemon is gone) would keep them alive
	// after their names are deleted.
	if err := killNetnsProcs(ctx, ours); err != nil {
		errs = append(errs, err)
	}
	for _, ns := range ours {
		if err := ip(ctx, "netns", "del", ns); err != nil && NetnsExists(ns) {
			errs = append(errs, err)
		}
	}

	out, err = run(ctx, "ip", "-o", "link", "show")
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list links: %w", err))...)
	}
	for _, link := range parseLinkList(out) {
		if strings.HasPrefix(link, prefix) {
			// A veth whose peer was in a namespace deleted above may
			// go away on its own meanwhile: gone is what we want.
			if err := ip(ctx, "link", "del", link); err != nil && linkExists(ctx, link) {
				errs = append(errs, err)
			}
		}
	}

	pins, err := filepath.Glob(filepath.Join(BPFPinRoot, prefix+"*"))
	if err != nil {
		errs = append(errs, fmt.Errorf("glob pinned BPF state: %w", err))
	}
	for _, dir := range pins {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("remove pinned BPF state: %w", err))
		}
	}

	if err := removeState(stateDir, prefix); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// procsGrace is how long killNetnsProcs waits after SIGTERM before
// SIGKILL.
const procsGrace = 5 * time.Second

// killNetnsProcs stops every process whose network namespace is one of
// the named ones ("ip netns pids"): SIGTERM, then SIGKILL for those
// still there after procsGrace.
func killNetnsProcs(ctx context.Context, names []string) error {
	var pids []int
	for _, ns := range names {
		out, err := run(ctx, "ip", "netns", "pids", ns)
		if err != nil {
			continue // gone already
		}
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				pids = append(pids, pid)
			}
		}
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(procsGrace)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // polling a pid that is not our child: no wait(2) for it
		}
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return nil
}

// linkExists says whether the root namespace has a link called name.
func linkExists(ctx context.Context, name string) bool {
	return ip(ctx, "link", "show", "dev", name) == nil
}

// alive says whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	return i >= 0 && len(f) > 0 && f[0] != "Z"
}

// parseNetnsList returns the names in "ip netns list" output, whose lines
// read "NAME" or "NAME (id: N)".
func parseNetnsList(out string) []string {
	var names []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

// parseLinkList returns the interface names in "ip -o link show" output,
// whose lines read "IDX: NAME[@PEER]: <FLAGS> ...".
func parseLinkList(out string) []string {
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.SplitN(line, ": ", 3)
		if len(f) < 3 {
			continue
		}
		name, _, _ := strings.Cut(f[1], "@")
		names = append(names, name)
	}
	return names
}

// removeState deletes the state file in dir unless it describes a lab whose
// prefix does not start with prefix (one whose namespaces this cleanup
// leaves alone), then dir itself if that leaves it empty.
func removeState(dir, prefix string) error {
	path := filepath.Join(dir, StateFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	if l, err := parseState(data, dir); err == nil && !strings.HasPrefix(l.Config.Prefix, prefix) {
		return nil // a lab whose namespaces this prefix does not match: not ours
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove state: %w", err)
	}
	_ = os.Remove(dir) // only succeeds when empty; other files are not ours
	return nil
}
