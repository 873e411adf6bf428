// Package fib loads the fibmesh XDP FIB (xdp/fib), pins its maps so they
// outlive the agent, attaches it to interfaces (one copy of the program
// per NIC profile, its load-time constants set from nic-profiles), and
// offers a typed API over its maps: Routes, Flows, Policy, Stats, TxPorts
// and punt slots.
//
// Open with a PinDir re-opens the maps an earlier agent pinned there, so
// routes, flows, policy and counters survive a restart; Attach re-uses a
// pinned XDP link and atomically swaps in the new program, so forwarding
// never stops while the agent restarts.
package fib

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	nicprofiles "github.com/fibmesh/fibmesh/nic-profiles"
	xfib "github.com/fibmesh/fibmesh/xdp/fib"
)

// DefaultPinRoot is where agents pin their FIB, one directory per node.
const DefaultPinRoot = "/sys/fs/bpf/fibmesh"

// Options configure Open.
type Options struct {
	// PinDir is the bpffs directory for maps and links. Empty means
	// nothing is pinned: everything goes away on Close (tests).
	PinDir string
	// MaxFlows overrides the flow table size (default 262144).
	MaxFlows uint32
	// MaxRoutes overrides the route table size (default 65536).
	MaxRoutes uint32
	// NIC sets the load-time constants of the program Program returns
	// (default: the generic profile, no frame limit). Attach loads a
	// copy per NIC profile in use.
	NIC NIC
}

// FIB is a loaded XDP FIB program with its maps.
type FIB struct {
	objs   xfib.FibObjects
	pinDir string
	links  []link.Link
	spec   *ebpf.CollectionSpec // nil for OpenPinned

	mu    sync.Mutex
	progs map[NIC]*ebpf.Program // by constants; objs.FibForward among them

	Routes   *Routes
	Flows    *Flows
	Policy   *Policy
	Services *Services
	Stats    *Stats
	TxPorts  *TxPorts
	Punt     *PuntSlots
}

// ErrNotBPFFS is returned when a pin directory is not on a bpffs mount.
var ErrNotBPFFS = errors.New("not on a bpffs mount")

// CheckBPFFS returns ErrNotBPFFS (wrapped, with the fix) if dir's nearest
// existing parent is not on bpffs.
func CheckBPFFS(dir string) error {
	p := dir
	for {
		var st unix.Statfs_t
		err := unix.Statfs(p, &st)
		if err == nil {
			if st.Type != unix.BPF_FS_MAGIC {
				return fmt.Errorf("pin directory %s: %s is %w; mount it with `mount -t bpf bpf /sys/fs/bpf` (note: `ip netns exec` remounts /sys and hides bpffs: use `nsenter --net=/run/netns/NAME` instead)", dir, p, ErrNotBPFFS)
			}
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pin directory %s: statfs %s: %w", dir, p, err)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return fmt.Errorf("pin directory %s: %w", dir, ErrNotBPFFS)
		}
		p = parent
	}
}

// Spec returns the FIB's collection spec with the sizes and load-time
// constants from opts.
func Spec(opts Options) (*ebpf.CollectionSpec, error) {
	spec, err := xfib.LoadFib()
	if err != nil {
		return nil, fmt.Errorf("load embedded FIB object: %w", err)
	}
	if opts.MaxFlows > 0 {
		spec.Maps[xfib.FibMapFlows].MaxEntries = opts.MaxFlows
	}
	if opts.MaxRoutes > 0 {
		spec.Maps[xfib.FibMapRoutes].MaxEntries = opts.MaxRoutes
	}
	if opts.PinDir == "" {
		for _, m := range spec.Maps {
			m.Pinning = ebpf.PinNone
		}
	}
	if err := setNIC(spec, opts.NIC); err != nil {
		return nil, err
	}
	return spec, nil
}

