package cniconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Extensions are the file name extensions of network configurations, as
// libcni (containerd, CRI-O) reads them.
var Extensions = []string{".conf", ".conflist", ".json"}

// ErrNoConfig is wrapped by Primary's error when the directory holds no
// network configuration.
var ErrNoConfig = errors.New("no CNI network configuration")

// Primary returns the network configuration the runtime uses in dir: the
// lexically first file with one of Extensions (libcni's ConfFiles order,
// which containerd and CRI-O take the first of).
func Primary(dir string) (string, error) {
	files, err := ConfFiles(dir)
	if err != nil {
		return "", err
	}
	if len(files) == 0 {
		return "", fmt.Errorf("%w in %s (no *.conflist, *.conf or *.json): the cluster's primary CNI plugin (Calico, Cilium, flannel, bridge...) writes one there; fibmesh-cni chains after it, install it first", ErrNoConfig, dir)
	}
	return files[0], nil
}

// ConfFiles lists dir's network configurations, sorted.
func ConfFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("CNI configuration directory: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if slices.Contains(Extensions, filepath.Ext(e.Name())) {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	slices.Sort(out)
	return out, nil
}

// List is a network configuration list, kept as raw JSON so that what
// fibmesh does not edit is written back as it was.
type List struct {
	// Fields are the list's top-level fields but "plugins".
	Fields map[string]json.RawMessage
	// Plugins are the chained plugins' entries, in order.
	Plugins []json.RawMessage
	// FromConf is true when the file was a single network configuration
	// (.conf, or .json without "plugins") made into a list.
	FromConf bool
}

// ParseList reads a network configuration file's content: a conflist, or a
// single plugin's configuration, made into a list of one (as libcni's
// ConfListFromConf does).
func ParseList(b []byte) (*List, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if fields == nil {
		return nil, errors.New("not a JSON object (null)")
	}
	raw, ok := fields["plugins"]
	if !ok {
		var single struct {
			CNIVersion string `json:"cniVersion"`
			Name       string `json:"name"`
			Type       string `json:"type"`
		}
		if err := json.Unmarshal(b, &single); err != nil {
			return nil, fmt.Errorf("network configuration: %w", err)
		}
		if single.Type == "" {
			return nil, errors.New(`neither a conflist ("plugins") nor a plugin's configuration ("type")`)
		}
		l := &List{Fields: map[string]json.RawMessage{}, Plugins: []json.RawMessage{compact(b)}, FromConf: true}
		l.Fields["cniVersion"], _ = json.Marshal(single.CNIVersion)
		l.Fields["name"], _ = json.Marshal(single.Name)
		return l, nil
	}
	delete(fields, "plugins")
	var plugins []json.RawMessage
	if err := json.Unmarshal(raw, &plugins); err != nil {
		return nil, fmt.Errorf("plugins: %w", err)
	}
	for i, p := range plugins {
		var typ struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(p, &typ); err != nil || typ.Type == "" {
			return nil, fmt.Errorf(`plugins[%d]: want an object with a "type"`, i)
		}
	}
	return &List{Fields: fields, Plugins: plugins}, nil
}

func compact(b []byte) json.RawMessage {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return b
	}
	return buf.Bytes()
}

// isOurs reports whether a plugin entry is fibmesh-cni's.
func isOurs(p json.RawMessage) bool {
	var t struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(p, &t) == nil && t.Type == PluginType
}

// Has reports whether the list holds fibmesh-cni's entry.
func (l *List) Has() bool { return slices.ContainsFunc(l.Plugins, isOurs) }

// Insert makes entry the list's last plugin, removing any other entry of
// fibmesh-cni's; it reports whether the list changed (false when entry was
// already last, as written: inserting is idempotent).
func (l *List) Insert(s Settings) (bool, error) {
	s.Type = PluginType
	if err := s.Validate(); err != nil {
		return false, err
	}
	entry, err := json.Marshal(s)
	if err != nil {
		return false, err
	}
	n := len(l.Plugins)
	if n > 0 && isOurs(l.Plugins[n-1]) && jsonEqual(l.Plugins[n-1], entry) && slices.IndexFunc(l.Plugins, isOurs) == n-1 {
		return false, nil
	}
	l.Plugins = append(slices.DeleteFunc(l.Plugins, isOurs), entry)
	return true, nil
}

