package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeKO returns a minimal relocatable ELF64 object whose .modinfo holds
// the given key=value strings, as a kernel module's does.
func fakeKO(t *testing.T, info ...string) []byte {
	t.Helper()
	modinfo := []byte(strings.Join(info, "\x00") + "\x00")
	shstrtab := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	shoff := ehsize + len(modinfo) + len(shstrtab)
	var b bytes.Buffer
	hdr := elf.Header64{
		Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Shoff: uint64(shoff), Ehsize: ehsize, Shentsize: shentsize, Shnum: 3, Shstrndx: 2,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS], hdr.Ident[elf.EI_DATA], hdr.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	binary.Write(&b, binary.LittleEndian, hdr)
	b.Write(modinfo)
	b.Write(shstrtab)
	binary.Write(&b, binary.LittleEndian, elf.Section64{}) // SHN_UNDEF
	binary.Write(&b, binary.LittleEndian, elf.Section64{Name: 1, Type: uint32(elf.SHT_PROGBITS), Off: ehsize, Size: uint64(len(modinfo)), Addralign: 1})
	binary.Write(&b, binary.LittleEndian, elf.Section64{Name: 10, Type: uint32(elf.SHT_STRTAB), Off: uint64(ehsize + len(modinfo)), Size: uint64(len(shstrtab)), Addralign: 1})
	return b.Bytes()
}

func TestModinfo(t *testing.T) {
	got, err := modinfo(fakeKO(t, "alias=tcp-ulp-tls", "depends=", "name=tls"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"alias=tcp-ulp-tls", "depends=", "name=tls"}, got); diff != "" {
		t.Errorf("modinfo (-want +got):\n%s", diff)
	}
	if _, err := modinfo([]byte("not elf")); err == nil {
		t.Error("no error for a non-ELF file")
	}
}

func TestNormModName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/arch/x86/crypto/aesni-intel.ko": "aesni_intel",
		"chacha-x86_64.ko.xz":                   "chacha_x86_64",
		"veth.ko.zst":                           "veth",
		"crypto_simd":                           "crypto_simd",
		"ghash-clmulni-intel":                   "ghash_clmulni_intel",
	} {
		if got := normModName(in); got != want {
			t.Errorf("normModName(%q) = %q, want %q", in, got, want)
		}
	}
}

// fakeModDir writes a lib/modules/<release> tree of fake modules.
func fakeModDir(t *testing.T, mods map[string][]string, builtin ...string) string {
	t.Helper()
	dir := t.TempDir()
	for rel, info := range mods {
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		data := fakeKO(t, info...)
		if strings.HasSuffix(rel, ".gz") {
			var z bytes.Buffer
			w := gzip.NewWriter(&z)
			w.Write(data)
			w.Close()
			data = z.Bytes()
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte(strings.Join(builtin, "\n")+"\n"), 0o644)
	return dir
}

func TestClosure(t *testing.T) {
	dir := fakeModDir(t, map[string][]string{
		"kernel/arch/x86/crypto/aesni-intel.ko": {"alias=crypto-aes", "depends=crypto_simd", "name=aesni_intel"},
		"kernel/crypto/crypto_simd.ko":          {"depends=cryptd", "name=crypto_simd"},
		"kernel/crypto/cryptd.ko.gz":            {"depends=", "name=cryptd"},
		"kernel/crypto/gcm.ko":                  {"alias=crypto-gcm", "depends=", "softdep=pre: ctr ghash post: nothere", "name=gcm"},
		"kernel/crypto/ctr.ko":                  {"alias=crypto-ctr", "depends=", "name=ctr"},
		"kernel/net/tls/tls.ko":                 {"alias=tcp-ulp-tls", "alias=tls", "depends=", "name=tls"},
		"kernel/bad/needs-missing.ko":           {"depends=gone", "name=needs_missing"},
	}, "kernel/crypto/ghash.ko", "kernel/crypto/aes_generic.ko")
	idx, err := newModuleIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	mods, notes, err := idx.closure(context.Background(), []string{"tls", "aesni-intel", "gcm", "aes_generic", "crypto_simd"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range mods {
		names = append(names, m.Name)
	}
	// Dependencies first; built-ins (ghash, aes_generic) left out.
	if diff := cmp.Diff([]string{"tls", "cryptd", "crypto_simd", "aesni_intel", "ctr", "gcm"}, names); diff != "" {
		t.Errorf("closure (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"softdep nothere of gcm: no such module, skipped"}, notes); diff != "" {
		t.Errorf("notes (-want +got):\n%s", diff)
	}
	if mods[1].Rel != "kernel/crypto/cryptd.ko" || !bytes.HasPrefix(mods[1].Data, []byte(elf.ELFMAG)) {
		t.Errorf("cryptd: Rel %q, data not the uncompressed module", mods[1].Rel)
	}
	wantDep := `kernel/net/tls/tls.ko:
kernel/crypto/cryptd.ko:
kernel/crypto/crypto_simd.ko: kernel/crypto/cryptd.ko
kernel/arch/x86/crypto/aesni-intel.ko: kernel/crypto/crypto_simd.ko kernel/crypto/cryptd.ko
kernel/crypto/ctr.ko:
kernel/crypto/gcm.ko:
`
	if diff := cmp.Diff(wantDep, string(modulesDep(mods))); diff != "" {
		t.Errorf("modules.dep (-want +got):\n%s", diff)
	}
	alias := string(modulesAlias(mods))
	for _, want := range []string{"alias tcp-ulp-tls tls\n", "alias crypto-aes aesni_intel\n", "alias crypto-gcm gcm\n"} {
		if !strings.Contains(alias, want) {
			t.Errorf("modules.alias lacks %q:\n%s", want, alias)
		}
	}
	if _, _, err := idx.closure(context.Background(), []string{"needs_missing"}); err == nil || !strings.Contains(err.Error(), "gone (needed by needs_missing)") {
		t.Errorf("missing dependency: %v", err)
	}
	if _, _, err := idx.closure(context.Background(), []string{"nosuch"}); err == nil {
		t.Error("an unknown module gave no error")
	}
}

// TestDebianKernelModules checks the default module list against the
// cached Debian kernel, when a make vmtest run has fetched one.
func TestDebianKernelModules(t *testing.T) {
	cache, _ := os.UserCacheDir()
	k, err := newestCached(filepath.Join(cache, "fibmesh", "vmtest"))
	if err != nil {
		t.Skipf("no cached kernel (make vmtest fetches one): %v", err)
	}
	idx, err := newModuleIndex(k.ModDir)
	if err != nil {
		t.Fatal(err)
	}
	mods, _, err := idx.closure(context.Background(), defaultModules)
	if err != nil {
		t.Fatalf("%s: %v", k.Release, err)
	}
	have := map[string]bool{}
	for _, m := range mods {
		have[m.Name] = true
	}
	for _, want := range []string{"tls", "veth", "gcm", "ccm", "chacha20poly1305", "aesni_intel", "crypto_simd", "cryptd", "bridge", "stp", "llc", "nf_tables", "nft_chain_nat", "nft_redir", "nf_nat", "nf_conntrack", "nf_defrag_ipv4", "nf_defrag_ipv6"} {
		if !have[want] && !idx.builtin[want] {
			t.Errorf("%s: %s neither in the closure nor built in", k.Release, want)
		}
	}
}
