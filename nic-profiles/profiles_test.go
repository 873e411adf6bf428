package nicprofiles

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// summary is what TestEmbeddedProfiles pins for each profile: the facts
// the data path acts on.
type summary struct {
	Drivers     []string
	Native      bool
	Features    string
	MaxMTU      int
	ZeroCopy    bool
	ZCMaxSegs   int
	KTLSTX      bool
	KTLSRX      bool
	TLSVersions []TLSVersion
	Ciphers     []Cipher
	Quirks      []string
}

func summarize(p *Profile) summary {
	s := summary{
		Drivers: p.Drivers, Native: p.XDP.Native, Features: p.XDP.Features.String(), MaxMTU: p.XDP.MaxMTU,
		ZeroCopy: p.AFXDP.ZeroCopy, ZCMaxSegs: p.AFXDP.ZCMaxSegs,
		KTLSTX: p.KTLS.TXOffload, KTLSRX: p.KTLS.RXOffload, TLSVersions: p.KTLS.Versions, Ciphers: p.KTLS.Ciphers,
	}
	for _, q := range p.Quirks {
		s.Quirks = append(s.Quirks, q.ID)
	}
	return s
}

// TestEmbeddedProfiles: every embedded file decodes and validates, each
// name in Names has one with its index as ID, and each says what the
// kernel sources it cites say.
func TestEmbeddedProfiles(t *testing.T) {
	ps, err := Profiles()
	if err != nil {
		t.Fatalf("Profiles: %v", err)
	}
	var names []string
	for i, p := range ps {
		names = append(names, p.Name)
		if p.ID != uint32(i) {
			t.Errorf("%s: ID %d, want its index in Names %d", p.Name, p.ID, i)
		}
		if want := "nic-profiles/" + p.Name + ".yaml"; p.File != want {
			t.Errorf("%s: File %q, want %q", p.Name, p.File, want)
		}
	}
	if d := cmp.Diff(Names, names); d != "" {
		t.Errorf("profiles in ID order (-Names +embedded):\n%s", d)
	}

	none := []TLSVersion{}
	noCiphers := []Cipher{}
	want := map[string]summary{
		"generic": {Drivers: []string{}, Features: "none", TLSVersions: none, Ciphers: noCiphers,
			Quirks: []string{"generic-mode-is-slow", "gro-aggregates-in-generic-mode"}},
		"mlx5_core": {Drivers: []string{"mlx5_core"}, Native: true, Features: "basic,redirect,ndo-xmit,xsk-zerocopy,rx-sg,ndo-xmit-sg",
			MaxMTU: 3498, ZeroCopy: true, ZCMaxSegs: 1, KTLSTX: true, KTLSRX: true,
			TLSVersions: []TLSVersion{TLS12}, Ciphers: []Cipher{CipherAES128GCM},
			Quirks: []string{"lro-clears-xdp", "hw-gro-clears-xdp", "ktls-rx-off-by-default", "ktls-needs-crypto-sku"}},
		"ice": {Drivers: []string{"ice"}, Native: true, Features: "basic,redirect,ndo-xmit,xsk-zerocopy,rx-sg,ndo-xmit-sg",
			MaxMTU: 3046, ZeroCopy: true, ZCMaxSegs: 8, TLSVersions: none, Ciphers: noCiphers,
			Quirks: []string{"ktls-software-only", "legacy-rx-halves-xdp-mtu"}},
		"i40e": {Drivers: []string{"i40e"}, Native: true, Features: "basic,redirect,ndo-xmit,xsk-zerocopy,rx-sg,ndo-xmit-sg",
			MaxMTU: 3046, ZeroCopy: true, ZCMaxSegs: 8, TLSVersions: none, Ciphers: noCiphers,
			Quirks: []string{"ktls-software-only", "legacy-rx-halves-xdp-mtu"}},
		"ixgbe": {Drivers: []string{"ixgbe"}, Native: true, Features: "basic,redirect,ndo-xmit,xsk-zerocopy",
			MaxMTU: 3050, ZeroCopy: true, ZCMaxSegs: 1, TLSVersions: none, Ciphers: noCiphers,
			Quirks: []string{"no-jumbo-xdp", "ktls-software-only"}},
		"bnxt_en": {Drivers: []string{"bnxt_en"}, Native: true, Features: "basic,redirect,ndo-xmit,rx-sg",
			MaxMTU: 3502, TLSVersions: none, Ciphers: noCiphers,
			Quirks: []string{"xdp-needs-combined-channels", "xdp-disables-tpa", "ktls-software-only"}},
		"virtio_net": {Drivers: []string{"virtio_net"}, Native: true, Features: "basic,redirect,ndo-xmit,rx-sg,ndo-xmit-sg",
			MaxMTU: 3506, TLSVersions: none, Ciphers: noCiphers,
			Quirks: []string{"guest-offloads-block-xdp", "xdp-needs-spare-tx-queues", "ktls-software-only"}},
		"veth": {Drivers: []string{"veth"}, Native: true, Features: "basic,redirect,ndo-xmit,rx-sg,ndo-xmit-sg",
			MaxMTU: 3506, TLSVersions: none, Ciphers: noCiphers,
			Quirks: []string{"redirect-needs-peer-xdp-or-gro", "peer-gso-off-with-xdp", "tx-checksum-partial"}},
	}
	for _, p := range ps {
		t.Run(p.Name, func(t *testing.T) {
			w, ok := want[p.Name]
			if !ok {
				t.Fatalf("no expectations for profile %s: add them to this test", p.Name)
			}
			if d := cmp.Diff(w, summarize(p)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
			for _, v := range p.KTLS.Versions {
				// Mainline device offload is TLS 1.2 only
				// (net/tls/tls_device.c).
				if v != TLS12 {
					t.Errorf("kTLS offload version %s: mainline NIC offload is TLS 1.2 only", v)
				}
			}
			if p.Name != GenericName && strings.TrimSpace(p.Advice.RSS) == "" {
				t.Errorf("advice.rss is empty")
			}
		})
	}
	if len(want) != len(ps) {
		t.Errorf("expectations for %d profiles, %d embedded", len(want), len(ps))
	}
}

// sourceRE matches a citation of kernel sources or documentation.
var sourceRE = regexp.MustCompile(`(drivers/|net/|include/|Documentation/|[a-z0-9_]+\.[ch]\b)`)

// TestProfilesCiteSources: the facts of each profile (xdp, afXDP, ktls)
// carry a source in a comment inside their section.
func TestProfilesCiteSources(t *testing.T) {
	for _, name := range Names {
		data, err := os.ReadFile(name + ".yaml")
		if err != nil {
			t.Fatal(err)
		}
		section := ""
		cited := map[string]bool{}
		for _, l := range strings.Split(string(data), "\n") {
			if l != "" && l[0] != ' ' && l[0] != '#' {
				section, _, _ = strings.Cut(l, ":")
			}
			if c, ok := strings.CutPrefix(strings.TrimSpace(l), "#"); ok && sourceRE.MatchString(c) {
				cited[section] = true
			}
		}
		for _, s := range []string{"xdp", "afXDP", "ktls"} {
			if !cited[s] {
				t.Errorf("%s.yaml: section %s cites no source in a comment (drivers/..., net/..., Documentation/...)", name, s)
			}
		}
	}
}

// TestNoStrayFiles: every YAML file in the directory is a profile (the
// embed pattern would pick up any other).
func TestNoStrayFiles(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		got = append(got, strings.TrimSuffix(f, ".yaml"))
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(Names))
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("YAML files (-Names +files):\n%s", d)
	}
}

