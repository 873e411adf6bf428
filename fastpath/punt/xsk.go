package punt

import (
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/fastpath/xsk"
)

// socket is one punt socket: an AF_XDP socket bound to (interface, queue)
// that receives punted frames and transmits re-injected ones. The serve
// goroutine receives; any goroutine may transmit; mu serialises both.
// Received frames are copied out before their buffers go back to the
// fill ring: punting is for the first packets of new flows, so a copy per
// packet costs nothing that matters.
type socket struct {
	mu      sync.Mutex
	xsk     *xsk.Socket
	ifindex int
	queue   int
	stopped atomic.Bool // replaced by a newer socket: serve returns
	closed  bool        // guarded by mu
	descs   []xsk.Desc
	fdNum   int // the socket's fd, fixed at open (read without mu)
}

// socketOptions: punt traffic is a trickle, so small rings keep each
// socket's UMEM at 512 KiB; half the frames wait in the fill ring, the
// other half are for transmits.
var socketOptions = xsk.Options{
	NumFrames: 256,
	FrameSize: 2048,
	FillSize:  128,
	CompSize:  128,
	RxSize:    128,
	TxSize:    128,
}

func openSocket(ifindex, queue int) (*socket, error) {
	x, err := xsk.New(ifindex, queue, socketOptions)
	if err != nil {
		return nil, err
	}
	s := &socket{xsk: x, ifindex: ifindex, queue: queue, fdNum: x.FD()}
	s.refill()
	return s, nil
}

// stop makes the socket's serve loop return, then closes it.
func (s *socket) stop() {
	s.stopped.Store(true)
	s.close()
}

// receive copies out up to max received frames and gives their buffers
// back to the fill ring. It does not block.
func (s *socket) receive(max int) [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.descs = s.xsk.Receive(s.descs[:0], max)
	out := make([][]byte, len(s.descs))
	for i, d := range s.descs {
		out[i] = append([]byte(nil), s.xsk.Frame(d)...)
	}
	s.xsk.Release(s.descs...)
	s.refill()
	return out
}

// refill keeps FillSize frames in the fill ring, leaving the rest of the
// UMEM for transmits.
func (s *socket) refill() {
	s.xsk.Complete()
	inFill := socketOptions.NumFrames - s.xsk.FreeFrames() - s.xsk.Outstanding()
	if want := socketOptions.FillSize - inFill; want > 0 {
		s.xsk.Fill(want)
	}
}

// transmit sends one frame out of the socket's interface.
func (s *socket) transmit(frame []byte) error {
	if len(frame) > socketOptions.FrameSize {
		return fmt.Errorf("transmit on ifindex %d: frame of %d bytes exceeds %d", s.ifindex, len(frame), socketOptions.FrameSize)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("transmit on ifindex %d: socket closed", s.ifindex)
	}
	s.xsk.Complete()
	d, ok := s.xsk.Alloc()
	if !ok {
		return fmt.Errorf("transmit on ifindex %d: no free UMEM frame", s.ifindex)
	}
	d.Len = uint32(copy(s.xsk.Frame(xsk.Desc{Addr: d.Addr, Len: uint32(len(frame))}), frame))
	n, err := s.xsk.Transmit([]xsk.Desc{d})
	if n != 1 {
		s.xsk.Release(d)
		if err == nil {
			err = fmt.Errorf("transmit on ifindex %d: tx ring full", s.ifindex)
		}
	}
	return err
}

// wait blocks until the socket has received frames or timeoutMs passes.
// It does not hold the mutex, so transmits go on meanwhile.
func (s *socket) wait(timeoutMs int) error {
	pfd := []unix.PollFd{{Fd: int32(s.fd()), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(pfd, timeoutMs)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll AF_XDP socket on ifindex %d: %w", s.ifindex, err)
		}
		return nil
	}
}

func (s *socket) fd() int { return s.fdNum }

func (s *socket) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.xsk.Close()
}
