// Package resolve finds the next hops of a node's routes in the kernel of
// the calling network namespace, with netlink: the host-side interface
// that reaches a local pod (the kernel's route to the pod's IP), and the
// MAC addresses of a next hop (the interface's own and the neighbour
// table's entry). Watch reports link and neighbour changes, so that what
// could not be resolved is retried as soon as it can be.
package resolve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/fastpath/fib"
)

// Netlink resolves next hops in the calling thread's network namespace.
// It implements the agent's reconcile.Resolver. It reads each interface's
// neighbour table once between calls to Refresh (which the reconciler
// makes at the start of each sync), not once per route: with a thousand
// nodes, one sync would otherwise list a thousand entries a thousand
// times. The zero value is ready to use; it is safe for concurrent use.
type Netlink struct {
	mu     sync.Mutex
	neighs map[int][]netlink.Neigh // ifindex -> its IPv4 neighbours
}

// Refresh forgets the neighbour tables read so far.
func (n *Netlink) Refresh() {
	n.mu.Lock()
	n.neighs = nil
	n.mu.Unlock()
}

func (n *Netlink) neighbours(ifindex int) ([]netlink.Neigh, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ns, ok := n.neighs[ifindex]; ok {
		return ns, nil
	}
	ns, err := netlink.NeighList(ifindex, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list neighbours: %w", err)
	}
	if n.neighs == nil {
		n.neighs = map[int][]netlink.Neigh{}
	}
	n.neighs[ifindex] = ns
	return ns, nil
}

// Pod returns the interface the kernel routes ip out of (a local pod's
// host-side veth) and the next hop to the pod: that interface's MAC as the
// source and the pod's MAC from the neighbour table as the destination.
func (n *Netlink) Pod(ip netip.Addr) (string, fib.NextHop, error) {
	rs, err := netlink.RouteGet(ip.AsSlice())
	if err != nil {
		return "", fib.NextHop{}, fmt.Errorf("route to pod %s: %w", ip, err)
	}
	if len(rs) == 0 || rs[0].LinkIndex <= 0 {
		return "", fib.NextHop{}, fmt.Errorf("route to pod %s: the kernel has none (is the pod's veth up, with a /32 route to it?)", ip)
	}
	if rs[0].Gw != nil {
		return "", fib.NextHop{}, fmt.Errorf("route to pod %s: the kernel routes it via %s, not straight to a veth: is the pod on this node?", ip, rs[0].Gw)
	}
	link, err := netlink.LinkByIndex(rs[0].LinkIndex)
	if err != nil {
		return "", fib.NextHop{}, fmt.Errorf("route to pod %s: interface %d: %w", ip, rs[0].LinkIndex, err)
	}
	a := link.Attrs()
	dmac, err := n.neighbour(a.Index, a.Name, ip)
	if err != nil {
		return a.Name, fib.NextHop{}, fmt.Errorf("pod %s on %s: %w", ip, a.Name, err)
	}
	return a.Name, fib.NextHop{Ifindex: a.Index, SrcMAC: a.HardwareAddr, DstMAC: dmac}, nil
}

// Remote returns the next hop out of nic towards the neighbour via.
func (n *Netlink) Remote(nic string, via netip.Addr) (fib.NextHop, error) {
	link, err := netlink.LinkByName(nic)
	if err != nil {
		return fib.NextHop{}, fmt.Errorf("interface %s: %w", nic, err)
	}
	a := link.Attrs()
	dmac, err := n.neighbour(a.Index, a.Name, via)
	if err != nil {
		return fib.NextHop{}, fmt.Errorf("next hop %s on %s: %w", via, nic, err)
	}
	return fib.NextHop{Ifindex: a.Index, SrcMAC: a.HardwareAddr, DstMAC: dmac}, nil
}

