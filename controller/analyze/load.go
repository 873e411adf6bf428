package analyze

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/fibmesh/fibmesh/controller/config"
)

// Loaded returns the findings on what config.LoadDir (or a loader like
// it) returned: every decode error in err as a SchemaValidationError
// (IST0106) finding, see FromDecodeErrors, beside Analyze's findings on
// snap, all sorted.
//
// It returns err itself, and no findings, when nothing could be
// analyzed: a path could not be read (err holds an *fs.PathError or a
// *config.DecodeError wrapping config.ErrUnusable), err wraps
// config.ErrUnusable and holds no decode error (nothing is YAML), or
// err holds no decode error at all, so what was read is not known.
//
// A directory whose only YAML files are broken (not YAML at all: an
// alias bomb, nesting too deep, binary garbage) makes LoadDir add "no
// file holds YAML" (config.ErrUnusable) to those files' errors; the
// files were meant as manifests, so Loaded reports their errors as
// IST0106 findings instead of calling the input unusable.
func Loaded(snap *config.Snapshot, err error) ([]Finding, error) {
	findings := FromDecodeErrors(err)
	if errors.Is(err, config.ErrUnusable) {
		var pe *fs.PathError
		if errors.As(err, &pe) || unreadable(err) || len(findings) == 0 {
			return nil, err
		}
	}
	if err != nil && len(findings) == 0 {
		return nil, err
	}
	return sortFindings(append(findings, Analyze(snap)...)), nil
}

// unreadable reports whether err holds a *config.DecodeError whose cause
// is config.ErrUnusable (a source that could not be read).
func unreadable(err error) bool {
	switch e := err.(type) {
	case *config.DecodeError:
		return errors.Is(e.Err, config.ErrUnusable)
	case interface{ Unwrap() []error }:
		for _, e := range e.Unwrap() {
			if unreadable(e) {
				return true
			}
		}
	case interface{ Unwrap() error }:
		return unreadable(e.Unwrap())
	}
	return false
}

// Dir returns the findings on the manifests in dir, read as the
// controller reads them: Loaded(config.LoadDir(dir)).
func Dir(dir string) ([]Finding, error) {
	return Loaded(config.LoadDir(dir))
}

// LoadPath reads path as `istioctl analyze -f` does: a directory with
// config.LoadDir, anything else as one file of YAML (or JSON) documents
// with config.DecodeFile, whatever its name. An unreadable path is an
// error wrapping config.ErrUnusable; a file that holds no YAML at all
// yields its *config.DecodeError, which Loaded reports as IST0106.
func LoadPath(path string) (*config.Snapshot, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", config.ErrUnusable, err)
	}
	if st.IsDir() {
		return config.LoadDir(path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", config.ErrUnusable, err)
	}
	res, skipped, err := config.DecodeFile(path, b)
	return &config.Snapshot{Resources: res, Skipped: skipped}, err
}

// LoadPaths reads each path with load (LoadPath, or a stand-in in tests)
// and joins what they hold into one snapshot. As within one directory,
// an object defined twice (same group, kind, namespace and name, in any
// version) is a *config.DecodeError naming both sources, and the first,
// in the order of paths and documents, is kept. The error joins every
// path's error; the snapshot is nil only when a path could not be read
// at all.
func LoadPaths(paths []string, load func(string) (*config.Snapshot, error)) (*config.Snapshot, error) {
	snap := &config.Snapshot{}
	var errs []error
	for _, p := range paths {
		s, err := load(p)
		if err != nil {
			errs = append(errs, err)
		}
		if s == nil {
			return nil, errors.Join(errs...)
		}
		snap.Resources = append(snap.Resources, s.Resources...)
		snap.Skipped = append(snap.Skipped, s.Skipped...)
	}
	type identity struct{ group, kind, namespace, name string }
	first := map[identity]config.Resource{}
	kept := snap.Resources[:0]
	for _, r := range snap.Resources {
		id := identity{r.GVK.Group, r.GVK.Kind, r.Namespace, r.Name}
		if a, ok := first[id]; ok {
			errs = append(errs, &config.DecodeError{Source: r.Source, Kind: r.GVK.Kind, Namespace: r.Namespace, Name: r.Name,
				Err: fmt.Errorf("duplicate %s: already defined in %s", r.Key(), a.Source)})
			continue
		}
		first[id] = r
		kept = append(kept, r)
	}
	snap.Resources = kept
	return snap, errors.Join(errs...)
}
