package fib

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	nicprofiles "github.com/fibmesh/fibmesh/nic-profiles"
	xfib "github.com/fibmesh/fibmesh/xdp/fib"
)

// NIC is what one copy of the FIB program is specialised for: the
// load-time constants of xdp/fib/prog.c (cfg_nic_profile, cfg_nic_flags,
// cfg_max_frame_len), taken from the NIC profile of the interface it is
// attached to. The zero NIC is the generic profile with no frame limit:
// the program Program returns.
type NIC struct {
	// Profile is the interface's nicprofiles profile ID (enum
	// nic_profile in xdp/headers/consts.h).
	Profile uint32
	// Frags loads the program frags-aware (BPF_F_XDP_HAS_FRAGS, and
	// NIC_F_XDP_FRAGS in cfg_nic_flags): native XDP needs it when the
	// MTU is above the driver's single-buffer limit. Frames that span
	// several buffers then go to the stack (pass_frame_too_big).
	Frags bool
	// MaxFrame is the largest frame the FIB forwards in XDP; longer ones
	// go to the stack (pass_frame_too_big), which segments them instead
	// of the kernel dropping a redirect above the target's MTU. 0 means
	// no limit.
	MaxFrame uint32
}

// NICFor returns the constants for a detected interface: its profile,
// Frags where its MTU needs multi-buffer XDP, and a MaxFrame of its MTU
// plus Ethernet and VLAN headers (nicprofiles.FrameLen).
func NICFor(d *nicprofiles.Detection) NIC {
	n := NIC{Profile: d.Profile.ID, Frags: d.Capabilities.MultiBuffer}
	if d.Facts.MTU > 0 {
		n.MaxFrame = uint32(nicprofiles.FrameLen(d.Facts.MTU))
	}
	return n
}

// String names the profile and the options: "veth max-frame=1518".
func (n NIC) String() string {
	name := fmt.Sprintf("profile-%d", n.Profile)
	if int(n.Profile) < len(nicprofiles.Names) {
		name = nicprofiles.Names[n.Profile]
	}
	parts := []string{name}
	if n.Frags {
		parts = append(parts, "frags")
	}
	if n.MaxFrame > 0 {
		parts = append(parts, fmt.Sprintf("max-frame=%d", n.MaxFrame))
	}
	return strings.Join(parts, " ")
}

// setNIC writes n into a spec's load-time constants and program flags.
func setNIC(spec *ebpf.CollectionSpec, n NIC) error {
	var flags uint32
	if n.Frags {
		flags |= uint32(xfib.FibNicFlagsNIC_F_XDP_FRAGS)
	}
	for _, v := range []struct {
		name  string
		value uint32
	}{
		{xfib.FibVarCfgNicProfile, n.Profile},
		{xfib.FibVarCfgNicFlags, flags},
		{xfib.FibVarCfgMaxFrameLen, n.MaxFrame},
	} {
		vs, ok := spec.Variables[v.name]
		if !ok {
			return fmt.Errorf("FIB object has no load-time constant %s: regenerate xdp/fib (go generate ./xdp/fib/)", v.name)
		}
		if err := vs.Set(v.value); err != nil {
			return fmt.Errorf("set %s: %w", v.name, err)
		}
	}
	prog := spec.Programs[xfib.FibProgFibForward]
	if prog == nil {
		return fmt.Errorf("FIB object has no program %s", xfib.FibProgFibForward)
	}
	if n.Frags {
		prog.Flags |= unix.BPF_F_XDP_HAS_FRAGS
	} else {
		prog.Flags &^= unix.BPF_F_XDP_HAS_FRAGS
	}
	return nil
}

