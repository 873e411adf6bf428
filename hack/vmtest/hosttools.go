package main

import (
	"context"
	"debug/elf"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// defaultHostTools are the programs the lab (lab.Up, its kubelet) runs
// that busybox lacks or has in a form too small: iproute2's ip (netns
// add, veth peers in other namespaces, bridges), ethtool (-K offloads of
// the veths) and util-linux's nsenter. They come from the host with the
// shared libraries they load; the host and the VM are both x86-64 Linux,
// and the libraries go in with their host paths, so the programs run
// unchanged on busybox's root.
var defaultHostTools = []string{"ip", "ethtool", "nsenter"}

// hostToolDir is where the host's programs go in the VM; /init puts it
// first in PATH, ahead of busybox's applets of the same names.
const hostToolDir = "usr/local/bin"

// hostFile is a file copied from the host into the initramfs.
type hostFile struct {
	Guest string // path in the VM, without the leading slash
	Host  string // path on the host (symlinks followed when read)
	Mode  uint32
}

// hostTools finds each program in PATH and returns it (under
// hostToolDir) with the shared libraries ldd says it loads (under their
// own paths), each library once.
func hostTools(ctx context.Context, names []string) ([]hostFile, error) {
	var files []hostFile
	libs := map[string]bool{}
	for _, name := range names {
		path, err := exec.LookPath(name)
		if err != nil {
			return nil, fmt.Errorf("host tool %s (-host-tools) is not in PATH: install it (Debian: iproute2 for ip, ethtool, util-linux for nsenter): %w", name, err)
		}
		files = append(files, hostFile{Guest: hostToolDir + "/" + filepath.Base(name), Host: path, Mode: 0o755})
		dynamic, err := isDynamic(path)
		if err != nil {
			return nil, err
		}
		if !dynamic {
			continue
		}
		out, err := command(ctx, "", "ldd", path)
		if err != nil {
			return nil, fmt.Errorf("host tool %s: %w", path, err)
		}
		deps, err := parseLdd(out)
		if err != nil {
			return nil, fmt.Errorf("host tool %s: ldd: %w", path, err)
		}
		for _, d := range deps {
			libs[d] = true
		}
	}
	var sorted []string
	for l := range libs {
		sorted = append(sorted, l)
	}
	sort.Strings(sorted)
	for _, l := range sorted {
		files = append(files, hostFile{Guest: strings.TrimPrefix(l, "/"), Host: l, Mode: 0o755})
	}
	return files, nil
}

// isDynamic reports whether the ELF executable at path has an
// interpreter (the dynamic loader).
func isDynamic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, fmt.Errorf("host tool %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true, nil
		}
	}
	return false, nil
}

// parseLdd returns the absolute paths of the libraries in ldd's output:
// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and the loader
// "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no file. A library
// ldd did not find is an error naming it.
func parseLdd(out string) ([]string, error) {
	var libs []string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if strings.Contains(line, "=> not found") {
			return nil, fmt.Errorf("library not found: %s", line)
		}
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0])
		}
	}
	return libs, nil
}
