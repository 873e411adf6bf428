package nicprofiles

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

//go:embed *.yaml
var files embed.FS

// Dir is the repository directory of the profiles, used in file names of
// profiles and errors.
const Dir = "nic-profiles"

// GenericName is the fallback profile, for drivers without a profile.
const GenericName = "generic"

// Names lists every profile in ID order: a profile's ID is its index. The
// order is part of the BPF interface (enum nic_profile in
// xdp/headers/consts.h, NIC_PROFILE_<NAME>): append, never reorder.
var Names = []string{
	GenericName,
	"mlx5_core",
	"ice",
	"i40e",
	"ixgbe",
	"bnxt_en",
	"virtio_net",
	"veth",
}

// Decode decodes and validates one profile file; file is its path
// ("nic-profiles/veth.yaml"), whose base name must equal the profile's
// name. Errors name the file, the line and the field: unknown fields,
// wrong types, values out of range, missing required fields and more than
// one YAML document are all errors. The profile's ID is its index in
// Names; a name not in Names is an error.
func Decode(file string, data []byte) (*Profile, error) {
	name := strings.TrimSuffix(path.Base(file), ".yaml")
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(root.Content) == 0 {
		return nil, fmt.Errorf("%s: empty file: want one YAML mapping (see %s/README.md)", file, Dir)
	}
	lines := map[string]int{}
	byLine := map[int]string{}
	values := map[string]*yaml.Node{}
	fieldLines(root.Content[0], "", lines, byLine, values)

	// yaml.v3 also takes YAML 1.1's yes/no/on/off for a bool: a profile
	// must say true or false.
	for _, f := range boolFields {
		if v, ok := values[f]; ok && v.Kind == yaml.ScalarNode && v.Tag != "!!bool" {
			return nil, fmt.Errorf("%s:%d: %s: %q is not a boolean: write true or false", file, v.Line, f, v.Value)
		}
	}

	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	p := &Profile{}
	if err := dec.Decode(p); err != nil {
		return nil, decodeErr(file, err, byLine)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: more than one YAML document: want exactly one profile per file", file)
	}
	id := slices.Index(Names, name)
	if id < 0 {
		return nil, fmt.Errorf("%s: profile %q has no id: add it to nicprofiles.Names and NIC_PROFILE_%s to enum nic_profile in xdp/headers/consts.h", file, name, strings.ToUpper(name))
	}
	p.ID = uint32(id)
	p.File = file
	if errs := p.validate(name, lines); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// fieldLines records the line of every mapping key and sequence item
// under n by dotted path ("xdp.features", "quirks[1].id") in lines, its
// value node in values, and in byLine the innermost field that starts on
// each line. What is inside a flow collection ("[a, b]", "{a: b}")
// shares its key's line and is left to the key.
func fieldLines(n *yaml.Node, prefix string, lines map[string]int, byLine map[int]string, values map[string]*yaml.Node) {
	flow := n.Style&yaml.FlowStyle != 0
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if prefix != "" {
				p = prefix + "." + k.Value
			}
			lines[p] = k.Line
			values[p] = v
			if !flow {
				byLine[k.Line] = p // a later (deeper) field on the line wins
			}
			fieldLines(v, p, lines, byLine, values)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", prefix, i)
			lines[p] = item.Line
			values[p] = item
			if !flow {
				byLine[item.Line] = p
			}
			fieldLines(item, p, lines, byLine, values)
		}
	}
}

// boolFields are the profile's booleans, by path.
var boolFields = []string{"xdp.native", "xdp.generic", "afXDP.zeroCopy", "ktls.txOffload", "ktls.rxOffload"}

var lineRE = regexp.MustCompile(`^line (\d+): (.*)$`)

// decodeErr turns yaml.v3's "line N: msg" errors into "FILE:N: FIELD:
// msg", one per line, naming the field that starts on that line.
func decodeErr(file string, err error, byLine map[int]string) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("%s: %w", file, err)
	}
	var errs []error
	for _, e := range te.Errors {
		m := lineRE.FindStringSubmatch(e)
		if m == nil {
			errs = append(errs, fmt.Errorf("%s: %s", file, e))
			continue
		}
		l, _ := strconv.Atoi(m[1])
		if f, ok := byLine[l]; ok {
			errs = append(errs, fmt.Errorf("%s:%d: %s: %s", file, l, f, m[2]))
		} else {
			errs = append(errs, fmt.Errorf("%s:%d: %s", file, l, m[2]))
		}
	}
	return errors.Join(errs...)
}

// loaded is the embedded set, decoded once.
var loaded = sync.OnceValues(func() ([]*Profile, error) {
	ents, err := files.ReadDir(".")
	if err != nil {
		return nil, fmt.Errorf("read embedded profiles: %w", err)
	}
	var out []*Profile
	var errs []error
	for _, e := range ents {
		data, err := files.ReadFile(e.Name())
		if err != nil {
			return nil, fmt.Errorf("read embedded %s: %w", e.Name(), err)
		}
		p, err := Decode(path.Join(Dir, e.Name()), data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, p)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := checkSet(out); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *Profile) int { return int(a.ID) - int(b.ID) })
	return out, nil
})

// checkSet checks rules that span profiles: every name in Names has a
// file, and no driver is claimed by two profiles.
func checkSet(ps []*Profile) error {
	var errs []error
	have := map[string]bool{}
	owner := map[string]string{}
	for _, p := range ps {
		have[p.Name] = true
		for _, d := range p.Drivers {
			if o, dup := owner[d]; dup {
				errs = append(errs, fmt.Errorf("%s: driver %q is already claimed by %s/%s.yaml: a driver has one profile", p.File, d, Dir, o))
			}
			owner[d] = p.Name
		}
	}
	for _, n := range Names {
		if !have[n] {
			errs = append(errs, fmt.Errorf("%s/%s.yaml is missing: nicprofiles.Names lists it", Dir, n))
		}
	}
	return errors.Join(errs...)
}

// Profiles returns every embedded profile in ID order. The error is
// non-nil only if an embedded file is broken, which the package's tests
// rule out.
func Profiles() ([]*Profile, error) {
	ps, err := loaded()
	return slices.Clone(ps), err
}

// Lookup returns the profile of a kernel driver name, or false if the
// driver has none (use Generic).
func Lookup(driver string) (*Profile, bool) {
	ps, err := loaded()
	if err != nil || driver == "" {
		return nil, false
	}
	for _, p := range ps {
		if slices.Contains(p.Drivers, driver) {
			return p, true
		}
	}
	return nil, false
}

// ByName returns the profile called name.
func ByName(name string) (*Profile, bool) {
	ps, err := loaded()
	if err != nil {
		return nil, false
	}
	for _, p := range ps {
		if p.Name == name {
			return p, true
		}
	}
	return nil, false
}

// Generic returns the fallback profile, for drivers without a profile.
func Generic() (*Profile, error) {
	ps, err := loaded()
	if err != nil {
		return nil, err
	}
	return ps[0], nil
}