// Remove takes fibmesh-cni's entries out; it reports whether there were any.
func (l *List) Remove() bool {
	n := len(l.Plugins)
	l.Plugins = slices.DeleteFunc(l.Plugins, isOurs)
	return len(l.Plugins) != n
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

// Marshal returns the list as an indented conflist.
func (l *List) Marshal() ([]byte, error) {
	m := make(map[string]json.RawMessage, len(l.Fields)+1)
	for k, v := range l.Fields {
		m[k] = v
	}
	plugins := l.Plugins
	if plugins == nil {
		plugins = []json.RawMessage{}
	}
	raw, err := json.Marshal(plugins)
	if err != nil {
		return nil, err
	}
	m["plugins"] = raw
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// ListPath is where a configuration file's list is written: path itself
// for a conflist, NAME.conflist for NAME.conf or NAME.json holding a single
// plugin's configuration.
func ListPath(path string, l *List) string {
	if !l.FromConf {
		return path
	}
	return strings.TrimSuffix(path, filepath.Ext(path)) + ".conflist"
}

// ReadList reads and parses the configuration file at path.
func ReadList(path string) (*List, os.FileMode, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, fmt.Errorf("CNI configuration: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, 0, fmt.Errorf("CNI configuration: %w", err)
	}
	l, err := ParseList(b)
	if err != nil {
		return nil, 0, fmt.Errorf("CNI configuration %s: %w", path, err)
	}
	return l, fi.Mode().Perm(), nil
}

// WriteFile writes data to path atomically: a temporary file in the same
// directory whose name no runtime reads (a dot, no configuration
// extension), synced, renamed in place.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".fibmesh-cni-*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // no-op after the rename
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// InsertResult says what Insert did.
type InsertResult struct {
	// Path is the primary list that holds the entry now.
	Path string
	// Changed is true when a file was written.
	Changed bool
	// Converted is the single-plugin file made into Path (removed).
	Converted string
	// RemovedFrom are other files the entry was taken out of (an earlier
	// primary).
	RemovedFrom []string
}

// Insert puts s last into dir's primary network configuration (a single
// plugin's .conf is made into a .conflist of the same base name, and the
// .conf removed), and takes fibmesh-cni's entry out of every other file in
// dir. Files are written atomically and only when they change.
func Insert(dir string, s Settings) (InsertResult, error) {
	var res InsertResult
	path, err := Primary(dir)
	if err != nil {
		return res, err
	}
	l, perm, err := ReadList(path)
	if err != nil {
		return res, err
	}
	changed, err := l.Insert(s)
	if err != nil {
		return res, err
	}
	res.Path = ListPath(path, l)
	if changed || l.FromConf {
		b, err := l.Marshal()
		if err != nil {
			return res, fmt.Errorf("CNI configuration %s: %w", res.Path, err)
		}
		if err := WriteFile(res.Path, b, perm); err != nil {
			return res, err
		}
		res.Changed = true
		if res.Path != path {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return res, fmt.Errorf("CNI configuration: remove %s, now %s: %w", path, res.Path, err)
			}
			res.Converted = path
		}
	}
	others, err := ConfFiles(dir)
	if err != nil {
		return res, err
	}
	for _, o := range others {
		if o == res.Path {
			continue
		}
		removed, err := removeFrom(o)
		if err != nil {
			continue // not ours to judge: the runtime reads the primary only
		}
		if removed {
			res.RemovedFrom = append(res.RemovedFrom, o)
		}
	}
	return res, nil
}

// Remove takes fibmesh-cni's entry out of every network configuration in
// dir and returns the files it changed.
func Remove(dir string) ([]string, error) {
	files, err := ConfFiles(dir)
	if err != nil {
		return nil, err
	}
	var changed []string
	var errs []error
	for _, f := range files {
		removed, err := removeFrom(f)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			// A file that does not parse holds no entry of ours that a
			// runtime could use; say so only if it names us.
			if b, rerr := os.ReadFile(f); rerr == nil && bytes.Contains(b, []byte(`"`+PluginType+`"`)) {
				errs = append(errs, err)
			}
			continue
		}
		if removed {
			changed = append(changed, f)
		}
	}
	return changed, errors.Join(errs...)
}

func removeFrom(path string) (bool, error) {
	l, perm, err := ReadList(path)
	if err != nil {
		return false, err
	}
	if !l.Remove() {
		return false, nil
	}
	b, err := l.Marshal()
	if err != nil {
		return false, err
	}
	return true, WriteFile(path, b, perm)
}
