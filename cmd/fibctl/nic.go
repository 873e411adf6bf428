package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/fibmesh/fibmesh/fastpath/fib"
	"github.com/fibmesh/fibmesh/internal/output"
	nicprofiles "github.com/fibmesh/fibmesh/nic-profiles"
)

const nicUsage = `Usage:
  fibctl nic [-o table|json|yaml] [IFACE]

Shows the NIC profile (nic-profiles/<driver>.yaml) chosen for IFACE, or
for every interface but loopback, in the current network namespace: the
driver, the profile and why it was chosen (measured facts override the
profile, and the reason says where), the XDP mode and feature bits,
AF_XDP zero-copy, kTLS TX/RX device offload, the quirks (active ones
first) and the BPF load-time constants the agent attaches the FIB with.
It reads ethtool and netdev netlink; it needs no root and takes no
--node or --pin-dir: run it in the node's namespace
(nsenter --net=/run/netns/NODE fibctl nic). See docs/nic-profiles.md.

Flags:
`

// parseNIC checks a nic command line: [-o FORMAT] [IFACE]. format is the
// -o given before the command; one after it wins.
func parseNIC(args []string, format output.Format) (ifname string, outFormat output.Format, err error) {
	fs := flag.NewFlagSet("fibctl nic", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o := fs.String("o", string(format), output.FlagUsage)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", "", err
		}
		return "", "", usageError{"nic: " + err.Error()}
	}
	if outFormat, err = output.Parse(*o); err != nil {
		return "", "", usageError{"nic: " + err.Error()}
	}
	switch fs.NArg() {
	case 0:
	case 1:
		ifname = fs.Arg(0)
	default:
		return "", "", usageError{fmt.Sprintf("nic takes at most one IFACE, got %d: %q", fs.NArg(), fs.Args())}
	}
	return ifname, outFormat, nil
}

// nicOut is one interface in `fibctl nic` JSON and YAML: the field names
// are fibctl's contract with scripts.
type nicOut struct {
	Interface     string     `json:"interface"`
	Ifindex       int        `json:"ifindex"`
	MTU           int        `json:"mtu"`
	Driver        string     `json:"driver"`
	Profile       string     `json:"profile"`
	ProfileFile   string     `json:"profileFile"`
	Reason        string     `json:"reason"`
	XDPMode       string     `json:"xdpMode"`
	XDPFeatures   []string   `json:"xdpFeatures"`
	XDPMeasured   bool       `json:"xdpFeaturesMeasured"`
	MultiBuffer   bool       `json:"multiBuffer"`
	AFXDPZeroCopy bool       `json:"afXDPZeroCopy"`
	KTLSTX        bool       `json:"ktlsTX"`
	KTLSRX        bool       `json:"ktlsRX"`
	TLSVersions   []string   `json:"tlsVersions"`
	Ciphers       []string   `json:"ciphers"`
	Features      []string   `json:"features"` // "rx-lro off [fixed]"
	Quirks        []quirkOut `json:"quirks"`
	BPF           bpfOut     `json:"bpf"`
}

type quirkOut struct {
	ID      string `json:"id"`
	Active  bool   `json:"active"`
	Summary string `json:"summary"`
	Fix     string `json:"fix,omitempty"`
}

// bpfOut is the FIB's load-time constants for the interface.
type bpfOut struct {
	ProfileID uint32 `json:"profileID"`
	Frags     bool   `json:"frags"`
	MaxFrame  uint32 `json:"maxFrame"`
}

