// Command manifests copies the Istio CRDs fibmesh reads (VirtualService,
// DestinationRule, ServiceEntry, PeerAuthentication,
// AuthorizationPolicy) from the istio.io/api module at the version go.mod
// pins (its kubernetes/customresourcedefinitions.gen.yaml) into
// deploy/crds/istio-crds.yaml, byte for byte, so that the CRDs the
// manifests install can never drift from the types the controller
// decodes. `make manifests` runs it; with -check it writes nothing and
// fails if the committed file differs from what it would write.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// Module is the Go module the CRDs come from, and ModuleFile the file in
// it that holds them.
const (
	Module     = "istio.io/api"
	ModuleFile = "kubernetes/customresourcedefinitions.gen.yaml"
)

// CRDs are the CustomResourceDefinitions fibmesh's Kubernetes store
// watches (controller/store/kube), in the order the output holds them.
var CRDs = []string{
	"virtualservices.networking.istio.io",
	"destinationrules.networking.istio.io",
	"serviceentries.networking.istio.io",
	"peerauthentications.security.istio.io",
	"authorizationpolicies.security.istio.io",
}

// DefaultOut is the generated file, relative to the repository root.
const DefaultOut = "deploy/crds/istio-crds.yaml"

func main() {
	out := flag.String("out", DefaultOut, "`FILE` to write the CRDs to")
	check := flag.Bool("check", false, "write nothing; fail if FILE differs from what would be written")
	flag.Parse()
	if err := run(*out, *check); err != nil {
		fmt.Fprintln(os.Stderr, "manifests:", err)
		os.Exit(1)
	}
}

func run(out string, check bool) error {
	dir, version, err := moduleDir(".")
	if err != nil {
		return err
	}
	want, err := Generate(dir, version)
	if err != nil {
		return err
	}
	if check {
		have, err := os.ReadFile(out)
		if err != nil {
			return fmt.Errorf("%w (run make manifests)", err)
		}
		if !bytes.Equal(have, want) {
			return fmt.Errorf("%s differs from the CRDs of %s %s: run make manifests and commit it", out, Module, version)
		}
		fmt.Printf("manifests: %s matches %s %s\n", out, Module, version)
		return nil
	}
	if err := os.WriteFile(out, want, 0o644); err != nil {
		return err
	}
	fmt.Printf("manifests: wrote %s (%d CRDs from %s %s)\n", out, len(CRDs), Module, version)
	return nil
}

// moduleDir returns the directory and version of Module as the main
// module in dir requires it (go list -m, which downloads it if needed).
func moduleDir(dir string) (path, version string, err error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}} {{.Version}}", Module)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return "", "", fmt.Errorf("go list -m %s: %w: %s", Module, err, strings.TrimSpace(stderr.String()))
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return "", "", fmt.Errorf("go list -m %s: %q: want DIR VERSION (is the module downloaded? go mod download %s)", Module, b, Module)
	}
	return f[0], f[1], nil
}

// Generate returns the output file for Module's directory dir at
// version: a header, then each of CRDs as the module's file holds it,
// byte for byte.
func Generate(dir, version string) ([]byte, error) {
	src := filepath.Join(dir, ModuleFile)
	data, err := os.ReadFile(src)
	if err != nil {
		return nil, err
	}
	docs, err := byName(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# DO NOT EDIT: written by `make manifests` (hack/manifests) from\n# %s %s %s:\n# the %d CRDs fibmesh reads, unchanged.\n", Module, version, ModuleFile, len(CRDs))
	var missing []string
	for _, name := range CRDs {
		d, ok := docs[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		b.WriteString("---\n")
		b.Write(d)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s: no CustomResourceDefinition %s", src, strings.Join(missing, ", "))
	}
	return b.Bytes(), nil
}

// byName splits a multi-document YAML file at its "---" lines and returns
// each CustomResourceDefinition's text (without the separator, ending in
// a newline) by metadata.name.
func byName(data []byte) (map[string][]byte, error) {
	docs := map[string][]byte{}
	var cur []byte
	flush := func() error {
		defer func() { cur = nil }()
		if len(bytes.TrimSpace(cur)) == 0 {
			return nil
		}
		var obj struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(cur, &obj); err != nil {
			return err
		}
		if obj.Kind != "CustomResourceDefinition" || obj.Metadata.Name == "" {
			return nil // the generator's comment, or something else
		}
		if _, dup := docs[obj.Metadata.Name]; dup {
			return fmt.Errorf("CustomResourceDefinition %s twice", obj.Metadata.Name)
		}
		docs[obj.Metadata.Name] = cur
		return nil
	}
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i+1], data[i+1:]
		} else {
			data = nil
		}
		if strings.TrimRight(string(line), "\r\n") == "---" {
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		}
		cur = append(cur, line...)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	if len(docs) == 0 {
		return nil, errors.New("no CustomResourceDefinition")
	}
	return docs, nil
}
