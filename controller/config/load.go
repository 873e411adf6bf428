package config

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// LoadDir decodes every .yaml, .yml and .json file under dir (recursively,
// in path order; dotfiles, dot-directories, editor backups ending in ~
// and .swp files skipped) into one Snapshot sorted by group, kind,
// namespace and name.
//
// The error joins every *DecodeError of every file (see DecodeFile). Two
// objects with the same group, kind, namespace and name (in any served
// version) are a *DecodeError naming both sources; the snapshot keeps the
// first, in path order. The error wraps ErrUnusable when dir is missing,
// is not a directory or cannot be read, when a file cannot be read, and
// when no file under dir holds YAML at all; an empty directory is an
// empty mesh, not an error. The snapshot holds the good resources even
// when there are errors (it is nil only when dir cannot be walked).
func LoadDir(dir string) (*Snapshot, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnusable, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory", ErrUnusable, dir)
	}
	var files []string
	others := 0
	// A trailing separator makes WalkDir follow a root that is a symlink
	// (a ConfigMap mount is one).
	root := strings.TrimSuffix(dir, string(filepath.Separator)) + string(filepath.Separator)
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if p != root && (strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~") || strings.HasSuffix(name, ".swp")) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case d.IsDir():
		case strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml") || strings.HasSuffix(name, ".json"):
			files = append(files, filepath.Clean(p))
		default:
			others++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnusable, err)
	}
	snap := &Snapshot{}
	var errs []error
	docs, yamlDocs := 0, 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: %w", ErrUnusable, err))
			continue
		}
		res, sk, err := DecodeFile(f, b)
		snap.Resources = append(snap.Resources, res...)
		snap.Skipped = append(snap.Skipped, sk...)
		docs += len(res) + len(sk)
		if err != nil {
			errs = append(errs, err)
			if !notYAMLOnly(err) {
				yamlDocs++
			}
		}
	}
	sortResources(snap.Resources)
	sortResources(snap.Skipped)
	// Keep the first of two objects with one identity (in file order: the
	// sort is stable), so the snapshot never holds both.
	kept := snap.Resources[:0]
	for _, r := range snap.Resources {
		if n := len(kept); n > 0 && sameObject(kept[n-1], r) {
			a := kept[n-1]
			errs = append(errs, &DecodeError{Source: r.Source, Kind: r.GVK.Kind, Namespace: r.Namespace, Name: r.Name,
				Err: fmt.Errorf("duplicate %s: already defined in %s", r.Key(), a.Source)})
			continue
		}
		kept = append(kept, r)
	}
	snap.Resources = kept
	// An empty directory is an empty mesh; a directory whose files are
	// none of them YAML is a wrong path.
	if docs == 0 && yamlDocs == 0 && (others > 0 || len(errs) > 0) {
		errs = append(errs, fmt.Errorf("%w: no file under %s holds YAML (want .yaml, .yml or .json files of Kubernetes objects)", ErrUnusable, dir))
	}
	return snap, errors.Join(errs...)
}

// notYAMLOnly says whether every error in err is a document that is not
// YAML at all.
func notYAMLOnly(err error) bool {
	var des []*DecodeError
	collect(err, &des)
	for _, d := range des {
		if d.Kind != "" {
			return false
		}
	}
	return len(des) > 0
}

func collect(err error, out *[]*DecodeError) {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			collect(e, out)
		}
		return
	}
	var d *DecodeError
	if errors.As(err, &d) {
		*out = append(*out, d)
	}
}

// sameObject says whether a and b are the same object: same group, kind,
// namespace and name, whatever the version.
func sameObject(a, b Resource) bool {
	return a.GVK.GroupKind() == b.GVK.GroupKind() && a.Namespace == b.Namespace && a.Name == b.Name
}

// sortResources sorts by group, kind, namespace and name, keeping the
// order of equal ones.
func sortResources(rs []Resource) {
	slices.SortStableFunc(rs, func(a, b Resource) int {
		return cmp.Or(
			cmp.Compare(a.GVK.Group, b.GVK.Group),
			cmp.Compare(a.GVK.Kind, b.GVK.Kind),
			cmp.Compare(a.Namespace, b.Namespace),
			cmp.Compare(a.Name, b.Name))
	})
}
