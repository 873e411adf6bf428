// Package nicprofiles says what each NIC driver offers fibmesh's data
// path: XDP in native (driver) or generic mode and which XDP features,
// AF_XDP zero-copy, kTLS TX/RX device offload and its TLS versions and
// ciphers, frame-size limits, known quirks, and queue and RSS advice.
//
// The profiles are the YAML files beside this package (one per driver and
// a generic fallback), embedded at build time and decoded strictly: an
// unknown field, a value of the wrong type or out of range, a missing
// required field or a second YAML document is an error that names the
// file, the line and the field. Every fact in a profile cites its source
// (kernel documentation or driver code) in a YAML comment.
//
// Detect reads what the kernel reports about an interface (its driver,
// netdev features, MTU and, on kernels with the netdev genetlink family,
// its XDP feature bits) and chooses a profile; where the measured facts
// and the profile disagree, the facts win and the reason says so. The
// loader (fastpath/fib) turns the result into BPF load-time constants and
// fibctl nic prints it.
package nicprofiles

import (
	"fmt"
	"slices"
	"strings"
)

// Profile is one NIC driver's capabilities as the YAML file states them.
// Profiles returned by this package are shared: callers must not modify
// them.
type Profile struct {
	// Name is the profile's name, the file's base name without ".yaml".
	Name string `yaml:"name" json:"name"`
	// Drivers are the kernel driver names (`ethtool -i IFACE`, "driver:")
	// the profile applies to. Empty only for the generic fallback.
	Drivers []string `yaml:"drivers" json:"drivers"`
	// Description says which hardware this is, in a line.
	Description string `yaml:"description" json:"description"`
	XDP         XDP    `yaml:"xdp" json:"xdp"`
	AFXDP       AFXDP  `yaml:"afXDP" json:"afXDP"`
	KTLS        KTLS   `yaml:"ktls" json:"ktls"`
	Advice      Advice `yaml:"advice" json:"advice"`
	// Quirks are known pitfalls of the driver, with their fix.
	Quirks []Quirk `yaml:"quirks" json:"quirks,omitempty"`

	// ID is the profile's number: the BPF load-time constant
	// cfg_nic_profile, which must match NIC_PROFILE_<NAME> of enum
	// nic_profile in xdp/headers/consts.h. It is not in the YAML: it is
	// the profile's index in Names.
	ID uint32 `yaml:"-" json:"id"`
	// File is where the profile came from ("nic-profiles/veth.yaml").
	File string `yaml:"-" json:"file"`
}

// XDP is what the driver offers XDP programs.
type XDP struct {
	// Native is true when the driver runs XDP programs itself (driver
	// mode, XDP_FLAGS_DRV_MODE).
	Native bool `yaml:"native" json:"native"`
	// Generic is true when generic (skb) mode works: true for every
	// netdev, stated so that a profile says it explicitly.
	Generic bool `yaml:"generic" json:"generic"`
	// Features are the netdev XDP feature bits (NETDEV_XDP_ACT_*) the
	// driver sets with an XDP program attached, LRO off and enough
	// queues: what `ynl --family netdev --dump dev-get` shows then.
	Features XDPFeatures `yaml:"features" json:"features"`
	// MaxMTU is the largest MTU at which the driver attaches a
	// single-buffer XDP program in native mode, with 4 KiB pages: above
	// it native XDP needs a multi-buffer (frags-aware) program, or fails
	// to attach. 0 means the driver sets no limit below its own maximum
	// MTU (or none is known).
	MaxMTU int `yaml:"maxMTU" json:"maxMTU"`
}

// AFXDP is what the driver offers AF_XDP sockets (the agent's punt path).
type AFXDP struct {
	// ZeroCopy is true when AF_XDP sockets bind in zero-copy mode
	// (XDP_ZEROCOPY); otherwise they work in copy mode.
	ZeroCopy bool `yaml:"zeroCopy" json:"zeroCopy"`
	// ZCMaxSegs is the netdev attribute xdp-zc-max-segs: how many buffers
	// one zero-copy frame may span (1: no multi-buffer AF_XDP). 0 when
	// ZeroCopy is false.
	ZCMaxSegs int `yaml:"zcMaxSegs" json:"zcMaxSegs"`
}

// KTLS is the driver's kTLS device offload (Documentation/networking/
// tls-offload.rst, "TLS_HW" mode): record crypto done by the NIC.
type KTLS struct {
	// TXOffload: the NIC encrypts (ethtool feature tls-hw-tx-offload).
	TXOffload bool `yaml:"txOffload" json:"txOffload"`
	// RXOffload: the NIC decrypts (ethtool feature tls-hw-rx-offload).
	RXOffload bool `yaml:"rxOffload" json:"rxOffload"`
	// Versions and Ciphers are what the offload accepts. Both are empty
	// when neither direction is offloaded, and non-empty otherwise.
	Versions []TLSVersion `yaml:"versions" json:"versions"`
	Ciphers  []Cipher     `yaml:"ciphers" json:"ciphers"`
}

