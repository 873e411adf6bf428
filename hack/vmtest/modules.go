package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// defaultModules are what the kernel-dependent tests need from a Debian
// kernel where they are modules (=m): veth for the namespace pairs, tls
// for the TCP ULP, and the AEADs kTLS asks the crypto API for: gcm(aes)
// (TLS_CIPHER_AES_GCM_128/256), ccm(aes) (AES_CCM_128) and
// rfc7539(chacha20,poly1305) (CHACHA20_POLY1305), with the accelerated
// drivers (aesni_intel, ghash_clmulni_intel, chacha_x86_64,
// poly1305_x86_64) and the generic ones as fallback. Their dependencies
// (crypto_simd, cryptd, libchacha, ...) are added from the modules'
// depends= and softdep= fields. aes, cbc, hmac and sha* are built in.
//
// The lab (e2e) adds: bridge for its fabric, and what the pods' capture
// rules (slowpath/capture: an inet table with nat chains, meta, payload,
// bitwise, counter and redir expressions, SO_ORIGINAL_DST) load:
// nf_tables, nft_chain_nat, nft_redir, with nf_nat, nf_conntrack and the
// defrag modules as their dependencies. Counter, meta, payload, bitwise
// and immediate are in nf_tables itself on 6.1. nf_tables needs
// libcrc32c, whose init asks the crypto API for crc32c (a softdep by
// alias, which the closure cannot name): crc32c_intel and crc32c_generic
// are loaded first.
var defaultModules = []string{
	"veth", "tls",
	"crc32c_intel", "crc32c_generic", "bridge", "nf_tables", "nft_chain_nat", "nft_redir", "nf_conntrack", "nf_nat",
	"gcm", "ccm", "ctr", "ghash_generic", "ghash_clmulni_intel", "aesni_intel",
	"chacha20poly1305", "chacha_generic", "chacha_x86_64", "poly1305_generic", "poly1305_x86_64",
}

// module is one loadable kernel module of the kernel package.
type module struct {
	Name    string   // normalized: '-' becomes '_'
	Rel     string   // path under lib/modules/<release>, always ending in .ko
	Depends []string // depends= (normalized names)
	Softdep []string // softdep= pre: and post: entries, as written
	Aliases []string
	Data    []byte // uncompressed
}

// moduleIndex knows every module file of a kernel package by name.
type moduleIndex struct {
	dir     string
	files   map[string]string // name -> path relative to dir, as shipped
	builtin map[string]bool
	loaded  map[string]*module
}

// normModName turns a module file or dependency name into the kernel's
// module name: no directory, no .ko[.xz|.gz|.zst], '_' for '-'.
func normModName(s string) string {
	s = filepath.Base(s)
	for _, ext := range []string{".xz", ".gz", ".zst"} {
		s = strings.TrimSuffix(s, ext)
	}
	return strings.ReplaceAll(strings.TrimSuffix(s, ".ko"), "-", "_")
}

func newModuleIndex(modDir string) (*moduleIndex, error) {
	idx := &moduleIndex{dir: modDir, files: map[string]string{}, builtin: map[string]bool{}, loaded: map[string]*module{}}
	err := filepath.WalkDir(filepath.Join(modDir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && strings.Contains(d.Name(), ".ko") {
			rel, _ := filepath.Rel(modDir, p)
			idx.files[normModName(d.Name())] = rel
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index modules in %s: %w", modDir, err)
	}
	if b, err := os.ReadFile(filepath.Join(modDir, "modules.builtin")); err == nil {
		for _, line := range strings.Fields(string(b)) {
			idx.builtin[normModName(line)] = true
		}
	}
	return idx, nil
}

// load reads and parses one module by name.
func (idx *moduleIndex) load(ctx context.Context, name string) (*module, error) {
	if m := idx.loaded[name]; m != nil {
		return m, nil
	}
	rel, ok := idx.files[name]
	if !ok {
		return nil, fmt.Errorf("module %s: not in %s", name, idx.dir)
	}
	data, err := readModule(ctx, filepath.Join(idx.dir, rel))
	if err != nil {
		return nil, err
	}
	info, err := modinfo(data)
	if err != nil {
		return nil, fmt.Errorf("module %s (%s): %w", name, rel, err)
	}
	m := &module{Name: name, Data: data, Rel: rel}
	for _, ext := range []string{".xz", ".gz", ".zst"} {
		m.Rel = strings.TrimSuffix(m.Rel, ext)
	}
	for _, kv := range info {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d != "" {
					m.Depends = append(m.Depends, normModName(d))
				}
			}
		case "softdep":
			for _, f := range strings.Fields(v) {
				if f != "pre:" && f != "post:" {
					m.Softdep = append(m.Softdep, f)
				}
			}
		case "alias":
			m.Aliases = append(m.Aliases, v)
		}
	}
	idx.loaded[name] = m
	return m, nil
}

