package ktls

import (
	"fmt"
	"strings"
)

// Capabilities is what the running kernel offers, as Probe found it by
// trying: a loopback TCP pair per version and cipher, keys installed each
// way, a record sent and received each way.
type Capabilities struct {
	// Kernel is the release (uname -r).
	Kernel string
	// ULP is true when the tls upper-layer protocol could be set;
	// ULPError says why not.
	ULP      bool
	ULPError string
	// AvailableULPs is /proc/sys/net/ipv4/tcp_available_ulp after the
	// probe (setting the ULP loads tls.ko on demand).
	AvailableULPs []string
	// Suites has one entry per version and cipher tried.
	Suites []SuiteSupport
	// Rekey is true when the kernel accepts a second TLS_TX/TLS_RX on a
	// TLS 1.3 socket, so a KeyUpdate can be followed (Linux 6.14+).
	Rekey bool
	// Stat is /proc/net/tls_stat (nil if the kernel has none): among
	// others TlsCurrTxSw/TlsCurrRxSw and TlsCurrTxDevice/TlsCurrRxDevice,
	// the connections in software and on the NIC.
	Stat map[string]uint64
}

// SuiteSupport says whether the kernel installs and runs a version and
// cipher in each direction.
type SuiteSupport struct {
	Version Version
	Cipher  Cipher
	TX, RX  bool
	// Reason is empty when both work, else why not.
	Reason string
}

// Supports returns nil if v and c work in direction d, else an
// *UnsupportedError saying why.
func (caps *Capabilities) Supports(v Version, c Cipher, d Direction) error {
	if !caps.ULP {
		return &UnsupportedError{Version: v, Cipher: c, Direction: d, Reason: caps.ULPError}
	}
	for _, s := range caps.Suites {
		if s.Version != v || s.Cipher != c {
			continue
		}
		if (d == TX && s.TX) || (d == RX && s.RX) {
			return nil
		}
		return &UnsupportedError{Version: v, Cipher: c, Direction: d, Reason: s.Reason}
	}
	return &UnsupportedError{Version: v, Cipher: c, Direction: d, Reason: "not probed"}
}

// String is the one-line summary the agent logs at start-up.
func (caps *Capabilities) String() string {
	if !caps.ULP {
		return fmt.Sprintf("kernel %s: no kTLS (%s)", caps.Kernel, caps.ULPError)
	}
	var ok, bad []string
	for _, s := range caps.Suites {
		name := fmt.Sprintf("%v/%v", s.Version, s.Cipher)
		switch {
		case s.TX && s.RX:
			ok = append(ok, name)
		case s.TX:
			bad = append(bad, name+"(TX only)")
		case s.RX:
			bad = append(bad, name+"(RX only)")
		default:
			bad = append(bad, name)
		}
	}
	out := fmt.Sprintf("kernel %s: kTLS %s", caps.Kernel, strings.Join(ok, " "))
	if len(bad) > 0 {
		out += "; unsupported: " + strings.Join(bad, " ")
	}
	if caps.Rekey {
		out += "; KeyUpdate re-keying"
	} else {
		out += "; no KeyUpdate re-keying"
	}
	return out
}
