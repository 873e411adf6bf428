package netnstest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// captureRcvBuf is the capture socket's receive buffer: it absorbs
// bursts the reader does not take at once. 64 MiB holds ~500 64 KiB GSO
// frames, far more than a TCP window on a veth has in flight.
const captureRcvBuf = 64 << 20

// frameBuf is the read buffer: a GSO frame is at most 64 KiB of IP plus
// the Ethernet header (and a VLAN tag); MSG_TRUNC reports anything larger
// (BIG TCP) as Malformed.
const frameBuf = 64<<10 + 256

// streamQueue is how many segments wait for one direction's goroutine
// (at most 64 KiB each). Reassembly and sinks run there, one goroutine
// per direction, so that the reader keeps draining the socket. Measured
// in the VM (2 vCPUs, 100 MB each way): with reassembly and sinks on the
// reader, a TLSRecordChecker and a PlaintextScanner per direction
// finished 0.4 s after the transfer, adding a SHA-256 dropped 786
// frames; with these goroutines the first pair keeps pace (0 drops).
const streamQueue = 256

// payloadPool recycles segment payload copies.
var payloadPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// queued is a segment whose payload is a payloadPool buffer.
type queued struct {
	seg segment
	buf *[]byte
}

// streamWorker reassembles one direction on its own goroutine.
type streamWorker struct {
	r  *reassembler
	ch chan queued
}

func (w *streamWorker) run(wg *sync.WaitGroup) {
	defer wg.Done()
	for q := range w.ch {
		w.r.add(q.seg)
		if q.buf != nil {
			payloadPool.Put(q.buf)
		}
	}
}

// Capture records the TCP traffic on a peer's veth end. Its methods are
// safe to call from any goroutine.
type Capture struct {
	f       *os.File
	cfg     CaptureConfig
	ifindex int

	done    chan struct{} // closed when the reader goroutine has returned
	workers sync.WaitGroup
	once    sync.Once
	res     *CaptureResult
	err     error

	// Owned by the reader goroutine until done.
	streams map[[2]netip.AddrPort]*streamWorker
	order   []*streamWorker
	frames  int
	nonTCP  int
	bad     int
	readErr error
}

// htons returns v in network byte order, as sockaddr_ll wants it.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

func startCapture(p *Peer, cfg CaptureConfig) (*Capture, error) {
	var fd int
	err := p.Do(func() error {
		// Protocol 0 receives nothing until bind names the protocol
		// and the interface: no frames from lo slip in first.
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, captureRcvBuf); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, captureRcvBuf); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("capture receive buffer: %w", err)
		}
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: p.Index}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind AF_PACKET to %s (index %d): %w", p.Iface, p.Index, err)
	}
	c := &Capture{
		f:       os.NewFile(uintptr(fd), "capture-"+p.Iface),
		cfg:     cfg,
		ifindex: p.Index,
		done:    make(chan struct{}),
		streams: map[[2]netip.AddrPort]*streamWorker{},
	}
	go c.read()
	return c, nil
}

// read is the capture goroutine: it reads frames until Stop sets a read
// deadline, then drains what the socket still holds.
func (c *Capture) read() {
	defer close(c.done)
	defer func() {
		for _, w := range c.order {
			close(w.ch)
		}
	}()
	raw, err := c.f.SyscallConn()
	if err != nil {
		c.readErr = fmt.Errorf("capture socket: %w", err)
		return
	}
	buf := make([]byte, frameBuf)
	var n int
	var rerr error
	recv := func(fd uintptr) bool {
		for {
			var from unix.Sockaddr
			n, from, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_TRUNC)
			if rerr == unix.EINTR {
				continue
			}
			if rerr == unix.EAGAIN {
				return false // wait for the poller
			}
			if rerr == nil {
				if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Ifindex != c.ifindex {
					continue
				}
			}
			return true
		}
	}
	for {
		err := raw.Read(recv)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err == nil {
			err = rerr
		}
		if err != nil {
			c.readErr = fmt.Errorf("read capture socket: %w", err)
			return
		}
		c.frame(buf, n)
	}
	// Stop: take every frame already queued. Control runs without the
	// deadline; the socket is non-blocking, so EAGAIN ends the loop.
	cerr := raw.Control(func(fd uintptr) {
		for {
			if !recv(fd) {
				return
			}
			if rerr != nil {
				c.readErr = fmt.Errorf("drain capture socket: %w", rerr)
				return
			}
			c.frame(buf, n)
		}
	})
	if cerr != nil && c.readErr == nil {
		c.readErr = fmt.Errorf("drain capture socket: %w", cerr)
	}
}

// frame handles one frame of n bytes (n may exceed len(buf): truncated).
func (c *Capture) frame(buf []byte, n int) {
	c.frames++
	if n > len(buf) {
		c.bad++
		return
	}
	seg, err := parseFrame(buf[:n])
	switch {
	case errors.Is(err, errNotTCP):
		c.nonTCP++
		return
	case err != nil:
		c.bad++
		return
	}
	if c.cfg.Port != 0 && seg.src.Port() != c.cfg.Port && seg.dst.Port() != c.cfg.Port {
		return
	}
	key := [2]netip.AddrPort{seg.src, seg.dst}
	w := c.streams[key]
	if w == nil {
		w = &streamWorker{r: newReassembler(seg.src, seg.dst, c.cfg.MaxBytes, nil), ch: make(chan queued, streamQueue)}
		if c.cfg.Sink != nil {
			w.r.sink = c.cfg.Sink(seg.src, seg.dst)
		}
		c.streams[key] = w
		c.order = append(c.order, w)
		c.workers.Add(1)
		go w.run(&c.workers)
	}
	q := queued{seg: seg}
	if len(seg.payload) > 0 {
		q.buf = payloadPool.Get().(*[]byte)
		if len(seg.payload) > len(*q.buf) {
			*q.buf = make([]byte, len(seg.payload))
		}
		q.seg.payload = (*q.buf)[:copy(*q.buf, seg.payload)]
	} else {
		q.seg.payload = nil // buf is reused for the next frame
	}
	w.ch <- q
}

// Stop ends the capture, reads every frame the kernel queued before it,
// and returns the reassembled streams. It may be called more than once;
// later calls return the first call's result.
func (c *Capture) Stop() (*CaptureResult, error) {
	c.once.Do(func() {
		if err := c.f.SetReadDeadline(time.Now()); err != nil {
			c.err = fmt.Errorf("stop capture: %w", err)
		}
		<-c.done
		c.workers.Wait()
		res := &CaptureResult{Frames: c.frames, NonTCP: c.nonTCP, Malformed: c.bad}
		if raw, err := c.f.SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) {
				if st, err := unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
					res.Dropped = int(st.Drops)
				}
			})
		}
		if err := c.f.Close(); err != nil && c.err == nil {
			c.err = fmt.Errorf("close capture socket: %w", err)
		}
		for _, w := range c.order {
			res.Streams = append(res.Streams, w.r.finish())
		}
		c.res = res
		c.err = errors.Join(c.err, c.readErr)
	})
	return c.res, c.err
}