// Open loads the FIB program. With opts.PinDir set, maps already pinned
// there are re-used (their contents stay) and new ones are pinned; a map
// whose pinned shape differs from the program's (an incompatible upgrade)
// is an error that names the map and says to remove the pin directory.
func Open(opts Options) (*FIB, error) {
	spec, err := Spec(opts)
	if err != nil {
		return nil, err
	}
	var copts ebpf.CollectionOptions
	if opts.PinDir != "" {
		if err := CheckBPFFS(opts.PinDir); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(opts.PinDir, 0o700); err != nil {
			return nil, fmt.Errorf("create pin directory: %w", err)
		}
		copts.Maps.PinPath = opts.PinDir
	}
	f := &FIB{pinDir: opts.PinDir, spec: spec}
	if err := spec.LoadAndAssign(&f.objs, &copts); err != nil {
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("load FIB: a map pinned in %s does not match this program (%w); remove the directory (`fibmesh-agent --cleanup`) and restart", opts.PinDir, err)
		}
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load FIB: verifier rejected the program: %+v", ve)
		}
		return nil, fmt.Errorf("load FIB: %w", err)
	}
	f.progs = map[NIC]*ebpf.Program{opts.NIC: f.objs.FibForward}
	f.wire()
	return f, nil
}

// Program returns the loaded XDP program with the constants of
// Options.NIC (for tests: prog.Run). ProgramFor returns the copies
// Attach uses.
func (f *FIB) Program() *ebpf.Program { return f.objs.FibForward }

// PinDir returns the pin directory ("" when not pinned).
func (f *FIB) PinDir() string { return f.pinDir }

// Close releases the program and map file descriptors. Pinned maps and
// links stay, and so does forwarding on attached interfaces.
func (f *FIB) Close() error {
	var errs []error
	for _, l := range f.links {
		errs = append(errs, l.Close())
	}
	f.links = nil
	f.mu.Lock()
	for n, p := range f.progs {
		if p != f.objs.FibForward {
			errs = append(errs, p.Close())
		}
		delete(f.progs, n)
	}
	f.mu.Unlock()
	errs = append(errs, f.objs.Close())
	return errors.Join(errs...)
}

// AttachMode is how XDP is attached to an interface.
type AttachMode string

// Attach modes.
const (
	AttachDriver  AttachMode = "driver"
	AttachGeneric AttachMode = "generic"
)

func linkPin(pinDir, ifname string) string {
	return filepath.Join(pinDir, "links", "xdp_"+ifname)
}

// Attach attaches the FIB program to an interface of the calling thread's
// network namespace, specialised for the interface's NIC profile: it
// detects the profile (nicprofiles.Detect) and calls AttachNIC with
// NICFor's constants. It returns the detection, for the caller to report.
func (f *FIB) Attach(ifname string) (AttachMode, *nicprofiles.Detection, error) {
	d, err := nicprofiles.Detect(ifname)
	if err != nil {
		return "", nil, fmt.Errorf("attach XDP to %s: %w", ifname, err)
	}
	mode, err := f.AttachNIC(ifname, NICFor(d))
	return mode, d, err
}

// AttachNIC attaches the copy of the FIB program specialised for nic
// (ProgramFor) to an interface of the calling thread's network namespace:
// in driver mode, falling back to generic mode where the driver has no
// XDP support. The interface is added to tx_ports so routes may redirect
// to it. With a pin directory, the XDP link is pinned and an earlier
// agent's pinned link is updated in place (no gap in forwarding).
func (f *FIB) AttachNIC(ifname string, nic NIC) (AttachMode, error) {
	iface, err := netInterface(ifname)
	if err != nil {
		return "", err
	}
	prog, err := f.ProgramFor(nic)
	if err != nil {
		return "", fmt.Errorf("attach XDP to %s: %w", ifname, err)
	}
	if err := f.TxPorts.Add(iface); err != nil {
		return "", err
	}
	if f.pinDir != "" {
		if l, err := link.LoadPinnedLink(linkPin(f.pinDir, ifname), nil); err == nil {
			info, ierr := l.Info()
			if ierr == nil && info.XDP() != nil && int(info.XDP().Ifindex) == iface {
				if uerr := l.Update(prog); uerr == nil {
					f.links = append(f.links, l)
					return attachedMode(iface), nil
				}
			}
			// Stale pin (interface gone or re-created): replace it.
			_ = l.Unpin()
			l.Close()
		}
	}
	mode := AttachDriver
	l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: iface, Flags: link.XDPDriverMode})
	if err != nil {
		mode = AttachGeneric
		var gerr error
		l, gerr = link.AttachXDP(link.XDPOptions{Program: prog, Interface: iface, Flags: link.XDPGenericMode})
		if gerr != nil {
			return "", fmt.Errorf("attach XDP to %s: driver mode: %v; generic mode: %w", ifname, err, gerr)
		}
	}
	if f.pinDir != "" {
		p := linkPin(f.pinDir, ifname)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			l.Close()
			return "", fmt.Errorf("attach XDP to %s: %w", ifname, err)
		}
		if err := l.Pin(p); err != nil {
			l.Close()
			return "", fmt.Errorf("attach XDP to %s: pin link: %w", ifname, err)
		}
	}
	f.links = append(f.links, l)
	return mode, nil
}

