package punt

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/asavie/xdp"
	"golang.org/x/sys/unix"
)

// socket wraps an asavie/xdp socket bound to one (interface, queue).
//
// asavie/xdp is archived upstream and has sharp edges this wrapper files
// off: its methods are not safe for concurrent use (one mutex here guards
// every call), Transmit panics on any sendto error other than EAGAIN/EBUSY
// (recovered here and returned as an error), and a received frame's bytes
// belong to the kernel again once it is re-filled (copied out here before
// the fill). Punting is for the first packets of new flows, so a copy per
// packet costs nothing that matters.
type socket struct {
	mu      sync.Mutex
	xsk     *xdp.Socket
	ifindex int
	queue   int
	stopped atomic.Bool // replaced by a newer socket: serve returns
	closed  bool        // guarded by mu
}

// stop makes the socket's serve loop return, then closes it.
func (s *socket) stop() {
	s.stopped.Store(true)
	s.close()
}

// socketOptions: punt traffic is a trickle (first packets of new flows), so
// small rings keep each socket's UMEM at 512 KiB.
var socketOptions = xdp.SocketOptions{
	NumFrames:              256,
	FrameSize:              2048,
	FillRingNumDescs:       128,
	CompletionRingNumDescs: 64,
	RxRingNumDescs:         128,
	TxRingNumDescs:         64,
}

func openSocket(ifindex, queue int) (*socket, error) {
	x, err := xdp.NewSocket(ifindex, queue, &socketOptions)
	if err != nil {
		return nil, fmt.Errorf("AF_XDP socket on ifindex %d queue %d: %w", ifindex, queue, err)
	}
	s := &socket{xsk: x, ifindex: ifindex, queue: queue}
	s.mu.Lock()
	s.refill()
	s.mu.Unlock()
	return s, nil
}

// receive copies out up to max received frames and gives their buffers
// back to the fill ring. It does not block.
func (s *socket) receive(max int) [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	n := s.xsk.NumReceived()
	if n == 0 {
		return nil
	}
	if n > max {
		n = max
	}
	descs := s.xsk.Receive(n)
	out := make([][]byte, len(descs))
	for i, d := range descs {
		out[i] = append([]byte(nil), s.xsk.GetFrame(d)...)
	}
	s.refill()
	return out
}

// refill tops the fill ring up to FillRingNumDescs buffers; the other half
// of the UMEM stays free for transmits.
func (s *socket) refill() {
	want := min(s.xsk.NumFreeFillSlots(), socketOptions.FillRingNumDescs-s.xsk.NumFilled())
	if want > 0 {
		s.xsk.Fill(s.xsk.GetDescs(want))
	}
}

// transmit sends one frame out of the socket's interface.
func (s *socket) transmit(frame []byte) (err error) {
	if len(frame) > socketOptions.FrameSize {
		return fmt.Errorf("transmit on ifindex %d: frame of %d bytes exceeds %d", s.ifindex, len(frame), socketOptions.FrameSize)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("transmit on ifindex %d: socket closed", s.ifindex)
	}
	if c := s.xsk.NumCompleted(); c > 0 {
		s.xsk.Complete(c)
	}
	descs := s.xsk.GetDescs(1)
	if len(descs) == 0 {
		return fmt.Errorf("transmit on ifindex %d: %w", s.ifindex, errNoFrames)
	}
	d := descs[0]
	d.Len = uint32(copy(s.xsk.GetFrame(d), frame))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("transmit on ifindex %d: %v", s.ifindex, r)
		}
	}()
	if s.xsk.Transmit([]xdp.Desc{d}) != 1 {
		return fmt.Errorf("transmit on ifindex %d: tx ring full", s.ifindex)
	}
	return nil
}

var errNoFrames = errors.New("no free UMEM frames")

// wait blocks until the socket has received frames or timeoutMs passes.
// It does not hold the mutex, so transmits go on meanwhile.
func (s *socket) wait(timeoutMs int) error {
	pfd := []unix.PollFd{{Fd: int32(s.xsk.FD()), Events: unix.POLLIN}}
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

func (s *socket) fd() int { return s.xsk.FD() }

func (s *socket) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.xsk.Close()
}
