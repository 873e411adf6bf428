package main

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"strings"
)

// cpio "newc" mode bits (the st_mode file type bits of Linux).
const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000
	modeCharDev = 0o020000
)

// cpioWriter writes a cpio archive in the "newc" format (magic 070701),
// the format the kernel unpacks as an initramfs
// (Documentation/driver-api/early-userspace/buffer-format.rst).
//
// Every entry gets a fresh inode number, uid and gid 0, mtime 0 (so the
// archive is reproducible), and parent directories are added on demand,
// mode 0755, before the first entry inside them. Names are relative to the
// archive root, without a leading slash. Close writes the trailer; the
// writer does not close the underlying io.Writer.
type cpioWriter struct {
	w    *bufio.Writer
	ino  uint32
	seen map[string]bool
	err  error
}

func newCpioWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriterSize(w, 1<<20), ino: 1, seen: map[string]bool{".": true, "": true}}
}

// Dir adds a directory (and its parents).
func (c *cpioWriter) Dir(name string, perm uint32) error {
	name = cleanName(name)
	if c.seen[name] {
		return nil
	}
	if err := c.parents(name); err != nil {
		return err
	}
	c.seen[name] = true
	return c.header(name, modeDir|perm&0o7777, 2, 0, 0, 0)
}

// File adds a regular file of size bytes read from r.
func (c *cpioWriter) File(name string, perm uint32, size int64, r io.Reader) error {
	name = cleanName(name)
	if err := c.claim(name); err != nil {
		return err
	}
	if err := c.header(name, modeFile|perm&0o7777, 1, size, 0, 0); err != nil {
		return err
	}
	n, err := io.CopyN(c.w, r, size)
	if err != nil {
		c.err = fmt.Errorf("cpio: %s: wrote %d of %d bytes: %w", name, n, size, err)
		return c.err
	}
	return c.pad(size)
}

// Symlink adds a symbolic link name pointing at target.
func (c *cpioWriter) Symlink(name, target string) error {
	name = cleanName(name)
	if err := c.claim(name); err != nil {
		return err
	}
	if err := c.header(name, modeSymlink|0o777, 1, int64(len(target)), 0, 0); err != nil {
		return err
	}
	if _, err := c.w.WriteString(target); err != nil {
		c.err = fmt.Errorf("cpio: %s: %w", name, err)
		return c.err
	}
	return c.pad(int64(len(target)))
}

// CharDev adds a character device node.
func (c *cpioWriter) CharDev(name string, perm uint32, major, minor uint32) error {
	name = cleanName(name)
	if err := c.claim(name); err != nil {
		return err
	}
	return c.header(name, modeCharDev|perm&0o7777, 1, 0, major, minor)
}

// Close writes the trailer entry and flushes.
func (c *cpioWriter) Close() error {
	if c.err != nil {
		return c.err
	}
	if err := c.header("TRAILER!!!", 0, 1, 0, 0, 0); err != nil {
		return err
	}
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("cpio: flush: %w", err)
	}
	return nil
}

func cleanName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// claim records a non-directory entry, rejecting duplicates (the kernel
// would silently let the later one win).
func (c *cpioWriter) claim(name string) error {
	if c.err != nil {
		return c.err
	}
	if name == "" || c.seen[name] {
		return fmt.Errorf("cpio: duplicate or empty entry %q", name)
	}
	if err := c.parents(name); err != nil {
		return err
	}
	c.seen[name] = true
	return nil
}

func (c *cpioWriter) parents(name string) error {
	if dir := path.Dir(name); !c.seen[dir] {
		return c.Dir(dir, 0o755)
	}
	return nil
}

func (c *cpioWriter) header(name string, mode uint32, nlink uint32, size int64, rmaj, rmin uint32) error {
	if c.err != nil {
		return c.err
	}
	if size < 0 || size > 0xffffffff {
		c.err = fmt.Errorf("cpio: %s: size %d does not fit newc's 32-bit field", name, size)
		return c.err
	}
	ino := c.ino
	c.ino++
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize (with the NUL), check.
	_, err := fmt.Fprintf(c.w, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%s\x00",
		ino, mode, 0, 0, nlink, 0, size, 0, 0, rmaj, rmin, len(name)+1, 0, name)
	if err != nil {
		c.err = fmt.Errorf("cpio: %s: %w", name, err)
		return c.err
	}
	return c.pad(int64(110 + len(name) + 1))
}

// pad writes zeros up to the next multiple of 4 bytes after n bytes.
func (c *cpioWriter) pad(n int64) error {
	if p := (4 - n%4) % 4; p > 0 {
		if _, err := c.w.Write(make([]byte, p)); err != nil {
			c.err = fmt.Errorf("cpio: pad: %w", err)
			return c.err
		}
	}
	return nil
}