// Offloads reports whether either direction is offloaded.
func (k KTLS) Offloads() bool { return k.TXOffload || k.RXOffload }

// Advice is operational advice for running the FIB on this driver.
type Advice struct {
	// Queues: how many queues, and how to set them (ethtool -L).
	Queues string `yaml:"queues" json:"queues"`
	// RSS: how to spread flows (ethtool -X / -N).
	RSS string `yaml:"rss" json:"rss"`
}

// Quirk is a known pitfall of a driver.
type Quirk struct {
	// ID is a short kebab-case name, unique within the profile.
	ID string `yaml:"id" json:"id"`
	// Summary says what goes wrong, in a sentence.
	Summary string `yaml:"summary" json:"summary"`
	// Fix says what to do about it.
	Fix string `yaml:"fix" json:"fix,omitempty"`
	// Feature, when set, is the netdev feature (one of Features) whose
	// being on makes the quirk bite: Detect marks the quirk active on an
	// interface where that feature is on.
	Feature string `yaml:"feature" json:"feature,omitempty"`
	// Mode, when set ("native" or "generic"), limits the quirk to
	// interfaces where the FIB runs in that XDP mode. A quirk with
	// neither Feature nor Mode is never marked active: it is advice.
	Mode string `yaml:"mode" json:"mode,omitempty"`
}

// TLSVersion is a TLS protocol version: "1.2" or "1.3".
type TLSVersion string

// TLS versions.
const (
	TLS12 TLSVersion = "1.2"
	TLS13 TLSVersion = "1.3"
)

var tlsVersions = []TLSVersion{TLS12, TLS13}

// Cipher is a kTLS cipher (include/uapi/linux/tls.h TLS_CIPHER_*), by its
// lower-case name.
type Cipher string

// The kTLS ciphers.
const (
	CipherAES128GCM        Cipher = "aes-128-gcm"
	CipherAES256GCM        Cipher = "aes-256-gcm"
	CipherAES128CCM        Cipher = "aes-128-ccm"
	CipherChaCha20Poly1305 Cipher = "chacha20-poly1305"
	CipherSM4GCM           Cipher = "sm4-gcm"
	CipherSM4CCM           Cipher = "sm4-ccm"
	CipherARIA128GCM       Cipher = "aria-128-gcm"
	CipherARIA256GCM       Cipher = "aria-256-gcm"
)

var ciphers = []Cipher{CipherAES128GCM, CipherAES256GCM, CipherAES128CCM, CipherChaCha20Poly1305,
	CipherSM4GCM, CipherSM4CCM, CipherARIA128GCM, CipherARIA256GCM}

// Features are the netdev features (kernel names, as in
// `ethtool --show-features`, legacy names in parentheses) that detection
// reads: LRO and hardware GRO conflict with XDP on most drivers, and the
// tls-hw-* features gate kTLS device offload.
var Features = []string{
	FeatureLRO,
	FeatureGRO,
	FeatureGROHW,
	FeatureTLSTX,
	FeatureTLSRX,
	FeatureTLSRecord,
}

// Netdev feature names (net/ethtool/common.c netdev_features_strings).
const (
	FeatureLRO       = "rx-lro"            // large-receive-offload
	FeatureGRO       = "rx-gro"            // generic-receive-offload
	FeatureGROHW     = "rx-gro-hw"         // hardware GRO (virtio_net guest TSO)
	FeatureTLSTX     = "tls-hw-tx-offload" // kTLS TX device offload
	FeatureTLSRX     = "tls-hw-rx-offload" // kTLS RX device offload
	FeatureTLSRecord = "tls-hw-record"     // TLS_HW_RECORD (TOE-style, not used)
)

// ValidationError is a profile that decoded but breaks a rule. Field is
// the dotted path of the offending field ("afXDP.zeroCopy").
type ValidationError struct {
	File  string
	Line  int // 0 when the field is absent
	Field string
	Msg   string
}

func (e *ValidationError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Field, e.Msg)
}

