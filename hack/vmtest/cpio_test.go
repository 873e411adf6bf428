package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// cpioEntry is one parsed newc entry.
type cpioEntry struct {
	Name         string
	Mode         uint32
	Nlink        uint32
	RMaj, RMin   uint32
	Data         string
	Ino          uint32 `cmp:"-"`
	headerOffset int
}

// readCpio parses a newc archive strictly: magic, hex fields, 4-byte
// alignment of names and data, and the trailer at the end.
func readCpio(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	for {
		if off%4 != 0 {
			t.Fatalf("entry at %d not 4-byte aligned", off)
		}
		if len(b)-off < 110 || string(b[off:off+6]) != "070701" {
			t.Fatalf("no newc header at %d", off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("header at %d, field %d: %v", off, i, err)
			}
			return uint32(v)
		}
		e := cpioEntry{Ino: field(0), Mode: field(1), Nlink: field(4), RMaj: field(9), RMin: field(10), headerOffset: off}
		size, nameSize := int(field(6)), int(field(11))
		if field(2) != 0 || field(3) != 0 || field(5) != 0 {
			t.Errorf("entry at %d: uid/gid/mtime not 0", off)
		}
		name := b[off+110 : off+110+nameSize]
		if name[len(name)-1] != 0 {
			t.Fatalf("name at %d not NUL-terminated", off)
		}
		e.Name = string(name[:len(name)-1])
		off += 110 + nameSize
		off += (4 - off%4) % 4
		e.Data = string(b[off : off+size])
		off += size
		off += (4 - off%4) % 4
		if e.Name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, e)
	}
}

func TestCpioWriter(t *testing.T) {
	var buf bytes.Buffer
	c := newCpioWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Dir("bin", 0o755))
	must(c.File("/bin/busybox", 0o755, 3, strings.NewReader("abc")))
	must(c.Symlink("bin/sh", "/bin/busybox"))
	must(c.CharDev("dev/console", 0o600, 5, 1))
	must(c.File("lib/modules/6.1/kernel/net/tls/tls.ko", 0o644, 5, strings.NewReader("12345")))
	must(c.Dir("bin", 0o755)) // again: no second entry
	must(c.Close())
	got := readCpio(t, buf.Bytes())
	want := []cpioEntry{
		{Name: "bin", Mode: modeDir | 0o755, Nlink: 2},
		{Name: "bin/busybox", Mode: modeFile | 0o755, Nlink: 1, Data: "abc"},
		{Name: "bin/sh", Mode: modeSymlink | 0o777, Nlink: 1, Data: "/bin/busybox"},
		{Name: "dev", Mode: modeDir | 0o755, Nlink: 2},
		{Name: "dev/console", Mode: modeCharDev | 0o600, Nlink: 1, RMaj: 5, RMin: 1},
		{Name: "lib", Mode: modeDir | 0o755, Nlink: 2},
		{Name: "lib/modules", Mode: modeDir | 0o755, Nlink: 2},
		{Name: "lib/modules/6.1", Mode: modeDir | 0o755, Nlink: 2},
		{Name: "lib/modules/6.1/kernel", Mode: modeDir | 0o755, Nlink: 2},
		{Name: "lib/modules/6.1/kernel/net", Mode: modeDir | 0o755, Nlink: 2},
		{Name: "lib/modules/6.1/kernel/net/tls", Mode: modeDir | 0o755, Nlink: 2},
		{Name: "lib/modules/6.1/kernel/net/tls/tls.ko", Mode: modeFile | 0o644, Nlink: 1, Data: "12345"},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(cpioEntry{}), cmp.FilterPath(func(p cmp.Path) bool {
		return p.Last().String() == ".Ino" || p.Last().String() == ".headerOffset"
	}, cmp.Ignore())); diff != "" {
		t.Errorf("archive (-want +got):\n%s", diff)
	}
	inodes := map[uint32]bool{}
	for _, e := range got {
		if inodes[e.Ino] {
			t.Errorf("inode %d used twice", e.Ino)
		}
		inodes[e.Ino] = true
	}
	if err := newCpioWriter(&buf).File("x", 0, 10, strings.NewReader("short")); err == nil {
		t.Error("a short reader gave no error")
	}
	d := newCpioWriter(&buf)
	d.File("x", 0, 0, strings.NewReader(""))
	if err := d.Symlink("x", "y"); err == nil {
		t.Error("a duplicate entry gave no error")
	}
}

// TestCpioBusybox extracts an archive with busybox cpio, an independent
// reader of the format.
func TestCpioBusybox(t *testing.T) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("no busybox")
	}
	var buf bytes.Buffer
	c := newCpioWriter(&buf)
	files := map[string]string{"init": "#!/bin/sh\n", "tests/a/a.test": strings.Repeat("x", 1001), "tests/a/testdata/in.txt": "in"}
	for _, name := range []string{"init", "tests/a/a.test", "tests/a/testdata/in.txt"} {
		if err := c.File(name, 0o755, int64(len(files[name])), strings.NewReader(files[name])); err != nil {
			t.Fatal(err)
		}
	}
	c.Symlink("bin/sh", "/bin/busybox")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(bb, "cpio", "-i", "-d")
	cmd.Dir, cmd.Stdin = dir, &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("busybox cpio -i: %v: %s", err, out)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != want {
			t.Errorf("%s: %d bytes, %v; want %d bytes", name, len(got), err, len(want))
		}
	}
	if target, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || target != "/bin/busybox" {
		t.Errorf("bin/sh -> %q, %v", target, err)
	}
}
