// Package xdpgen is a packet generator for benchmarks: it transmits one
// fixed frame as fast as it can from an AF_XDP socket, in batches, so
// that generating a packet costs a descriptor write and a fraction of a
// syscall. It is test tooling for perf/, not part of the data path.
package xdpgen

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/fibmesh/fibmesh/fastpath/xsk"
)

// Generator sends copies of one frame out of an interface.
type Generator struct {
	xsk   *xsk.Socket
	frame []byte
	sent  atomic.Uint64
	batch []xsk.Desc
}

const (
	numFrames = 4096
	ringSize  = 2048
	batchSize = 64
)

// New opens an AF_XDP socket on queue 0 of ifindex. It must run in the
// interface's network namespace.
func New(ifindex int, frame []byte) (*Generator, error) {
	x, err := xsk.New(ifindex, 0, xsk.Options{
		NumFrames: numFrames, FrameSize: 2048,
		FillSize: 64, CompSize: ringSize, TxSize: ringSize,
	})
	if err != nil {
		return nil, err
	}
	if len(frame) > 2048 {
		x.Close()
		return nil, fmt.Errorf("frame of %d bytes exceeds 2048", len(frame))
	}
	g := &Generator{xsk: x, frame: frame, batch: make([]xsk.Desc, 0, batchSize)}
	// Every frame of the UMEM holds the packet: transmits only write
	// descriptors.
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

// Sent returns how many frames the kernel has completed.
func (g *Generator) Sent() uint64 { return g.sent.Load() }

// Run transmits until ctx is done.
func (g *Generator) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		if c := g.xsk.Complete(); c > 0 {
			g.sent.Add(uint64(c))
		}
		g.batch = g.batch[:0]
		for len(g.batch) < batchSize {
			d, ok := g.xsk.Alloc()
			if !ok {
				break
			}
			d.Len = uint32(len(g.frame))
			g.batch = append(g.batch, d)
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
		g.xsk.Release(g.batch[n:]...)
		if err != nil {
			return err
		}
	}
	return nil
}

// Close closes the socket.
func (g *Generator) Close() error { return g.xsk.Close() }
