// Package xdpgen is a packet generator for benchmarks: it transmits one
// fixed frame from an AF_XDP socket, in batches, so that generating a
// packet costs a descriptor write and a fraction of a syscall. It sends
// as fast as completions allow, or paced to a fixed rate (a token bucket
// checked once per batch), and can rotate the UDP source port so that
// every packet opens a new flow. It is test tooling for perf/, not part
// of the data path.
package xdpgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/fibmesh/fibmesh/fastpath/xsk"
)

// Generator sends copies of one frame out of an interface.
type Generator struct {
	xsk     *xsk.Socket
	frame   []byte
	sent    atomic.Uint64
	batch   []xsk.Desc
	udpOff  int  // offset of the UDP header in frame, 0 if it is not IPv4/UDP
	nextSrc int  // index of the next source port in a rotation
	rotated bool // some UMEM frames may hold a rotated source port
}

const (
	numFrames = 4096
	ringSize  = 2048
	batchSize = 64
)

// RunOptions shape one Run.
type RunOptions struct {
	// Rate paces transmission to this many packets per second; 0 sends
	// as fast as completions allow. Pacing is a token bucket refilled
	// from the clock and spent a batch at a time: between batches the
	// generator sleeps until a batch's worth of tokens has accrued, so
	// it costs one wake-up per batch, not one per packet. The bucket
	// holds at most one tx ring of tokens, so a stall of the generator
	// (a busy machine) is made up right after it, up to that many
	// packets.
	Rate float64
	// SrcPortFirst and SrcPorts rotate the UDP source port of every
	// transmitted frame over [SrcPortFirst, SrcPortFirst+SrcPorts), one
	// port per packet, so that each packet is a flow the receiver has
	// not seen for SrcPorts packets. SrcPorts 0 sends the frame's own
	// port. The frame must be IPv4/UDP to rotate.
	SrcPortFirst uint16
	SrcPorts     int
}

// New opens an AF_XDP socket on queue 0 of ifindex. It must run in the
// interface's network namespace.
func New(ifindex int, frame []byte) (*Generator, error) {
	if len(frame) > 2048 {
		return nil, fmt.Errorf("xdpgen: frame of %d bytes exceeds 2048", len(frame))
	}
	x, err := xsk.New(ifindex, 0, xsk.Options{
		NumFrames: numFrames, FrameSize: 2048,
		FillSize: 64, CompSize: ringSize, TxSize: ringSize,
	})
	if err != nil {
		return nil, err
	}
	g := &Generator{xsk: x, frame: frame, batch: make([]xsk.Desc, 0, batchSize), udpOff: udpOffset(frame)}
	// Every frame of the UMEM holds the packet: transmits only write
	// descriptors (and, rotating, two bytes of the source port).
	var all []xsk.Desc
	for {
		d, ok := x.Alloc()
		if !ok {
			break
		}
		d.Len = uint32(len(frame))
		copy(x.Frame(d), frame)
		all = append(all, d)
	}
	x.Release(all...)
	return g, nil
}

// udpOffset returns where the UDP header of an Ethernet/IPv4/UDP frame
// starts, or 0 when frame is not one.
func udpOffset(f []byte) int {
	if len(f) < 14+20+8 || binary.BigEndian.Uint16(f[12:14]) != 0x0800 || f[14]>>4 != 4 || f[23] != 17 {
		return 0
	}
	off := 14 + int(f[14]&0x0f)*4
	if off+8 > len(f) {
		return 0
	}
	return off
}

// Sent returns how many frames the kernel has completed.
func (g *Generator) Sent() uint64 { return g.sent.Load() }

// Run transmits until ctx is done.
func (g *Generator) Run(ctx context.Context, o RunOptions) error {
	if o.Rate < 0 {
		return fmt.Errorf("xdpgen: rate %v packets/s: want >= 0", o.Rate)
	}
	if o.SrcPorts < 0 || int(o.SrcPortFirst)+o.SrcPorts > 65536 {
		return fmt.Errorf("xdpgen: source ports %d+%d: the range must lie within 0..65535", o.SrcPortFirst, o.SrcPorts)
	}
	if o.SrcPorts > 0 && g.udpOff == 0 {
		return errors.New("xdpgen: source port rotation needs an Ethernet/IPv4/UDP frame")
	}
	// After a rotation the UMEM frames hold whatever port they were last
	// sent with: a Run without one writes the frame's own port back.
	restore := o.SrcPorts == 0 && g.rotated
	g.rotated = g.rotated || o.SrcPorts > 0
	var tb *bucket
	if o.Rate > 0 {
		tb = newBucket(o.Rate, ringSize, time.Now())
	}
	for ctx.Err() == nil {
		if c := g.xsk.Complete(); c > 0 {
			g.sent.Add(uint64(c))
		}
		want := batchSize
		if tb != nil {
			now := time.Now()
			n, wait := tb.take(now, batchSize)
			if n == 0 {
				if err := sleep(ctx, wait); err != nil {
					return nil
				}
				continue
			}
			want = n
		}
		g.batch = g.batch[:0]
		for len(g.batch) < want {
			d, ok := g.xsk.Alloc()
			if !ok {
				break
			}
			d.Len = uint32(len(g.frame))
			switch {
			case o.SrcPorts > 0:
				binary.BigEndian.PutUint16(g.xsk.Frame(d)[g.udpOff:], o.SrcPortFirst+uint16(g.nextSrc))
				g.nextSrc = (g.nextSrc + 1) % o.SrcPorts
			case restore:
				copy(g.xsk.Frame(d)[g.udpOff:g.udpOff+2], g.frame[g.udpOff:])
			}
			g.batch = append(g.batch, d)
		}
		if tb != nil && len(g.batch) < want {
			tb.refund(want - len(g.batch))
		}
		if len(g.batch) == 0 {
			// Every frame is in flight: wait for completions.
			if _, err := g.xsk.Poll(1, true); err != nil {
				return err
			}
			if err := g.xsk.Kick(); err != nil {
				return err
			}
			continue
		}
		n, err := g.xsk.Transmit(g.batch)
		if tb != nil && n < len(g.batch) {
			tb.refund(len(g.batch) - n)
		}
		g.xsk.Release(g.batch[n:]...)
		if err != nil {
			return err
		}
	}
	return nil
}

// sleep waits d or until ctx is done (then it returns ctx's error).
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes the socket.
func (g *Generator) Close() error { return g.xsk.Close() }