func nicRow(d *nicprofiles.Detection) nicOut {
	c := d.Capabilities
	o := nicOut{
		Interface: d.Interface, Ifindex: d.Facts.Ifindex, MTU: d.Facts.MTU, Driver: d.Facts.Driver,
		Profile: d.Profile.Name, ProfileFile: d.Profile.File, Reason: d.Reason,
		XDPMode: c.XDPMode, XDPFeatures: c.XDPFeatures.Names(), XDPMeasured: d.Facts.XDP != nil, MultiBuffer: c.MultiBuffer,
		AFXDPZeroCopy: c.AFXDPZeroCopy, KTLSTX: c.KTLSTX, KTLSRX: c.KTLSRX,
		TLSVersions: []string{}, Ciphers: []string{}, Features: []string{}, Quirks: []quirkOut{},
	}
	for _, v := range c.TLSVersions {
		o.TLSVersions = append(o.TLSVersions, string(v))
	}
	for _, ci := range c.Ciphers {
		o.Ciphers = append(o.Ciphers, string(ci))
	}
	if d.Facts.Features != nil {
		for _, f := range nicprofiles.Features {
			o.Features = append(o.Features, f+" "+d.Facts.Features[f].String())
		}
	}
	// Active quirks first: they are the ones to act on.
	for _, active := range []bool{true, false} {
		for _, q := range c.Quirks {
			if q.Active == active {
				o.Quirks = append(o.Quirks, quirkOut{ID: q.ID, Active: q.Active, Summary: q.Summary, Fix: q.Fix})
			}
		}
	}
	n := fib.NICFor(d)
	o.BPF = bpfOut{ProfileID: n.Profile, Frags: n.Frags, MaxFrame: n.MaxFrame}
	return o
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// nicCommand runs `fibctl nic`: detect, then print.
func nicCommand(out io.Writer, format output.Format, ifname string) error {
	var ds []*nicprofiles.Detection
	if ifname != "" {
		d, err := nicprofiles.Detect(ifname)
		if err != nil {
			return fmt.Errorf("nic: %w", err)
		}
		ds = append(ds, d)
	} else {
		var err error
		if ds, err = nicprofiles.DetectAll(); err != nil {
			return fmt.Errorf("nic: %w", err)
		}
	}
	rows := make([]nicOut, len(ds))
	for i, d := range ds {
		rows[i] = nicRow(d)
	}
	return output.Write(out, format, rows, func(w io.Writer) {
		fmt.Fprintln(w, "INTERFACE\tDRIVER\tPROFILE\tXDP\tXDP FEATURES\tAF_XDP ZC\tKTLS TX\tKTLS RX\tACTIVE QUIRKS")
		for _, r := range rows {
			drv := r.Driver
			if drv == "" {
				drv = "-"
			}
			mode := r.XDPMode
			if r.MultiBuffer {
				mode += "+frags"
			}
			feats := strings.Join(r.XDPFeatures, ",")
			if feats == "" {
				feats = "-"
			}
			var active []string
			for _, q := range r.Quirks {
				if q.Active {
					active = append(active, q.ID)
				}
			}
			if len(active) == 0 {
				active = []string{"-"}
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Interface, drv, r.Profile, mode, feats,
				yesNo(r.AFXDPZeroCopy), yesNo(r.KTLSTX), yesNo(r.KTLSRX), strings.Join(active, ","))
		}
		for _, r := range rows {
			fmt.Fprintf(w, "\n%s: %s\n", r.Interface, r.Reason)
			if r.KTLSTX || r.KTLSRX {
				fmt.Fprintf(w, "  kTLS offload: TLS %s, %s\n", strings.Join(r.TLSVersions, "/"), strings.Join(r.Ciphers, ", "))
			}
			fmt.Fprintf(w, "  BPF constants: profile %s (%d), frags %s, max frame %d\n", r.Profile, r.BPF.ProfileID, yesNo(r.BPF.Frags), r.BPF.MaxFrame)
			for _, q := range r.Quirks {
				tag := ""
				if q.Active {
					tag = " [active]"
				}
				fix := ""
				if q.Fix != "" {
					fix = " Fix: " + q.Fix
				}
				fmt.Fprintf(w, "  quirk %s%s: %s%s\n", q.ID, tag, q.Summary, fix)
			}
		}
	})
}