// closure returns the modules named by roots plus everything they depend
// on (depends= and, where a module file provides it, softdep=), ordered so
// that every module comes after its dependencies. Built-in modules are
// skipped; a name that is neither a module nor built in is an error.
func (idx *moduleIndex) closure(ctx context.Context, roots []string) ([]*module, []string, error) {
	var order []*module
	var notes []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, hard bool, from string) error
	visit = func(name string, hard bool, from string) error {
		name = normModName(name)
		if idx.builtin[name] {
			return nil
		}
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle through %s", name)
		case 2:
			return nil
		}
		if _, ok := idx.files[name]; !ok {
			if hard {
				return fmt.Errorf("module %s (needed by %s): neither a module file nor built in", name, from)
			}
			notes = append(notes, fmt.Sprintf("softdep %s of %s: no such module, skipped", name, from))
			return nil
		}
		state[name] = 1
		m, err := idx.load(ctx, name)
		if err != nil {
			return err
		}
		for _, d := range m.Depends {
			if err := visit(d, true, name); err != nil {
				return err
			}
		}
		for _, d := range m.Softdep {
			if err := visit(d, false, name); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, m)
		return nil
	}
	for _, r := range roots {
		if err := visit(r, true, "the module list"); err != nil {
			return nil, nil, err
		}
	}
	return order, notes, nil
}

// modulesDep renders modules.dep for mods in the format of kmod's depmod:
// "path: dep dep ...", listing every transitive dependency, the ones to
// load last first (modprobe loads the list from its end).
func modulesDep(mods []*module) []byte {
	byName := map[string]*module{}
	for _, m := range mods {
		byName[m.Name] = m
	}
	var b bytes.Buffer
	for _, m := range mods {
		var deps []string
		seen := map[string]bool{}
		var walk func(*module)
		walk = func(x *module) {
			for _, d := range x.Depends {
				if dm := byName[d]; dm != nil && !seen[d] {
					seen[d] = true
					walk(dm)
					deps = append(deps, dm.Rel) // dependencies before dependents
				}
			}
		}
		walk(m)
		// Reverse: kmod lists the module to load last first.
		for i, j := 0, len(deps)-1; i < j; i, j = i+1, j-1 {
			deps[i], deps[j] = deps[j], deps[i]
		}
		fmt.Fprintf(&b, "%s:", m.Rel)
		for _, d := range deps {
			fmt.Fprintf(&b, " %s", d)
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// modulesAlias renders modules.alias ("alias PATTERN MODULE") for mods.
func modulesAlias(mods []*module) []byte {
	var lines []string
	for _, m := range mods {
		for _, a := range m.Aliases {
			lines = append(lines, fmt.Sprintf("alias %s %s", a, m.Name))
		}
	}
	sort.Strings(lines)
	var b bytes.Buffer
	b.WriteString("# Aliases of the modules in this initramfs, from their .modinfo (hack/vmtest).\n")
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// modinfo returns the NUL-separated key=value strings of a module's
// .modinfo section.
func modinfo(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, fmt.Errorf("not an ELF object: %w", err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("no .modinfo section")
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read .modinfo: %w", err)
	}
	var out []string
	for _, s := range bytes.Split(data, []byte{0}) {
		if len(s) > 0 {
			out = append(out, string(s))
		}
	}
	return out, nil
}

// readModule returns a module file's contents, uncompressed: Debian's
// 6.1 kernels ship plain .ko files, later ones .ko.xz. Decompressing here
// keeps busybox's modprobe in the VM on plain insmod.
func readModule(ctx context.Context, path string) ([]byte, error) {
	var tool string
	switch {
	case strings.HasSuffix(path, ".ko"):
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read module: %w", err)
		}
		return b, nil
	case strings.HasSuffix(path, ".ko.gz"):
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("read module: %w", err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("gunzip %s: %w", path, err)
		}
		b, err := io.ReadAll(zr)
		if err != nil {
			return nil, fmt.Errorf("gunzip %s: %w", path, err)
		}
		return b, nil
	case strings.HasSuffix(path, ".ko.xz"):
		tool = "xz"
	case strings.HasSuffix(path, ".ko.zst"):
		tool = "zstd"
	default:
		return nil, fmt.Errorf("module %s: unknown compression", path)
	}
	out, err := command(ctx, "", tool, "-dc", path)
	if err != nil {
		return nil, fmt.Errorf("decompress module (install %s): %w", tool, err)
	}
	return []byte(out), nil
}