// Detach removes the FIB program from an interface (and its pinned link)
// and removes the interface from tx_ports. An interface without the
// program is not an error.
func (f *FIB) Detach(ifname string) error {
	var errs []error
	if f.pinDir != "" {
		if l, err := link.LoadPinnedLink(linkPin(f.pinDir, ifname), nil); err == nil {
			errs = append(errs, l.Unpin(), l.Close())
		}
	}
	iface, err := netInterface(ifname)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	kept := f.links[:0]
	for _, l := range f.links {
		info, ierr := l.Info()
		if ierr == nil && info.XDP() != nil && int(info.XDP().Ifindex) == iface {
			_ = l.Unpin()
			errs = append(errs, l.Close())
			continue
		}
		kept = append(kept, l)
	}
	f.links = kept
	errs = append(errs, f.TxPorts.Remove(iface))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("detach XDP from %s: %w", ifname, err)
	}
	return nil
}

// Remove detaches every link pinned under pinDir and deletes the
// directory with its maps: the node's FIB is gone afterwards. A missing
// directory is not an error.
func Remove(pinDir string) error {
	links, _ := filepath.Glob(filepath.Join(pinDir, "links", "*"))
	var errs []error
	for _, p := range links {
		l, err := link.LoadPinnedLink(p, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("open pinned link %s: %w", p, err))
			continue
		}
		errs = append(errs, l.Unpin(), l.Close())
	}
	if err := os.RemoveAll(pinDir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove FIB pinned in %s: %w", pinDir, err)
	}
	return nil
}

// OpenPinned opens the maps an agent pinned in pinDir, without loading
// the program: for tools (fibctl) that read or edit a running node's FIB.
// Close it like an Opened FIB; the agent's FIB is not affected.
func OpenPinned(pinDir string) (*FIB, error) {
	if err := CheckBPFFS(pinDir); err != nil {
		return nil, err
	}
	f := &FIB{pinDir: pinDir}
	maps := []struct {
		name string
		dst  **ebpf.Map
	}{
		{xfib.FibMapRoutes, &f.objs.Routes},
		{xfib.FibMapFlows, &f.objs.Flows},
		{xfib.FibMapPolicy, &f.objs.Policy},
		{xfib.FibMapServices, &f.objs.Services},
		{xfib.FibMapStats, &f.objs.Stats},
		{xfib.FibMapTxPorts, &f.objs.TxPorts},
		{xfib.FibMapPuntSlots, &f.objs.PuntSlots},
		{xfib.FibMapXsks, &f.objs.Xsks},
	}
	for _, m := range maps {
		mm, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, m.name), nil)
		if err != nil {
			f.objs.Close()
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("no FIB pinned in %s (map %s missing): is the agent running on this node, with this --pin-dir?", pinDir, m.name)
			}
			return nil, fmt.Errorf("open pinned map %s in %s: %w", m.name, pinDir, err)
		}
		*m.dst = mm
	}
	f.wire()
	return f, nil
}

// Attached lists the interfaces with a pinned FIB link in pinDir.
func Attached(pinDir string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(pinDir, "links"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list attached interfaces: %w", err)
	}
	var out []string
	for _, e := range ents {
		if name, ok := strings.CutPrefix(e.Name(), "xdp_"); ok {
			out = append(out, name)
		}
	}
	return out, nil
}

// wire builds the typed API over the loaded maps.
func (f *FIB) wire() {
	f.Routes = &Routes{f.objs.Routes}
	f.Flows = &Flows{f.objs.Flows}
	f.Policy = &Policy{f.objs.Policy}
	f.Services = &Services{m: f.objs.Services}
	f.Stats = &Stats{f.objs.Stats}
	f.TxPorts = &TxPorts{f.objs.TxPorts}
	f.Punt = &PuntSlots{slots: f.objs.PuntSlots, xsks: f.objs.Xsks}
}
