package fib

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// PuntQueues is how many receive queues of one interface can have a punt
// socket. It must match PUNT_QUEUES in xdp/headers/consts.h.
const PuntQueues = 16

// maxPuntSlots must match MAX_PUNT_SLOTS in xdp/headers/consts.h.
const maxPuntSlots = 16384

// PuntSlots connects the FIB to the agent's AF_XDP punt sockets: each
// interface gets PuntQueues consecutive slots of the xsks map, and the
// data path sends a punted packet to slot base(ifindex) + rx queue.
type PuntSlots struct{ slots, xsks *ebpf.Map }

// base returns the first slot of ifindex, allocating one if needed.
func (p *PuntSlots) base(ifindex int) (uint32, error) {
	var b uint32
	if err := p.slots.Lookup(uint32(ifindex), &b); err == nil {
		return b, nil
	} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, fmt.Errorf("punt slot of ifindex %d: %w", ifindex, err)
	}
	used := map[uint32]bool{}
	var k, v uint32
	it := p.slots.Iterate()
	for it.Next(&k, &v) {
		used[v] = true
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("list punt slots: %w", err)
	}
	for b = 0; b+PuntQueues <= maxPuntSlots; b += PuntQueues {
		if !used[b] {
			if err := p.slots.Update(uint32(ifindex), b, ebpf.UpdateNoExist); err != nil {
				return 0, fmt.Errorf("allocate punt slot of ifindex %d: %w", ifindex, err)
			}
			return b, nil
		}
	}
	return 0, fmt.Errorf("allocate punt slot of ifindex %d: all %d slots in use", ifindex, maxPuntSlots)
}

// Register makes packets punted on (ifindex, queue) go to the AF_XDP
// socket fd, which must be bound to that interface and queue.
func (p *PuntSlots) Register(ifindex, queue, fd int) error {
	if queue < 0 || queue >= PuntQueues {
		return fmt.Errorf("punt socket for ifindex %d: queue %d out of range 0-%d", ifindex, queue, PuntQueues-1)
	}
	b, err := p.base(ifindex)
	if err != nil {
		return err
	}
	if err := p.xsks.Put(b+uint32(queue), uint32(fd)); err != nil {
		return fmt.Errorf("register punt socket for ifindex %d queue %d: %w", ifindex, queue, err)
	}
	return nil
}

// Unregister removes the socket of (ifindex, queue): punted packets there
// are dropped and counted (fail closed) until another is registered.
func (p *PuntSlots) Unregister(ifindex, queue int) error {
	var b uint32
	if err := p.slots.Lookup(uint32(ifindex), &b); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		return fmt.Errorf("punt slot of ifindex %d: %w", ifindex, err)
	}
	if err := p.xsks.Delete(b + uint32(queue)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unregister punt socket for ifindex %d queue %d: %w", ifindex, queue, err)
	}
	return nil
}