func TestLookup(t *testing.T) {
	for _, tc := range []struct {
		driver, want string
		ok           bool
	}{
		{"veth", "veth", true},
		{"mlx5_core", "mlx5_core", true},
		{"bnxt_en", "bnxt_en", true},
		{"e1000e", "", false},
		{"", "", false},
		{"generic", "", false}, // the fallback is not a driver
	} {
		p, ok := Lookup(tc.driver)
		if ok != tc.ok || ok && p.Name != tc.want {
			t.Errorf("Lookup(%q) = %v, %t; want %q, %t", tc.driver, p, ok, tc.want, tc.ok)
		}
	}
	if g, err := Generic(); err != nil || g.Name != GenericName || g.ID != 0 {
		t.Errorf("Generic() = %+v, %v", g, err)
	}
	if p, ok := ByName("ice"); !ok || p.Drivers[0] != "ice" {
		t.Errorf("ByName(ice) = %+v, %t", p, ok)
	}
}

func TestXDPFeatures(t *testing.T) {
	all := XDPFeatures(0)
	for _, n := range XDPFeatureNames() {
		b, err := ParseXDPFeature(n)
		if err != nil {
			t.Fatal(err)
		}
		all |= b
	}
	// Bit order and names from include/uapi/linux/netdev.h enum
	// netdev_xdp_act: NETDEV_XDP_ACT_MASK = 127.
	if all != 127 {
		t.Errorf("known bits = %#x, want NETDEV_XDP_ACT_MASK 0x7f", uint64(all))
	}
	for _, tc := range []struct {
		f    XDPFeatures
		str  string
		json string
	}{
		{0, "none", `[]`},
		{XDPBasic | XDPRedirect, "basic,redirect", `["basic","redirect"]`},
		{XDPRxSG | XDPNdoXmitSG | XDPXSKZeroCopy, "xsk-zerocopy,rx-sg,ndo-xmit-sg", `["xsk-zerocopy","rx-sg","ndo-xmit-sg"]`},
		{XDPBasic | 1<<9, "basic,bit-9", `["basic","bit-9"]`}, // a newer kernel's bit
	} {
		if got := tc.f.String(); got != tc.str {
			t.Errorf("%#x.String() = %q, want %q", uint64(tc.f), got, tc.str)
		}
		b, err := json.Marshal(tc.f)
		if err != nil || string(b) != tc.json {
			t.Errorf("json.Marshal(%#x) = %s, %v; want %s", uint64(tc.f), b, err, tc.json)
		}
		if tc.f&^all == 0 {
			var back XDPFeatures
			if err := json.Unmarshal(b, &back); err != nil || back != tc.f {
				t.Errorf("json round trip of %s = %s, %v", tc.str, back, err)
			}
		}
	}
	if _, err := ParseXDPFeature("redirekt"); err == nil || !strings.Contains(err.Error(), "basic, redirect") {
		t.Errorf("ParseXDPFeature(redirekt) = %v, want an error listing the names", err)
	}
}
