package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"sigs.k8s.io/yaml"

	"github.com/fibmesh/fibmesh/internal/netnstest"
	"github.com/fibmesh/fibmesh/internal/testenv"
)

// TestNICUsageErrors: mistakes on a nic command line are usage errors
// naming the mistake, checked before anything is read.
func TestNICUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want []string
	}{
		{"two interfaces", []string{"nic", "eth0", "eth1"}, []string{"at most one IFACE", `"eth0" "eth1"`}},
		{"bad -o after nic", []string{"nic", "-o", "xml"}, []string{`nic: -o "xml"`, "table, json or yaml"}},
		{"bad -o before nic", []string{"-o", "xml", "nic"}, []string{`-o "xml"`}},
		{"unknown flag", []string{"nic", "--all"}, []string{"nic:", "-all"}},
		{"with --node", []string{"--node", "fm-node1", "nic"}, []string{"takes no --node or --pin-dir", "nsenter --net=/run/netns/NODE fibctl nic"}},
		{"with --pin-dir", []string{"--pin-dir", "/sys/fs/bpf/fibmesh/x", "nic", "eth0"}, []string{"takes no --node or --pin-dir"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(tt.args, &out)
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("run(%q) = %v (%T), want a usageError", tt.args, err, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("run(%q) = %q, want it to mention %q", tt.args, err, w)
				}
			}
			if out.Len() != 0 {
				t.Errorf("run(%q) wrote %q to stdout", tt.args, out.String())
			}
		})
	}
}

// TestNICHelp: nic --help prints its usage and is not an error.
func TestNICHelp(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"nic", "--help"}, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("nic --help = %v, want flag.ErrHelp", err)
	}
	for _, w := range []string{"fibctl nic [-o table|json|yaml] [IFACE]", "docs/nic-profiles.md", "-o string"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("nic --help output lacks %q:\n%s", w, out.String())
		}
	}
	if !strings.Contains(usage, "nic [IFACE]") || !strings.Contains(usage, "fibctl nic eth0") {
		t.Errorf("fibctl --help does not document nic:\n%s", usage)
	}
}

// TestNICLoopback needs no root: lo is the generic profile, generic XDP.
func TestNICLoopback(t *testing.T) {
	out := fibctl(t, "nic", "lo")
	header, rows := tableLines(strings.SplitN(out, "\n\n", 2)[0])
	if header != "INTERFACE DRIVER PROFILE XDP XDP FEATURES AF_XDP ZC KTLS TX KTLS RX ACTIVE QUIRKS" {
		t.Errorf("header %q", header)
	}
	if len(rows) != 1 || !strings.HasPrefix(rows[0], "lo - generic generic - no no no ") {
		t.Errorf("rows %q, want lo with the generic profile", rows)
	}
	for _, w := range []string{"lo: driver unknown (ETHTOOL_GDRVINFO: ", "generic fallback (nic-profiles/generic.yaml)",
		"BPF constants: profile generic (0), frags no, max frame 65554", "quirk generic-mode-is-slow [active]"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	var err error
	if err = run([]string{"nic", "fm-no-such-if0"}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "fm-no-such-if0") {
		t.Errorf("nic of a missing interface = %v, want an error naming it", err)
	}
	var ue usageError
	if errors.As(err, &ue) {
		t.Errorf("a missing interface is a usage error: %v", err)
	}
}

// TestNICVeth runs fibctl nic in a new network namespace with a veth pair:
// the table lists both ends (not lo), and JSON/YAML carry every field.
func TestNICVeth(t *testing.T) {
	testenv.NeedRoot(t)
	netnstest.InNew(t, func() { testNICVeth(t) })
}

func testNICVeth(t *testing.T) {
	la := netlink.NewLinkAttrs()
	la.Name = "fn0"
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "fn1"}); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	for _, n := range []string{"fn0", "fn1"} {
		l, err := netlink.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}

	out := fibctl(t, "nic")
	table, details, _ := strings.Cut(out, "\n\n")
	_, rows := tableLines(table)
	want := []string{
		"fn0 veth veth native basic,redirect,rx-sg no no no -",
		"fn1 veth veth native basic,redirect,rx-sg no no no -",
	}
	if d := cmp.Diff(want, rows); d != "" {
		t.Errorf("rows (-want +got):\n%s\noutput:\n%s", d, out)
	}
	for _, w := range []string{"fn0: driver veth matched nic-profiles/veth.yaml", "using the measured set",
		"BPF constants: profile veth (7), frags no, max frame 1518", "quirk redirect-needs-peer-xdp-or-gro: XDP_REDIRECT into a veth"} {
		if !strings.Contains(details, w) {
			t.Errorf("details lack %q:\n%s", w, details)
		}
	}

	for _, format := range []string{"json", "yaml"} {
		out := fibctl(t, "nic", "-o", format, "fn0")
		var got []map[string]any
		if err := yaml.UnmarshalStrict([]byte(out), &got); err != nil { // YAML is a superset of JSON
			t.Fatalf("decode -o %s: %v\n%s", format, err, out)
		}
		if len(got) != 1 {
			t.Fatalf("-o %s fn0: %d entries, want 1", format, len(got))
		}
		g := got[0]
		keys := make([]string, 0, len(g))
		for k := range g {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		wantKeys := []string{"afXDPZeroCopy", "bpf", "ciphers", "driver", "features", "ifindex", "interface", "ktlsRX", "ktlsTX",
			"mtu", "multiBuffer", "profile", "profileFile", "quirks", "reason", "tlsVersions", "xdpFeatures", "xdpFeaturesMeasured", "xdpMode"}
		if d := cmp.Diff(wantKeys, keys); d != "" {
			t.Errorf("-o %s fields (-want +got):\n%s", format, d)
		}
		// Round-trip the values through JSON to compare numbers alike.
		b, _ := json.Marshal(g)
		var v struct {
			Interface, Driver, Profile, ProfileFile, XDPMode string
			XDPFeatures                                      []string
			MTU                                              int
			KTLSTX, AFXDPZeroCopy                            bool
			BPF                                              struct {
				ProfileID, MaxFrame int
				Frags               bool
			}
			Features []string
		}
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		if v.Interface != "fn0" || v.Driver != "veth" || v.Profile != "veth" || v.ProfileFile != "nic-profiles/veth.yaml" ||
			v.XDPMode != "native" || v.MTU != 1500 || v.KTLSTX || v.AFXDPZeroCopy ||
			v.BPF.ProfileID != 7 || v.BPF.MaxFrame != 1518 || v.BPF.Frags {
			t.Errorf("-o %s: %+v", format, v)
		}
		if d := cmp.Diff([]string{"basic", "redirect", "rx-sg"}, v.XDPFeatures); d != "" {
			t.Errorf("-o %s xdpFeatures (-want +got):\n%s", format, d)
		}
		if !slices.Contains(v.Features, "rx-lro off [fixed]") || !slices.Contains(v.Features, "tls-hw-tx-offload off [fixed]") {
			t.Errorf("-o %s features %q", format, v.Features)
		}
	}
}
