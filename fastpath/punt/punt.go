// Package punt receives the packets the XDP FIB punts to the agent over
// AF_XDP (the router's "punt to CPU"), asks a Go callback for a verdict,
// installs the resulting flow entry in the FIB so that the rest of the
// flow never leaves XDP, and re-injects the punted packet: forwarded in
// userspace exactly as the FIB would have forwarded it, transmitted on
// the AF_XDP socket of the next hop's interface.
//
// Without a running Punter the FIB drops what it would punt (fail closed).
package punt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/fibmesh/fibmesh/fastpath/fib"
)

// Verdict is a decision on a punted flow.
type Verdict int

// Verdicts.
const (
	// Deny installs a drop entry for the flow and drops the packet.
	Deny Verdict = iota
	// Allow installs forward entries for both directions of the flow
	// and re-injects the packet.
	Allow
)

func (v Verdict) String() string {
	if v == Allow {
		return "allow"
	}
	return "deny"
}

// Packet is a punted packet, as handed to the DecideFunc.
type Packet struct {
	Ifindex int         // interface it arrived on
	Queue   int         // receive queue it arrived on
	Key     fib.FlowKey // its 5-tuple
	Frame   []byte      // the whole frame; the callback must not keep it
}

// DecideFunc returns the verdict for a punted packet's flow. It runs on
// the punt goroutine of the packet's interface: it must not block for
// long.
type DecideFunc func(Packet) Verdict

// Stats counts what a Punter did.
type Stats struct {
	Received       uint64 // punted packets read from AF_XDP
	Malformed      uint64 // dropped: could not be parsed
	Allowed        uint64
	Denied         uint64
	Reinjected     uint64 // allowed packets transmitted to their next hop
	ReinjectErrors uint64 // allowed packets that could not be (dropped)
}

// Punter owns one AF_XDP socket per interface (queue 0) and serves punts.
type Punter struct {
	fib    *fib.FIB
	decide DecideFunc

	mu    sync.Mutex
	socks map[int]*socket
	run   *runState // set by Run

	received, malformed, allowed, denied, reinjected, reinjectErrs atomic.Uint64
}

// New returns a Punter for f. decide is required.
func New(f *fib.FIB, decide DecideFunc) *Punter {
	return &Punter{fib: f, decide: decide, socks: map[int]*socket{}}
}

// AddInterface opens an AF_XDP socket on queue 0 of ifindex and registers
// it with the FIB. It must run in the interface's network namespace (the
// socket binds there). Interfaces with more queues need one socket per
// queue: veth, the lab's NIC, has one.
func (p *Punter) AddInterface(ifindex int) error {
	s, err := openSocket(ifindex, 0)
	if err != nil {
		return err
	}
	if err := p.fib.Punt.Register(ifindex, 0, s.fd()); err != nil {
		s.close()
		return err
	}
	p.mu.Lock()
	old := p.socks[ifindex]
	p.socks[ifindex] = s
	if p.run != nil {
		p.startLocked(s)
	}
	p.mu.Unlock()
	if old != nil {
		old.stop()
	}
	return nil
}

// Stats returns the counters.
func (p *Punter) Stats() Stats {
	return Stats{
		Received: p.received.Load(), Malformed: p.malformed.Load(),
		Allowed: p.allowed.Load(), Denied: p.denied.Load(),
		Reinjected: p.reinjected.Load(), ReinjectErrors: p.reinjectErrs.Load(),
	}
}

// Run serves every interface, added before or while it runs, until ctx
// is done; then it unregisters and closes the sockets (punts are dropped
// from then on: fail closed). It returns the first socket error, or nil
// when ctx ended it. Run may be called once.
func (p *Punter) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	p.mu.Lock()
	p.run = &runState{ctx: ctx, cancel: cancel}
	for _, s := range p.socks {
		p.startLocked(s)
	}
	p.mu.Unlock()

	<-ctx.Done()
	p.run.wg.Wait()
	err := p.Close()
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// Close unregisters and closes every socket: from then on the FIB drops
// what it would punt (fail closed). Run calls it when it returns; call it
// directly for a Punter that never ran.
func (p *Punter) Close() error {
	var errs []error
	p.mu.Lock()
	defer p.mu.Unlock()
	for idx, s := range p.socks {
		errs = append(errs, p.fib.Punt.Unregister(idx, s.queue), s.close())
		delete(p.socks, idx)
	}
	return errors.Join(errs...)
}

type runState struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
}

func (p *Punter) startLocked(s *socket) {
	r := p.run
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := p.serve(r.ctx, s); err != nil {
			r.cancel(err)
		}
	}()
}

// pollMs bounds how long a serve loop waits before it looks at ctx again.
const pollMs = 100