// ProgramFor returns the FIB program specialised for n, loading it on
// first use. Every copy shares the FIB's maps (routes, flows, policy,
// counters, devmap, punt sockets); only the constants differ. The
// program is closed by Close. A FIB from OpenPinned has no program to
// copy: that is an error.
func (f *FIB) ProgramFor(n NIC) (*ebpf.Program, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.progs[n]; ok {
		return p, nil
	}
	if f.spec == nil {
		return nil, errors.New("load FIB program: this FIB was opened from pins without its program (OpenPinned); use Open")
	}
	spec := f.spec.Copy()
	if err := setNIC(spec, n); err != nil {
		return nil, fmt.Errorf("load FIB program for %s: %w", n, err)
	}
	o := f.objs
	opts := ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		xfib.FibMapRoutes:    o.Routes,
		xfib.FibMapFlows:     o.Flows,
		xfib.FibMapPolicy:    o.Policy,
		xfib.FibMapServices:  o.Services,
		xfib.FibMapStats:     o.Stats,
		xfib.FibMapTxPorts:   o.TxPorts,
		xfib.FibMapPuntSlots: o.PuntSlots,
		xfib.FibMapXsks:      o.Xsks,
	}}
	// Every copy shares every map: a map left out would be created
	// anew for this copy alone (or fail to pin), splitting the FIB.
	for name := range spec.Maps {
		if _, ok := opts.MapReplacements[name]; !ok && !strings.HasPrefix(name, ".") {
			return nil, fmt.Errorf("load FIB program for %s: map %s is not shared with the other copies (fastpath/fib nic.go)", n, name)
		}
	}
	var objs struct {
		Prog *ebpf.Program `ebpf:"fib_forward"`
	}
	if err := spec.LoadAndAssign(&objs, &opts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load FIB program for %s: verifier rejected it: %+v", n, ve)
		}
		return nil, fmt.Errorf("load FIB program for %s: %w", n, err)
	}
	f.progs[n] = objs.Prog
	return objs.Prog, nil
}

// ReadNIC reads the load-time constants of a loaded FIB program back from
// the kernel (its .rodata map): what the program really runs with, for
// tools and tests. It fails for a program that is not the FIB.
func ReadNIC(prog *ebpf.Program) (NIC, error) {
	info, err := prog.Info()
	if err != nil {
		return NIC{}, fmt.Errorf("read program info: %w", err)
	}
	ids, ok := info.MapIDs()
	if !ok {
		return NIC{}, errors.New("read program info: the kernel does not report its maps")
	}
	spec, err := xfib.LoadFib()
	if err != nil {
		return NIC{}, fmt.Errorf("load embedded FIB object: %w", err)
	}
	for _, id := range ids {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			return NIC{}, fmt.Errorf("open map %d of the program: %w", id, err)
		}
		mi, err := m.Info()
		if err != nil || mi.Name != ".rodata" {
			m.Close()
			continue
		}
		val := make([]byte, mi.ValueSize)
		err = m.Lookup(uint32(0), &val)
		m.Close()
		if err != nil {
			return NIC{}, fmt.Errorf("read .rodata of the program: %w", err)
		}
		get := func(name string) (uint32, error) {
			vs, ok := spec.Variables[name]
			if !ok || int(vs.Offset)+4 > len(val) {
				return 0, fmt.Errorf("read .rodata of the program: no %s in it: not the FIB, or a different build", name)
			}
			var v uint32
			if err := (&ebpf.VariableSpec{Value: val[vs.Offset : vs.Offset+4]}).Get(&v); err != nil {
				return 0, err
			}
			return v, nil
		}
		var n NIC
		var flags uint32
		if n.Profile, err = get(xfib.FibVarCfgNicProfile); err != nil {
			return NIC{}, err
		}
		if flags, err = get(xfib.FibVarCfgNicFlags); err != nil {
			return NIC{}, err
		}
		if n.MaxFrame, err = get(xfib.FibVarCfgMaxFrameLen); err != nil {
			return NIC{}, err
		}
		n.Frags = flags&uint32(xfib.FibNicFlagsNIC_F_XDP_FRAGS) != 0
		return n, nil
	}
	return NIC{}, errors.New("the program has no .rodata map: not the FIB")
}
