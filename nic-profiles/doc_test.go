package nicprofiles

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// docRow is a profile's row in the table of docs/nic-profiles.md.
func docRow(p *Profile) string {
	yes := map[bool]string{true: "yes", false: "no"}
	drivers := "(any other)"
	if len(p.Drivers) > 0 {
		drivers = "`" + strings.Join(p.Drivers, "`, `") + "`"
	}
	mtu := "-"
	if p.XDP.MaxMTU > 0 {
		mtu = fmt.Sprint(p.XDP.MaxMTU)
	}
	mode := "generic"
	if p.XDP.Native {
		mode = "native"
	}
	ktls := "no"
	switch {
	case p.KTLS.TXOffload && p.KTLS.RXOffload:
		ktls = "TX+RX"
	case p.KTLS.TXOffload:
		ktls = "TX"
	case p.KTLS.RXOffload:
		ktls = "RX"
	}
	if p.KTLS.Offloads() {
		var vs, cs []string
		for _, v := range p.KTLS.Versions {
			vs = append(vs, "TLS "+string(v))
		}
		for _, c := range p.KTLS.Ciphers {
			cs = append(cs, string(c))
		}
		ktls += " (" + strings.Join(vs, ", ") + ", " + strings.Join(cs, ", ") + ")"
	}
	feats := strings.ReplaceAll(p.XDP.Features.String(), ",", ", ")
	return fmt.Sprintf("| [`%s`](../nic-profiles/%s.yaml) | %s | %s | %s | %s | %s | %s |",
		p.Name, p.Name, drivers, mode, feats, mtu, yes[p.AFXDP.ZeroCopy], ktls)
}

// TestDocTable: the profile table in docs/nic-profiles.md says what the
// YAML files say.
func TestDocTable(t *testing.T) {
	data, err := os.ReadFile("../docs/nic-profiles.md")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "| [`") {
			got = append(got, l)
		}
	}
	ps, err := Profiles()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, p := range ps {
		want = append(want, docRow(p))
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("docs/nic-profiles.md profile table (-from the YAML +in the doc):\n%s", d)
	}
}
