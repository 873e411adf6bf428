// Package file is the config store that reads a directory tree of
// multi-document YAML (config.LoadDir) and watches it for changes with
// inotify (fsnotify), subdirectories included, also those created later.
//
// Every change is followed by a reload of the whole tree, once the tree
// has been quiet for a debounce interval: editors that save by writing a
// temporary file and renaming it over the original, that rename the
// original to a backup first (vim), or that remove and recreate the file,
// all end in a reload of the final content. A reload that fails (a broken
// document, a directory that went away) publishes the error together with
// the last good snapshot, which stays in force; the next good reload
// supersedes it.
package file

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/controller/store"
)

// Defaults for Options.
const (
	// DefaultDebounce is long enough to cover an editor's save sequence
	// (write temporary file, fsync, rename), which takes a few
	// milliseconds, and short enough that a user sees the change applied
	// at once.
	DefaultDebounce = 100 * time.Millisecond
	// DefaultRetry is how often a directory that is gone is looked for.
	DefaultRetry = time.Second
)

// Options tune a Store. The zero value gives the defaults.
type Options struct {
	// Debounce is how long the tree must be quiet after an event before
	// it is reloaded. Default DefaultDebounce.
	Debounce time.Duration
	// MaxDelay bounds how long a reload can be put off by a tree that is
	// never quiet (a log file written in it, say). Default 10 × Debounce.
	MaxDelay time.Duration
	// Retry is how often the store looks for the directory again once it
	// is gone (there is nothing left to watch). Default DefaultRetry.
	Retry time.Duration
}

// Store watches a directory tree. It implements store.Store.
type Store struct {
	dir  string
	opts Options
	pub  *store.Publisher

	// Only Run's goroutine uses these.
	good    *config.Snapshot // the last good snapshot
	goodSum [sha256.Size]byte
	goodOK  bool // goodSum is valid
}

var _ store.Store = (*Store)(nil)

// New returns a Store for the tree rooted at dir. Nothing is read until
// Run. A relative dir is made absolute first, so the paths the store
// watches, and the files its resources name, do not depend on the working
// directory later.
func New(dir string, opts Options) *Store {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = 10 * opts.Debounce
	}
	if opts.MaxDelay < opts.Debounce {
		opts.MaxDelay = opts.Debounce
	}
	if opts.Retry <= 0 {
		opts.Retry = DefaultRetry
	}
	return &Store{
		dir:  filepath.Clean(dir),
		opts: opts,
		pub:  store.NewPublisher(),
	}
}

// Open is New for a dir that must be a directory now: it returns an
// error naming dir, as "DIR: not a readable directory: ...", when it is
// missing, unreadable or not a directory. (New accepts a dir that appears
// later: Run keeps looking for it.)
func Open(dir string, opts Options) (*Store, error) {
	fi, err := os.Stat(dir)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s: not a readable directory: %w", dir, err)
	case !fi.IsDir():
		return nil, fmt.Errorf("%s: not a readable directory: it is a file", dir)
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: not a readable directory: %w", dir, err)
	}
	defer f.Close()
	if _, err := f.ReadDir(1); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: not a readable directory: %w", dir, err)
	}
	return New(dir, opts), nil
}

// Updates implements store.Store.
func (s *Store) Updates() <-chan store.Update { return s.pub.Updates() }

// Run implements store.Store. It returns an error at once if dir is not a
// directory that can be watched; the first Update (a snapshot, or the
// decode errors with a nil snapshot) is published before Run starts
// waiting for changes. Later the directory may go away and come back:
// that is an error Update and then, once it is back, a reload.
func (s *Store) Run(ctx context.Context) error {
	defer s.pub.Close()

	fi, err := os.Stat(s.dir)
	if err != nil {
		return fmt.Errorf("config directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("config directory %s: not a directory", s.dir)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", s.dir, err)
	}
	defer w.Close()
	if err := s.watchTree(w); err != nil {
		return err
	}
	s.reload(w)

	// quiet fires Debounce after the last event, deadline MaxDelay after
	// the first one since the last reload; both are stopped while no
	// reload is pending. retry looks for a root that is gone.
	quiet, deadline := stoppedTimer(), stoppedTimer()
	defer quiet.Stop()
	defer deadline.Stop()
	retry := time.NewTicker(s.opts.Retry)
	defer retry.Stop()
	pending := false

	kick := func() {
		quiet.Reset(s.opts.Debounce)
		if !pending {
			pending = true
			deadline.Reset(s.opts.MaxDelay)
		}
	}
	fire := func() {
		pending = false
		quiet.Stop()
		deadline.Stop()
		s.reload(w)
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			// Every event means the same: something changed, reload
			// the tree. Which file it names only matters for watches.
			if !ok {
				return nil
			}
			if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
				unwatch(w, ev.Name)
			}
			kick()
		case _, ok := <-w.Errors:
			// An overflow (fsnotify.ErrEventOverflow) lost events,
			// and other errors may have too: a reload reads the truth.
			if !ok {
				return nil
			}
			kick()
		case <-quiet.C:
			fire()
		case <-deadline.C:
			fire()
		case <-retry.C:
			// Only needed while the root is not watched: it is gone
			// (or was replaced), so no event would tell us it is back.
			if !pending && !s.rootWatched(w) {
				fire()
			}
		}
	}
}

