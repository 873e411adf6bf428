package main

import (
	"bytes"
	"context"
	"debug/elf"
	_ "embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/template"
)

//go:embed init.sh.tmpl
var initTemplate string

// testBinary is one package's statically linked test binary.
type testBinary struct {
	Pkg      string // import path
	Name     string // directory and file name in the VM: /tests/Name/Name.test
	Binary   string // host path
	TestData string // host path of the package's testdata directory, or ""
	Run      string // the package's own -test.run flag, shell-quoted with a leading space, or ""
	Commands bool   // its tests run the module's commands (usesCommands)
}

// commandDir is where the module's prebuilt commands go in the VM; /init
// exports it as FIBMESH_TEST_BIN (internal/testenv.BinEnv).
const commandDir = "opt/fibmesh/bin"

// initConfig fills init.sh.tmpl.
type initConfig struct {
	Release     string
	Nonce       string
	Modules     string // modules to modprobe, space separated
	TestTimeout string
	TestArgs    string // shell-quoted, each with a leading space
	Run         string // the -test.run flag of tests without their own, shell-quoted with a leading space, or ""
	Commands    bool   // the commands are in /opt/fibmesh/bin
	Tests       []testBinary
}

// renderInit returns the /init script.
func renderInit(cfg initConfig) ([]byte, error) {
	tmpl, err := template.New("init").Parse(initTemplate)
	if err != nil {
		return nil, fmt.Errorf("init template: %w", err)
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, cfg); err != nil {
		return nil, fmt.Errorf("init template: %w", err)
	}
	return b.Bytes(), nil
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// initramfs is what goes into the VM's initial root file system.
type initramfs struct {
	Busybox string // host path of a static busybox
	Applets []string
	Kernel  *kernel
	Modules []*module
	Init    []byte
	Tests   []testBinary
	// HostFiles are the host's programs and their libraries (hostTools).
	HostFiles []hostFile
	// Commands is a host directory of the module's static commands,
	// packed into commandDir; "" for none.
	Commands string
}

// staticBusybox checks that path is a statically linked ELF executable
// (Debian's busybox-static; the dynamic busybox package would find no
// libc in the initramfs) and returns its applets' paths from
// `busybox --list-full`.
func staticBusybox(ctx context.Context, path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("busybox %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("busybox %s is dynamically linked: install busybox-static (hack/deps.sh vmtest)", path)
		}
	}
	out, err := command(ctx, "", path, "--list-full")
	if err != nil {
		return nil, fmt.Errorf("busybox applets: %w", err)
	}
	return strings.Fields(out), nil
}

// write writes the initramfs as an uncompressed newc cpio archive to path
// and returns its size. Uncompressed because the guest unpacks it under
// TCG emulation, where gunzip of ~40 MB costs seconds and the host saves
// nothing by shipping fewer bytes to a local qemu.
func (r *initramfs) write(path string) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, fmt.Errorf("initramfs: %w", err)
	}
	defer f.Close()
	c := newCpioWriter(f)
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run", "root", "etc", "tests"} {
		if err := c.Dir(d, 0o755); err != nil {
			return 0, err
		}
	}
	// The kernel opens /dev/console for init's stdio before init can
	// mount devtmpfs.
	if err := c.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return 0, err
	}
	if err := addFile(c, "bin/busybox", r.Busybox, 0o755); err != nil {
		return 0, err
	}
	for _, a := range r.Applets {
		a = cleanName(a)
		if a == "bin/busybox" || a == "init" || a == "linuxrc" {
			continue
		}
		if err := c.Symlink(a, "/bin/busybox"); err != nil {
			return 0, err
		}
	}
	if err := addBytes(c, "init", r.Init, 0o755); err != nil {
		return 0, err
	}
	etc := map[string]string{
		"etc/hosts":         "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n",
		"etc/passwd":        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":         "root:x:0:\nnogroup:x:65534:\n",
		"etc/nsswitch.conf": "hosts: files\n",
	}
	for _, name := range []string{"etc/hosts", "etc/passwd", "etc/group", "etc/nsswitch.conf"} {
		if err := addBytes(c, name, []byte(etc[name]), 0o644); err != nil {
			return 0, err
		}
	}
	if err := r.writeModules(c); err != nil {
		return 0, err
	}
	for _, h := range r.HostFiles {
		if err := addFile(c, h.Guest, h.Host, h.Mode); err != nil {
			return 0, err
		}
	}
	if r.Commands != "" {
		if err := addTree(c, commandDir, r.Commands); err != nil {
			return 0, err
		}
	}
	for _, t := range r.Tests {
		dir := "tests/" + t.Name
		if err := addFile(c, dir+"/"+t.Name+".test", t.Binary, 0o755); err != nil {
			return 0, err
		}
		if t.TestData != "" {
			if err := addTree(c, dir+"/testdata", t.TestData); err != nil {
				return 0, err
			}
		}
	}
	if err := c.Close(); err != nil {
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("initramfs: %w", err)
	}
	return st.Size(), f.Close()
}

// writeModules adds the selected modules (uncompressed) under
// lib/modules/<release>, with a modules.dep and modules.alias covering
// exactly them, so busybox modprobe resolves dependencies and the
// kernel's request_module() aliases (tcp-ulp-tls, crypto-gcm, ...).
func (r *initramfs) writeModules(c *cpioWriter) error {
	base := "lib/modules/" + r.Kernel.Release
	for _, m := range r.Modules {
		if err := addBytes(c, base+"/"+m.Rel, m.Data, 0o644); err != nil {
			return err
		}
	}
	if err := addBytes(c, base+"/modules.dep", modulesDep(r.Modules), 0o644); err != nil {
		return err
	}
	if err := addBytes(c, base+"/modules.alias", modulesAlias(r.Modules), 0o644); err != nil {
		return err
	}
	for _, name := range []string{"modules.builtin", "modules.builtin.modinfo", "modules.order"} {
		p := filepath.Join(r.Kernel.ModDir, name)
		if _, err := os.Stat(p); err == nil {
			if err := addFile(c, base+"/"+name, p, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

func addBytes(c *cpioWriter, name string, b []byte, perm uint32) error {
	return c.File(name, perm, int64(len(b)), bytes.NewReader(b))
}

func addFile(c *cpioWriter, name, hostPath string, perm uint32) error {
	f, err := os.Open(hostPath)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return c.File(name, perm, st.Size(), f)
}

// addTree adds the regular files, directories and symlinks under hostDir.
func addTree(c *cpioWriter, name, hostDir string) error {
	return filepath.WalkDir(hostDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		rel, _ := filepath.Rel(hostDir, p)
		dst := filepath.ToSlash(filepath.Join(name, rel))
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		switch {
		case d.IsDir():
			return c.Dir(dst, uint32(info.Mode().Perm()))
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("initramfs: %w", err)
			}
			return c.Symlink(dst, target)
		case d.Type().IsRegular():
			return addFile(c, dst, p, uint32(info.Mode().Perm()))
		}
		return nil // sockets, fifos: not test data
	})
}
