package nicprofiles

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// validVeth is a minimal valid profile; the cases below edit it. Line
// numbers matter: the expected errors name them.
const validVeth = `name: veth
drivers: [veth]
description: test profile
xdp:
  native: true
  generic: true
  features: [basic, redirect]
  maxMTU: 3506
afXDP:
  zeroCopy: false
  zcMaxSegs: 0
ktls:
  txOffload: false
  rxOffload: false
  versions: []
  ciphers: []
advice:
  queues: one
  rss: none
quirks:
  - id: some-quirk
    summary: something
    feature: rx-gro
`

func TestDecodeValid(t *testing.T) {
	p, err := Decode("nic-profiles/veth.yaml", []byte(validVeth))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := &Profile{
		Name: "veth", Drivers: []string{"veth"}, Description: "test profile",
		XDP:    XDP{Native: true, Generic: true, Features: XDPBasic | XDPRedirect, MaxMTU: 3506},
		KTLS:   KTLS{Versions: []TLSVersion{}, Ciphers: []Cipher{}},
		Advice: Advice{Queues: "one", RSS: "none"},
		Quirks: []Quirk{{ID: "some-quirk", Summary: "something", Feature: FeatureGRO}},
		ID:     7, File: "nic-profiles/veth.yaml",
	}
	if d := cmp.Diff(want, p); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}

	// kTLS offload with versions written as YAML numbers and strings.
	ktls := strings.NewReplacer(
		"  txOffload: false", "  txOffload: true",
		`  versions: []`, `  versions: [1.2, "1.3"]`,
		`  ciphers: []`, `  ciphers: [aes-128-gcm, aes-256-gcm]`,
	).Replace(validVeth)
	p, err = Decode("nic-profiles/veth.yaml", []byte(ktls))
	if err != nil {
		t.Fatalf("Decode with kTLS: %v", err)
	}
	if d := cmp.Diff(KTLS{TXOffload: true, Versions: []TLSVersion{TLS12, TLS13}, Ciphers: []Cipher{CipherAES128GCM, CipherAES256GCM}}, p.KTLS); d != "" {
		t.Errorf("kTLS (-want +got):\n%s", d)
	}
}

