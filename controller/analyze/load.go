package analyze

import (
	"errors"

	"github.com/fibmesh/fibmesh/controller/config"
)

// Loaded returns the findings on what config.LoadDir (or a loader like
// it) returned: every decode error in err as a SchemaValidationError
// (IST0106) finding, see FromDecodeErrors, beside Analyze's findings on
// snap, all sorted.
//
// It returns err itself, and no findings, when nothing could be
// analyzed: err wraps config.ErrUnusable (an unreadable path, nothing
// that is YAML), or err holds no decode error, so what was read is not
// known.
func Loaded(snap *config.Snapshot, err error) ([]Finding, error) {
	if errors.Is(err, config.ErrUnusable) {
		return nil, err
	}
	findings := FromDecodeErrors(err)
	if err != nil && len(findings) == 0 {
		return nil, err
	}
	return sortFindings(append(findings, Analyze(snap)...)), nil
}

// Dir returns the findings on the manifests in dir, read as the
// controller reads them: Loaded(config.LoadDir(dir)).
func Dir(dir string) ([]Finding, error) {
	return Loaded(config.LoadDir(dir))
}