func (p *Punter) serve(ctx context.Context, s *socket) error {
	for ctx.Err() == nil && !s.stopped.Load() {
		if err := s.wait(pollMs); err != nil {
			if s.stopped.Load() {
				return nil
			}
			return err
		}
		for _, frame := range s.receive(64) {
			p.handle(s, frame)
		}
	}
	return nil
}

func (p *Punter) handle(s *socket, frame []byte) {
	p.received.Add(1)
	key, err := ParseFrame(frame)
	if err != nil {
		p.malformed.Add(1)
		return
	}
	// A service flow (fastpath/fib Services) reaches the agent
	// translated: the data path wrote its two entries, the way out
	// (client -> VIP, ActionPunt until decided) and the way back, and
	// the decision goes into them rather than into new entries for the
	// translated key (whose reverse is the way back): Allow turns the
	// way out into a forward entry (its translation stays), Deny makes
	// both ways drop.
	if out, back, ok := p.serviceFlow(key); ok {
		p.decideFlow(s, frame, key, out, func(v Verdict) error {
			if v != Allow {
				return errors.Join(p.fib.Flows.SetAction(out, fib.ActionDrop), p.fib.Flows.SetAction(back, fib.ActionDrop))
			}
			return p.fib.Flows.SetAction(out, fib.ActionForward)
		})
		return
	}
	p.decideFlow(s, frame, key, key, func(v Verdict) error {
		if v != Allow {
			return p.fib.Flows.Put(fib.FlowEntry{Key: key, Flow: fib.Flow{Action: fib.ActionDrop}})
		}
		return p.fib.Flows.Put(
			fib.FlowEntry{Key: key, Flow: fib.Flow{Action: fib.ActionForward}},
			fib.FlowEntry{Key: key.Reverse(), Flow: fib.Flow{Action: fib.ActionForward}},
		)
	})
}

// decideFlow decides the flow of a punted packet (key, as it arrived)
// whose decision lives in the entry of entryKey, writes the verdict with
// write, and re-injects the packet when allowed. Packets of a flow that
// arrive while its first packet waits for a decision are punted too;
// they follow the decision already made.
func (p *Punter) decideFlow(s *socket, frame []byte, key, entryKey fib.FlowKey, write func(Verdict) error) {
	if fl, ok, err := p.fib.Flows.Get(entryKey); err == nil && ok && fl.Action != fib.ActionPunt {
		if fl.Action == fib.ActionForward {
			p.reinjectCounted(frame, key)
		}
		return
	}
	v := p.decide(Packet{Ifindex: s.ifindex, Queue: s.queue, Key: key, Frame: frame})
	if v != Allow {
		p.denied.Add(1)
		if err := write(v); err != nil {
			p.reinjectErrs.Add(1)
		}
		return
	}
	p.allowed.Add(1)
	if err := write(v); err != nil {
		p.reinjectErrs.Add(1)
		return
	}
	p.reinjectCounted(frame, key)
}

// serviceFlow tells whether the punted packet key (translated: its
// destination is a backend) belongs to a service flow: its way back
// (key reversed) translates the source back to a VIP. It returns the
// keys of the flow's way out and way back.
func (p *Punter) serviceFlow(key fib.FlowKey) (out, back fib.FlowKey, ok bool) {
	back = key.Reverse()
	fl, found, err := p.fib.Flows.Get(back)
	if err != nil || !found || fl.NATKind != fib.NATSrc {
		return out, back, false
	}
	out = fib.FlowKey{Src: key.Src, Dst: fl.NAT.Addr(), SrcPort: key.SrcPort, DstPort: fl.NAT.Port(), Proto: key.Proto}
	return out, back, true
}

func (p *Punter) reinjectCounted(frame []byte, key fib.FlowKey) {
	if err := p.reinject(frame, key); err != nil {
		p.reinjectErrs.Add(1)
		return
	}
	p.reinjected.Add(1)
}

// reinject forwards frame to the route's next hop through that
// interface's AF_XDP socket.
func (p *Punter) reinject(frame []byte, key fib.FlowKey) error {
	rt, ok, err := p.fib.Routes.Lookup(key.Dst)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("re-inject %s: no route", key)
	}
	if err := Forward(frame, rt.NextHop); err != nil {
		return fmt.Errorf("re-inject %s: %w", key, err)
	}
	p.mu.Lock()
	out := p.socks[rt.NextHop.Ifindex]
	p.mu.Unlock()
	if out == nil {
		return fmt.Errorf("re-inject %s: no AF_XDP socket on ifindex %d", key, rt.NextHop.Ifindex)
	}
	return out.transmit(frame)
}
