package nicprofiles

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// features returns a full Features map: every feature off [fixed] except
// those given.
func features(set map[string]Feature) map[string]Feature {
	m := map[string]Feature{}
	for _, f := range Features {
		m[f] = Feature{Fixed: true}
	}
	for k, v := range set {
		m[k] = v
	}
	return m
}

var (
	on      = Feature{On: true}
	off     = Feature{}
	onFixed = Feature{On: true, Fixed: true}
)

// TestChoose: facts in, profile, reason and capabilities out. The facts
// win over the profile wherever they disagree.
func TestChoose(t *testing.T) {
	vethXDP := &XDPFacts{Features: XDPBasic | XDPRedirect | XDPRxSG}
	mlx5All := XDPBasic | XDPRedirect | XDPNdoXmit | XDPXSKZeroCopy | XDPRxSG | XDPNdoXmitSG
	tests := []struct {
		name    string
		facts   Facts
		profile string
		reason  []string // substrings, in order
		noMatch []string // substrings the reason must not have
		want    Capabilities
		active  []string // quirks marked active
	}{
		{
			name:    "veth in the lab",
			facts:   Facts{Interface: "fm0", Driver: "veth", MTU: 1500, Features: features(map[string]Feature{FeatureGRO: on}), XDP: vethXDP},
			profile: "veth",
			reason:  []string{"driver veth matched nic-profiles/veth.yaml", "netdev xdp-features are [basic,redirect,rx-sg] where the profile says [basic,redirect,ndo-xmit,rx-sg,ndo-xmit-sg]: using the measured set"},
			want: Capabilities{XDPMode: "native", XDPFeatures: vethXDP.Features, MaxMTU: 3506,
				TLSVersions: []TLSVersion{}, Ciphers: []Cipher{}},
		},
		{
			name:    "veth, old kernel: no netdev family, no ethtool netlink",
			facts:   Facts{Interface: "fm0", Driver: "veth", MTU: 1500, Missing: []string{"XDP features not measured (the kernel has no netdev genetlink family (it arrived in Linux 6.3))"}},
			profile: "veth",
			reason:  []string{"driver veth matched nic-profiles/veth.yaml", "it arrived in Linux 6.3)): the profile stands in"},
			noMatch: []string{"using the measured set"},
			want: Capabilities{XDPMode: "native", XDPFeatures: XDPBasic | XDPRedirect | XDPNdoXmit | XDPRxSG | XDPNdoXmitSG, MaxMTU: 3506,
				TLSVersions: []TLSVersion{}, Ciphers: []Cipher{}},
		},
		{
			name:    "veth with a jumbo MTU: multi-buffer",
			facts:   Facts{Interface: "fm0", Driver: "veth", MTU: 9000, Features: features(nil), XDP: vethXDP},
			profile: "veth",
			reason:  []string{"MTU 9000 is above the driver's single-buffer XDP limit of 3506: multi-buffer"},
			want: Capabilities{XDPMode: "native", XDPFeatures: vethXDP.Features, MaxMTU: 3506, MultiBuffer: true,
				TLSVersions: []TLSVersion{}, Ciphers: []Cipher{}},
		},
		{
			name:    "unknown driver",
			facts:   Facts{Interface: "eth0", Driver: "e1000e", MTU: 1500, Features: features(nil), XDP: &XDPFacts{}},
			profile: "generic",
			reason:  []string{"driver e1000e has no profile: generic fallback (nic-profiles/generic.yaml)"},
			noMatch: []string{"xdp-features"}, // none measured, none in the profile: no disagreement
			want:    Capabilities{XDPMode: "generic", TLSVersions: []TLSVersion{}, Ciphers: []Cipher{}},
			active:  []string{"generic-mode-is-slow"}, // rx-gro off: no aggregates
		},
		{
			name:    "no driver name (loopback)",
			facts:   Facts{Interface: "lo", DriverError: "ETHTOOL_GDRVINFO: operation not supported", MTU: 65536, Features: features(map[string]Feature{FeatureGRO: on}), XDP: &XDPFacts{}},
			profile: "generic",
			reason:  []string{"driver unknown (ETHTOOL_GDRVINFO: operation not supported): generic fallback (nic-profiles/generic.yaml)"},
			want:    Capabilities{XDPMode: "generic", TLSVersions: []TLSVersion{}, Ciphers: []Cipher{}},
			active:  []string{"generic-mode-is-slow", "gro-aggregates-in-generic-mode"},
		},
		{
			name: "unknown driver with native XDP and zero-copy: the facts say so, no generic-mode quirks",
			facts: Facts{Interface: "eth0", Driver: "igc", MTU: 1500, Features: features(map[string]Feature{FeatureGRO: on}),
				XDP: &XDPFacts{Features: XDPBasic | XDPRedirect | XDPXSKZeroCopy, ZCMaxSegs: 1}},
			profile: "generic",
			reason:  []string{"driver igc has no profile", "netdev xdp-features are [basic,redirect,xsk-zerocopy] where the profile says [none]"},
			want: Capabilities{XDPMode: "native", XDPFeatures: XDPBasic | XDPRedirect | XDPXSKZeroCopy, AFXDPZeroCopy: true, ZCMaxSegs: 1,
				TLSVersions: []TLSVersion{}, Ciphers: []Cipher{}},
		},
		{
			name: "unknown driver with kTLS offload on (nfp): used, TLS 1.2 AES-128-GCM",
			facts: Facts{Interface: "eth0", Driver: "nfp", MTU: 1500,
				Features: features(map[string]Feature{FeatureTLSTX: on, FeatureTLSRX: off}), XDP: &XDPFacts{Features: XDPBasic | XDPRedirect}},
			profile: "generic",
			reason:  []string{"tls-hw-tx-offload is on although the profile has no kTLS TX offload: using it"},
			noMatch: []string{"tls-hw-rx-offload"},
			want: Capabilities{XDPMode: "native", XDPFeatures: XDPBasic | XDPRedirect, KTLSTX: true,
				TLSVersions: []TLSVersion{TLS12}, Ciphers: []Cipher{CipherAES128GCM}},
		},
		{
			name: "mlx5 with crypto: TX on, RX offered but off",
			facts: Facts{Interface: "enp1s0f0", Driver: "mlx5_core", MTU: 1500,
				Features: features(map[string]Feature{FeatureTLSTX: on, FeatureTLSRX: off, FeatureLRO: off, FeatureGROHW: off}),
				XDP:      &XDPFacts{Features: mlx5All &^ (XDPNdoXmit | XDPNdoXmitSG), ZCMaxSegs: 1}},
			profile: "mlx5_core",
			reason: []string{"driver mlx5_core matched nic-profiles/mlx5_core.yaml",
				"profile has kTLS RX offload but tls-hw-rx-offload is off: no offload until `ethtool -K enp1s0f0 tls-hw-rx-offload on`"},
			noMatch: []string{"tls-hw-tx-offload"},
			want: Capabilities{XDPMode: "native", XDPFeatures: mlx5All &^ (XDPNdoXmit | XDPNdoXmitSG), AFXDPZeroCopy: true, ZCMaxSegs: 1, MaxMTU: 3498,
				KTLSTX: true, TLSVersions: []TLSVersion{TLS12}, Ciphers: []Cipher{CipherAES128GCM}},
		},
		{
			name: "mlx5 without crypto: tls-hw-* off [fixed]",
			facts: Facts{Interface: "enp1s0f0", Driver: "mlx5_core", MTU: 1500, Features: features(nil),
				XDP: &XDPFacts{Features: mlx5All, ZCMaxSegs: 1}},
			profile: "mlx5_core",
			reason: []string{"profile has kTLS TX offload but tls-hw-tx-offload is off [fixed]",
				"profile has kTLS RX offload but tls-hw-rx-offload is off [fixed]"},
			noMatch: []string{"xdp-features"},
			want: Capabilities{XDPMode: "native", XDPFeatures: mlx5All, AFXDPZeroCopy: true, ZCMaxSegs: 1, MaxMTU: 3498,
				TLSVersions: []TLSVersion{}, Ciphers: []Cipher{}},
		},
		{
			name: "mlx5 with LRO on: no XDP features, generic mode, quirk active",
			facts: Facts{Interface: "enp1s0f0", Driver: "mlx5_core", MTU: 1500,
				Features: features(map[string]Feature{FeatureLRO: on, FeatureTLSTX: onFixed, FeatureTLSRX: on}), XDP: &XDPFacts{}},
			profile: "mlx5_core",
			reason:  []string{"netdev xdp-features are [none] where the profile says"},
			want: Capabilities{XDPMode: "generic", MaxMTU: 3498,
				KTLSTX: true, KTLSRX: true, TLSVersions: []TLSVersion{TLS12}, Ciphers: []Cipher{CipherAES128GCM}},
			active: []string{"lro-clears-xdp"},
		},
		{
			name:    "ice with a jumbo MTU: multi-buffer",
			facts:   Facts{Interface: "ens1f0", Driver: "ice", MTU: 9000, Features: features(nil), XDP: &XDPFacts{Features: XDPBasic | XDPRedirect | XDPXSKZeroCopy | XDPRxSG, ZCMaxSegs: 8}},
			profile: "ice",
			reason:  []string{"MTU 9000 is above the driver's single-buffer XDP limit of 3046: multi-buffer"},
			want: Capabilities{XDPMode: "native", XDPFeatures: XDPBasic | XDPRedirect | XDPXSKZeroCopy | XDPRxSG, AFXDPZeroCopy: true, ZCMaxSegs: 8,
				MaxMTU: 3046, MultiBuffer: true, TLSVersions: []TLSVersion{}, Ciphers: []Cipher{}},
		},
		{
			name:    "ixgbe with a jumbo MTU: no multi-buffer, expect generic",
			facts:   Facts{Interface: "eth1", Driver: "ixgbe", MTU: 9000},
			profile: "ixgbe",
			reason:  []string{"MTU 9000 is above the driver's XDP limit of 3050 and it has no multi-buffer XDP: native attach will fail"},
			want: Capabilities{XDPMode: "generic", XDPFeatures: XDPBasic | XDPRedirect | XDPNdoXmit | XDPXSKZeroCopy, AFXDPZeroCopy: true, ZCMaxSegs: 1,
				MaxMTU: 3050, TLSVersions: []TLSVersion{}, Ciphers: []Cipher{}},
		},
		{
			name: "virtio_net with guest offloads on",
			facts: Facts{Interface: "ens3", Driver: "virtio_net", MTU: 1500, Features: features(map[string]Feature{FeatureGROHW: on}),
				XDP: &XDPFacts{Features: XDPBasic | XDPRedirect | XDPRxSG}},
			profile: "virtio_net",
			want: Capabilities{XDPMode: "native", XDPFeatures: XDPBasic | XDPRedirect | XDPRxSG, MaxMTU: 3506,
				TLSVersions: []TLSVersion{}, Ciphers: []Cipher{}},
			active: []string{"guest-offloads-block-xdp"},
		},
		{
			name:    "a driver whose profile has no LRO quirk, with LRO on: lro-on added",
			facts:   Facts{Interface: "ens3", Driver: "ixgbe", MTU: 1500, Features: features(map[string]Feature{FeatureLRO: on}), XDP: &XDPFacts{Features: XDPBasic | XDPRedirect | XDPNdoXmit | XDPXSKZeroCopy}},
			profile: "ixgbe",
			want: Capabilities{XDPMode: "native", XDPFeatures: XDPBasic | XDPRedirect | XDPNdoXmit | XDPXSKZeroCopy, AFXDPZeroCopy: true, ZCMaxSegs: 1,
				MaxMTU: 3050, TLSVersions: []TLSVersion{}, Ciphers: []Cipher{}},
			active: []string{"lro-on"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Choose(tt.facts)
			if err != nil {
				t.Fatalf("Choose: %v", err)
			}
			if d.Profile.Name != tt.profile {
				t.Errorf("profile %s, want %s", d.Profile.Name, tt.profile)
			}
			if d.Interface != tt.facts.Interface {
				t.Errorf("interface %q, want %q", d.Interface, tt.facts.Interface)
			}
			rest := d.Reason
			for _, w := range tt.reason {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Errorf("reason %q\nlacks (in order) %q", d.Reason, w)
					continue
				}
				rest = rest[i+len(w):]
			}
			for _, w := range tt.noMatch {
				if strings.Contains(d.Reason, w) {
					t.Errorf("reason %q\nmentions %q", d.Reason, w)
				}
			}
			var active []string
			for _, q := range d.Capabilities.Quirks {
				if q.Active {
					active = append(active, q.ID)
				}
			}
			if d := cmp.Diff(tt.active, active); d != "" {
				t.Errorf("active quirks (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.want, d.Capabilities, cmpopts.IgnoreFields(Capabilities{}, "Quirks")); d != "" {
				t.Errorf("capabilities (-want +got):\n%s", d)
			}
		})
	}
}

// TestChooseKeepsProfileQuirks: every quirk of the profile is reported,
// active or not, so fibctl nic can show them all.
func TestChooseKeepsProfileQuirks(t *testing.T) {
	d, err := Choose(Facts{Interface: "x", Driver: "bnxt_en"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, q := range d.Capabilities.Quirks {
		got = append(got, q.ID)
	}
	want := []string{"xdp-needs-combined-channels", "xdp-disables-tpa", "ktls-software-only"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("quirks (-want +got):\n%s", d)
	}
}