func TestDecodeErrors(t *testing.T) {
	// edit replaces old (which must occur in validVeth) by new.
	edit := func(old, new string) string {
		if !strings.Contains(validVeth, old) {
			panic("test case edits text that is not there: " + old)
		}
		return strings.Replace(validVeth, old, new, 1)
	}
	tests := []struct {
		name string
		file string // default nic-profiles/veth.yaml
		yaml string
		want []string // substrings of the error
	}{
		{"unknown top-level field", "", validVeth + "xdpMode: native\n",
			[]string{"nic-profiles/veth.yaml:24: xdpMode:", "field xdpMode not found"}},
		{"unknown nested field", "", edit("  generic: true\n", "  generic: true\n  nativ: true\n"),
			[]string{"nic-profiles/veth.yaml:7: xdp.nativ:", "field nativ not found"}},
		{"unknown field in a quirk", "", edit("    summary: something\n", "    summary: something\n    sumary: x\n"),
			[]string{"veth.yaml:23: quirks[0].sumary:", "field sumary not found"}},
		{"YAML 1.1 yes for a bool", "", edit("  native: true", "  native: yes"),
			[]string{"veth.yaml:5: xdp.native:", `"yes" is not a boolean`}},
		{"number for a bool", "", edit("  generic: true", "  generic: 1"),
			[]string{"veth.yaml:6: xdp.generic:", `"1" is not a boolean`}},
		{"mapping for a bool", "", edit("  zeroCopy: false", "  zeroCopy: {a: b}"),
			[]string{"veth.yaml:10: afXDP.zeroCopy:", "cannot unmarshal !!map into bool"}},
		{"list for a string", "", edit("description: test profile", "description: [a, b]"),
			[]string{"veth.yaml:3: description:", "cannot unmarshal"}},
		{"string for an int", "", edit("  maxMTU: 3506", "  maxMTU: big"),
			[]string{"veth.yaml:8: xdp.maxMTU:", "cannot unmarshal"}},
		{"unknown XDP feature", "", edit("[basic, redirect]", "[basic, redirekt]"),
			[]string{"veth.yaml:7: xdp.features:", `unknown XDP feature "redirekt"`, "ndo-xmit"}},
		{"XDP feature listed twice", "", edit("[basic, redirect]", "[basic, basic]"),
			[]string{"veth.yaml:7: xdp.features:", `"basic" is listed twice`}},
		{"XDP features not a list", "", edit("[basic, redirect]", "basic"),
			[]string{"veth.yaml:7: xdp.features:", "want a list"}},
		{"TLS 1.1", "", edit("  txOffload: false\n", "  txOffload: true\n") + "",
			[]string{"ktls.versions: kTLS offload is on"}},
		{"TLS version 1.1", "", strings.NewReplacer("  txOffload: false", "  txOffload: true", "  versions: []", "  versions: [1.1]", "  ciphers: []", "  ciphers: [aes-128-gcm]").Replace(validVeth),
			[]string{"veth.yaml:15: ktls.versions:", `TLS version "1.1": want "1.2" or "1.3"`}},
		{"TLS version 1.20", "", strings.NewReplacer("  txOffload: false", "  txOffload: true", "  versions: []", "  versions: [1.20]", "  ciphers: []", "  ciphers: [aes-128-gcm]").Replace(validVeth),
			[]string{`TLS version "1.20"`}},
		{"unknown cipher", "", strings.NewReplacer("  rxOffload: false", "  rxOffload: true", "  versions: []", `  versions: ["1.2"]`, "  ciphers: []", "  ciphers: [aes-128-cbc]").Replace(validVeth),
			[]string{"veth.yaml:16: ktls.ciphers:", `kTLS cipher "aes-128-cbc"`, "aes-128-gcm"}},
		{"versions without offload", "", edit("  versions: []", `  versions: ["1.2"]`),
			[]string{"veth.yaml:15: ktls.versions: lists", "neither txOffload nor rxOffload"}},
		{"ciphers without offload", "", edit("  ciphers: []", `  ciphers: [aes-128-gcm]`),
			[]string{"veth.yaml:16: ktls.ciphers: lists"}},
		{"offload without ciphers", "", strings.NewReplacer("  txOffload: false", "  txOffload: true", "  versions: []", `  versions: ["1.2"]`).Replace(validVeth),
			[]string{"veth.yaml:16: ktls.ciphers: kTLS offload is on"}},
		{"zero-copy without the feature bit", "", edit("  zeroCopy: false\n  zcMaxSegs: 0", "  zeroCopy: true\n  zcMaxSegs: 1"),
			[]string{"veth.yaml:10: afXDP.zeroCopy: is true but xdp.features lacks xsk-zerocopy"}},
		{"feature bit without zero-copy", "", edit("[basic, redirect]", "[basic, redirect, xsk-zerocopy]"),
			[]string{"afXDP.zeroCopy: is false but xdp.features lists xsk-zerocopy"}},
		{"zcMaxSegs without zero-copy", "", edit("  zcMaxSegs: 0", "  zcMaxSegs: 4"),
			[]string{"veth.yaml:11: afXDP.zcMaxSegs: is 4 without zero-copy"}},
		{"native without basic", "", edit("[basic, redirect]", "[redirect]"),
			[]string{"xdp.features: native XDP needs at least \"basic\""}},
		{"features without native", "", edit("  native: true", "  native: false"),
			[]string{"xdp.features: lists basic,redirect but xdp.native is false"}},
		{"neither native nor generic", "", strings.NewReplacer("  native: true", "  native: false", "  generic: true", "  generic: false", "[basic, redirect]", "[]").Replace(validVeth),
			[]string{"xdp.generic: a profile with neither native nor generic"}},
		{"maxMTU out of range", "", edit("  maxMTU: 3506", "  maxMTU: 100"),
			[]string{"veth.yaml:8: xdp.maxMTU: 100 is out of range"}},
		{"missing required field", "", edit("  native: true\n", ""),
			[]string{"nic-profiles/veth.yaml: xdp.native: required field is missing"}},
		{"name does not match the file", "", edit("name: veth", "name: veth2"),
			[]string{"veth.yaml:1: name:", `"veth2" does not match the file name: want "veth"`}},
		{"no drivers", "", edit("drivers: [veth]", "drivers: []"),
			[]string{"veth.yaml:2: drivers: must list at least one"}},
		{"driver twice", "", edit("drivers: [veth]", "drivers: [veth, veth]"),
			[]string{`drivers[1]: driver "veth" is listed twice`}},
		{"generic with a driver", "nic-profiles/generic.yaml", strings.NewReplacer("name: veth", "name: generic").Replace(validVeth),
			[]string{"generic.yaml:2: drivers: the generic fallback applies to every driver"}},
		{"bad quirk id", "", edit("  - id: some-quirk", "  - id: Some_Quirk"),
			[]string{"veth.yaml:21: quirks[0].id:", `"Some_Quirk": want a kebab-case id`}},
		{"quirk on an unknown feature", "", edit("    feature: rx-gro", "    feature: rx-checksum"),
			[]string{"veth.yaml:23: quirks[0].feature:", `"rx-checksum" is not a feature detection reads`}},
		{"quirk in an unknown mode", "", edit("    feature: rx-gro", "    feature: rx-gro\n    mode: skb"),
			[]string{"veth.yaml:24: quirks[0].mode:", `"skb": want native or generic`}},
		{"empty advice", "", edit("  queues: one", `  queues: ""`),
			[]string{"advice.queues: must not be empty"}},
		{"two documents", "", validVeth + "---\nname: veth\n",
			[]string{"nic-profiles/veth.yaml: more than one YAML document"}},
		{"empty file", "", "",
			[]string{"nic-profiles/veth.yaml: empty file"}},
		{"comments only", "", "# nothing here\n",
			[]string{"nic-profiles/veth.yaml: empty file"}},
		{"syntax error", "", "name: veth\n  drivers: [veth\n",
			[]string{"nic-profiles/veth.yaml: yaml:"}},
		{"a list, not a mapping", "", "- veth\n",
			[]string{"nic-profiles/veth.yaml:1:", "cannot unmarshal !!seq"}},
		{"a name without an id", "nic-profiles/e1000e.yaml", strings.Replace(strings.Replace(validVeth, "name: veth", "name: e1000e", 1), "[veth]", "[e1000e]", 1),
			[]string{`profile "e1000e" has no id`, "nicprofiles.Names", "NIC_PROFILE_E1000E"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := tt.file
			if file == "" {
				file = "nic-profiles/veth.yaml"
			}
			p, err := Decode(file, []byte(tt.yaml))
			if err == nil {
				t.Fatalf("Decode succeeded with %+v, want an error", p)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not mention %q", err, w)
				}
			}
		})
	}
}

// TestDecodeReportsEveryProblem: validation lists all problems, not just
// the first, so one edit cycle fixes a file.
func TestDecodeReportsEveryProblem(t *testing.T) {
	bad := strings.NewReplacer("name: veth", "name: other", "  zcMaxSegs: 0", "  zcMaxSegs: 3", "  queues: one", `  queues: ""`).Replace(validVeth)
	_, err := Decode("nic-profiles/veth.yaml", []byte(bad))
	if err == nil {
		t.Fatal("Decode succeeded")
	}
	for _, w := range []string{"name:", "afXDP.zcMaxSegs:", "advice.queues:"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %s", err, w)
		}
	}
}

// FuzzDecode: no input makes Decode panic, and whatever it accepts
// passes validation again and names its file.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(validVeth))
	for _, n := range Names {
		if data, err := files.ReadFile(n + ".yaml"); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("name: veth\nxdp: {features: [basic, bit-3]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Decode("nic-profiles/veth.yaml", data)
		if err != nil {
			return
		}
		if p.Name != "veth" || p.File != "nic-profiles/veth.yaml" || p.ID != 7 {
			t.Fatalf("accepted profile %+v", p)
		}
	})
}