// neighbour returns ip's MAC from the neighbour table of ifindex. Where
// there is no entry it asks the kernel to resolve one (probe), so that a
// later attempt finds it, and returns an error; so it does for an entry
// not resolved (yet).
func (n *Netlink) neighbour(ifindex int, ifname string, ip netip.Addr) (net.HardwareAddr, error) {
	neighs, err := n.neighbours(ifindex)
	if err != nil {
		return nil, err
	}
	for _, e := range neighs {
		a, ok := netip.AddrFromSlice(e.IP)
		if !ok || a.Unmap() != ip {
			continue
		}
		if e.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE) == 0 && len(e.HardwareAddr) == 6 {
			return e.HardwareAddr, nil
		}
		// The kernel is resolving it already, or will on the next packet.
		return nil, fmt.Errorf("neighbour %s is not resolved yet (state %s); retrying", ip, neighState(e.State))
	}
	probe(ifindex, ip)
	return nil, fmt.Errorf("no neighbour entry for %s yet (asked the kernel to resolve it; it must answer ARP on %s, or have a static entry: ip neigh add %s lladdr MAC dev %s)", ip, ifname, ip, ifname)
}

// probe asks the kernel to resolve ip on ifindex, best effort: an entry
// created with NTF_USE starts resolution as if a packet were waiting. It
// is an add (NLM_F_EXCL), never a replace: a replace with NTF_USE turns
// a static entry made meanwhile into an INCOMPLETE one (measured on
// 6.18), while an add of an existing entry fails and changes nothing.
func probe(ifindex int, ip netip.Addr) {
	_ = netlink.NeighAdd(&netlink.Neigh{LinkIndex: ifindex, Family: netlink.FAMILY_V4, IP: ip.AsSlice(), Flags: unix.NTF_USE})
}

func neighState(s int) string {
	switch {
	case s&netlink.NUD_FAILED != 0:
		return "FAILED"
	case s&netlink.NUD_INCOMPLETE != 0:
		return "INCOMPLETE"
	}
	return fmt.Sprintf("0x%x", s)
}

// Watch calls changed on every link or neighbour update of the calling
// thread's network namespace until ctx is done. changed must not block
// (a Reconciler's Kick). It returns once both subscriptions are open.
//
// The kernel drops netlink events when a listener falls behind (ENOBUFS),
// and the library then closes the subscription: Watch calls lost with the
// reason, calls changed (what was missed must be re-read), and subscribes
// again after a backoff (100 ms doubling to 5 s), so that a changed MAC or
// ifindex is never left unnoticed until the next flow table. lost may be
// nil.
func Watch(ctx context.Context, changed func(), lost func(error)) error {
	links, neighs, done, err := subscribe()
	if err != nil {
		return err
	}
	go func() {
		backoff := 100 * time.Millisecond
		for {
			err := watch(ctx, links, neighs, changed)
			close(done)
			if ctx.Err() != nil {
				return
			}
			if lost != nil {
				lost(err)
			}
			changed()
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 5*time.Second)
				if links, neighs, done, err = subscribe(); err == nil {
					break
				}
				if lost != nil {
					lost(err)
				}
			}
			changed() // what changed while unsubscribed
		}
	}()
	return nil
}

func subscribe() (chan netlink.LinkUpdate, chan netlink.NeighUpdate, chan struct{}, error) {
	links := make(chan netlink.LinkUpdate, 64)
	neighs := make(chan netlink.NeighUpdate, 256)
	done := make(chan struct{})
	if err := netlink.LinkSubscribe(links, done); err != nil {
		close(done)
		return nil, nil, nil, fmt.Errorf("subscribe to link updates: %w", err)
	}
	if err := netlink.NeighSubscribe(neighs, done); err != nil {
		close(done)
		return nil, nil, nil, fmt.Errorf("subscribe to neighbour updates: %w", err)
	}
	return links, neighs, done, nil
}

// watch forwards updates to changed until ctx is done (nil) or a
// subscription ends (the error says which).
func watch(ctx context.Context, links chan netlink.LinkUpdate, neighs chan netlink.NeighUpdate, changed func()) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-links:
			if !ok {
				return errors.New("the kernel ended the link update subscription (events lost)")
			}
			changed()
		case _, ok := <-neighs:
			if !ok {
				return errors.New("the kernel ended the neighbour update subscription (events lost)")
			}
			changed()
		}
	}
}