// validate checks the rules a decoded profile must follow. lines maps a
// field's dotted path to its line in the file. It returns every problem
// found, not just the first.
func (p *Profile) validate(name string, lines map[string]int) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &ValidationError{File: p.File, Line: lines[field], Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	for _, f := range []string{"name", "description", "xdp.native", "xdp.generic", "afXDP.zeroCopy", "ktls.txOffload", "ktls.rxOffload"} {
		if _, ok := lines[f]; !ok {
			bad(f, "required field is missing: state it explicitly (true/false or a value), with the source of the fact in a comment")
		}
	}
	if p.Name != name {
		bad("name", "%q does not match the file name: want %q", p.Name, name)
	}
	if strings.TrimSpace(p.Description) == "" {
		bad("description", "must not be empty")
	}
	if name == GenericName {
		if len(p.Drivers) != 0 {
			bad("drivers", "the generic fallback applies to every driver without a profile: it must list none, got %q", p.Drivers)
		}
	} else if len(p.Drivers) == 0 {
		bad("drivers", "must list at least one kernel driver name (ethtool -i IFACE)")
	}
	seen := map[string]bool{}
	for i, d := range p.Drivers {
		if d == "" || strings.ContainsAny(d, " \t/") {
			bad(fmt.Sprintf("drivers[%d]", i), "%q is not a driver name", d)
		}
		if seen[d] {
			bad(fmt.Sprintf("drivers[%d]", i), "driver %q is listed twice", d)
		}
		seen[d] = true
	}

	x := p.XDP
	if !x.Native && !x.Generic {
		bad("xdp.generic", "a profile with neither native nor generic XDP cannot carry the FIB: generic (skb) mode works on every netdev, set generic: true")
	}
	if x.Native && !x.Features.Has(XDPBasic) {
		bad("xdp.features", "native XDP needs at least %q (got %v)", XDPBasic.names()[0], x.Features)
	}
	if !x.Native && x.Features != 0 {
		bad("xdp.features", "lists %v but xdp.native is false: the feature bits describe native XDP", x.Features)
	}
	if x.MaxMTU != 0 && (x.MaxMTU < 1280 || x.MaxMTU > 65535) {
		bad("xdp.maxMTU", "%d is out of range: want 0 (no limit) or 1280-65535 bytes", x.MaxMTU)
	}

	a := p.AFXDP
	if a.ZeroCopy != x.Features.Has(XDPXSKZeroCopy) {
		bad("afXDP.zeroCopy", "is %t but xdp.features %s xsk-zerocopy: the two must agree", a.ZeroCopy, map[bool]string{true: "lists", false: "lacks"}[x.Features.Has(XDPXSKZeroCopy)])
	}
	switch {
	case !a.ZeroCopy && a.ZCMaxSegs != 0:
		bad("afXDP.zcMaxSegs", "is %d without zero-copy: want 0", a.ZCMaxSegs)
	case a.ZeroCopy && (a.ZCMaxSegs < 1 || a.ZCMaxSegs > 64):
		bad("afXDP.zcMaxSegs", "is %d: want 1 (no multi-buffer AF_XDP) to 64", a.ZCMaxSegs)
	}

	k := p.KTLS
	if k.Offloads() {
		if len(k.Versions) == 0 {
			bad("ktls.versions", "kTLS offload is on: list the TLS versions it accepts (mainline: [\"1.2\"])")
		}
		if len(k.Ciphers) == 0 {
			bad("ktls.ciphers", "kTLS offload is on: list the ciphers it accepts (mainline NICs: [aes-128-gcm])")
		}
	} else {
		if len(k.Versions) != 0 {
			bad("ktls.versions", "lists %q but neither txOffload nor rxOffload is on: remove it", k.Versions)
		}
		if len(k.Ciphers) != 0 {
			bad("ktls.ciphers", "lists %q but neither txOffload nor rxOffload is on: remove it", k.Ciphers)
		}
	}
	if dup := firstDup(k.Versions); dup >= 0 {
		bad(fmt.Sprintf("ktls.versions[%d]", dup), "%q is listed twice", k.Versions[dup])
	}
	if dup := firstDup(k.Ciphers); dup >= 0 {
		bad(fmt.Sprintf("ktls.ciphers[%d]", dup), "%q is listed twice", k.Ciphers[dup])
	}

	if strings.TrimSpace(p.Advice.Queues) == "" {
		bad("advice.queues", "must not be empty: say how many queues to give the interface")
	}
	ids := map[string]bool{}
	for i, q := range p.Quirks {
		f := fmt.Sprintf("quirks[%d]", i)
		if !isKebab(q.ID) {
			bad(f+".id", "%q: want a kebab-case id (lower-case letters, digits, '-')", q.ID)
		}
		if ids[q.ID] {
			bad(f+".id", "%q is used twice", q.ID)
		}
		ids[q.ID] = true
		if strings.TrimSpace(q.Summary) == "" {
			bad(f+".summary", "must not be empty")
		}
		if q.Feature != "" && !slices.Contains(Features, q.Feature) {
			bad(f+".feature", "%q is not a feature detection reads: want one of %s", q.Feature, strings.Join(Features, ", "))
		}
		if q.Mode != "" && q.Mode != "native" && q.Mode != "generic" {
			bad(f+".mode", "%q: want native or generic", q.Mode)
		}
	}
	return errs
}

func firstDup[T comparable](s []T) int {
	for i := range s {
		if slices.Index(s[:i], s[i]) >= 0 {
			return i
		}
	}
	return -1
}

func isKebab(s string) bool {
	if s == "" || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}
