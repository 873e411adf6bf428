package analyze

import (
	"errors"
	"io/fs"

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