func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// reload brings the watches up to date with the tree, then loads it and
// publishes the result. The order matters: whatever changes after a
// directory's watch is added causes another event, and whatever changed
// before is read by the load.
func (s *Store) reload(w *fsnotify.Watcher) {
	if err := s.watchTree(w); err != nil {
		s.pub.Publish(store.Update{Snapshot: s.good, Err: err})
		return
	}
	snap, err := config.LoadDir(s.dir)
	if err != nil {
		s.pub.Publish(store.Update{Snapshot: s.good, Err: err})
		return
	}
	sum, err := fingerprint(snap)
	if err == nil && s.goodOK && sum == s.goodSum {
		// Nothing the store reports changed (an editor's swap file
		// came and went): keep the older snapshot, which the
		// Publisher recognises as no news.
		snap = s.good
	}
	s.good, s.goodSum, s.goodOK = snap, sum, err == nil
	s.pub.Publish(store.Update{Snapshot: snap})
}

// fingerprint hashes what a snapshot says. It reads only snap's objects,
// which nobody else has seen yet: hashing a published snapshot could race
// with its reader.
func fingerprint(snap *config.Snapshot) ([sha256.Size]byte, error) {
	h := sha256.New()
	enc := json.NewEncoder(h)
	for _, list := range [][]config.Resource{snap.Resources, snap.Skipped} {
		if err := enc.Encode(len(list)); err != nil {
			return [sha256.Size]byte{}, err
		}
		for _, r := range list {
			if err := enc.Encode(r); err != nil {
				return [sha256.Size]byte{}, err
			}
		}
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum, nil
}

// watchTree adds a watch on every directory of the tree that has none.
// fsnotify drops the watches of directories that are removed or renamed,
// so re-adding by path after every change keeps the set right: a
// directory renamed within the tree is watched under its new name. A
// directory that disappears during the walk is skipped: the load that
// follows sees the tree as it is. The root may be a symbolic link to a
// directory; links below it are not followed.
func (s *Store) watchTree(w *fsnotify.Watcher) error {
	watched := make(map[string]bool)
	for _, p := range w.WatchList() {
		watched[p] = true
	}
	if !watched[s.dir] {
		if err := w.Add(s.dir); err != nil {
			return fmt.Errorf("watch config directory %s: %w", s.dir, err)
		}
	}
	// The trailing separator makes WalkDir resolve a root that is a link.
	root := s.dir + string(filepath.Separator)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if path == root {
			return err
		}
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() || watched[path] {
			return nil
		}
		if err := w.Add(path); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fs.SkipDir
			}
			return fmt.Errorf("watch %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("config directory: %w", err)
	}
	return nil
}

// unwatch removes the watches on path and every directory below it. When
// a directory is renamed or removed, fsnotify drops its own watch but not
// those of its subdirectories, which keep their old names and would
// follow the moved directories, or shadow new directories that reuse the
// names. The next watchTree adds back whatever still exists.
func unwatch(w *fsnotify.Watcher, path string) {
	prefix := path + string(filepath.Separator)
	for _, p := range w.WatchList() {
		if p == path || strings.HasPrefix(p, prefix) {
			_ = w.Remove(p) // it may be gone already; either way it is
		}
	}
}

// rootWatched reports whether the root directory has a watch. It has none
// once it was removed or renamed away.
func (s *Store) rootWatched(w *fsnotify.Watcher) bool {
	for _, p := range w.WatchList() {
		if p == s.dir {
			return true
		}
	}
	return false
}
