// Package xsk is an AF_XDP socket: a UMEM of fixed-size frames shared
// with the kernel and the four rings that move frame addresses between
// them (fill, rx, tx, completion).
//
// It replaces github.com/asavie/xdp, which fibmesh started on: that
// package reads and writes the rings' producer and consumer indexes with
// plain loads and stores (no acquire/release ordering against the
// kernel), panics in Transmit on unexpected sendto errors, and never
// unmaps its rings on Close, which keeps the socket bound to its queue
// until the process exits (a second socket on that queue fails with
// EBUSY: an agent could not re-open its punt sockets). Here every index
// shared with the kernel goes through sync/atomic, errors are returned,
// and Close releases everything.
//
// A Socket is not safe for concurrent use; callers serialise.
package xsk

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Options size a socket. Ring sizes must be powers of two.
type Options struct {
	NumFrames int // UMEM frames
	FrameSize int // bytes per frame: 2048 or 4096
	FillSize  int
	CompSize  int
	RxSize    int // 0: no rx ring (transmit only)
	TxSize    int // 0: no tx ring (receive only)
	// BindFlags go to bind(2): unix.XDP_COPY, unix.XDP_ZEROCOPY, or 0
	// to let the kernel choose.
	BindFlags uint16
}

// Desc is a frame in the UMEM: its offset and the length of the packet.
type Desc = unix.XDPDesc

// ring is one of the four rings. The kernel and we each own one index:
// the owner stores it with release semantics (atomic store), the other
// side loads it with acquire semantics (atomic load) before touching the
// descriptors it covers.
type ring struct {
	prod, cons *atomic.Uint32
	flags      *atomic.Uint32
	descs      unsafe.Pointer
	mask       uint32
	size       uint32
	mem        []byte
}

func (r *ring) u64(i uint32) *uint64 {
	return (*uint64)(unsafe.Add(r.descs, uintptr(i&r.mask)*8))
}

func (r *ring) desc(i uint32) *Desc {
	return (*Desc)(unsafe.Add(r.descs, uintptr(i&r.mask)*unsafe.Sizeof(Desc{})))
}

// Socket is an AF_XDP socket bound to one interface queue.
type Socket struct {
	fd                 int
	opts               Options
	umem               []byte
	fill, comp, rx, tx ring
	free               []uint64 // frame addresses owned by userspace
	outstandingTx      int      // frames on the tx or completion ring
	ifindex, queue     int
}

func isPow2(n int) bool { return n > 0 && n&(n-1) == 0 }

// New opens a socket on (ifindex, queue). It must be called in the
// interface's network namespace. If the queue is busy it retries for up to
// a second (see bindBusyWait) before failing with EBUSY.
func New(ifindex, queue int, o Options) (s *Socket, err error) {
	for _, r := range []struct {
		name string
		n    int
		opt  bool
	}{{"fill", o.FillSize, false}, {"completion", o.CompSize, false}, {"rx", o.RxSize, true}, {"tx", o.TxSize, true}} {
		if (r.n != 0 || !r.opt) && !isPow2(r.n) {
			return nil, fmt.Errorf("xsk: %s ring size %d: must be a power of two", r.name, r.n)
		}
	}
	if o.RxSize == 0 && o.TxSize == 0 {
		return nil, errors.New("xsk: need an rx or a tx ring")
	}
	if o.FrameSize != 2048 && o.FrameSize != 4096 {
		return nil, fmt.Errorf("xsk: frame size %d: want 2048 or 4096", o.FrameSize)
	}
	if o.NumFrames <= 0 {
		return nil, fmt.Errorf("xsk: %d frames", o.NumFrames)
	}
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("xsk: socket(AF_XDP): %w", err)
	}
	// Every error return below sets s to nil before deferred calls run,
	// so the clean-up closes sock, not s.
	sock := &Socket{fd: fd, opts: o, ifindex: ifindex, queue: queue}
	s = sock
	defer func() {
		if err != nil {
			sock.Close()
			s = nil
		}
	}()
	s.umem, err = unix.Mmap(-1, 0, o.NumFrames*o.FrameSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("xsk: mmap UMEM: %w", err)
	}
	reg := unix.XDPUmemReg{Addr: uint64(uintptr(unsafe.Pointer(&s.umem[0]))), Len: uint64(len(s.umem)), Size: uint32(o.FrameSize)}
	if err := setsockopt(fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		return nil, fmt.Errorf("xsk: register UMEM: %w", err)
	}
	sizes := []struct {
		opt, n int
	}{{unix.XDP_UMEM_FILL_RING, o.FillSize}, {unix.XDP_UMEM_COMPLETION_RING, o.CompSize}, {unix.XDP_RX_RING, o.RxSize}, {unix.XDP_TX_RING, o.TxSize}}
	for _, sz := range sizes {
		if sz.n == 0 {
			continue
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, sz.opt, sz.n); err != nil {
			return nil, fmt.Errorf("xsk: ring size option %d: %w", sz.opt, err)
		}
	}
	var off unix.XDPMmapOffsets
	l := uint32(unsafe.Sizeof(off))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_MMAP_OFFSETS, uintptr(unsafe.Pointer(&off)), uintptr(unsafe.Pointer(&l)), 0); e != 0 {
		return nil, fmt.Errorf("xsk: XDP_MMAP_OFFSETS: %w", e)
	}
	if err := s.fill.mmap(fd, unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr, o.FillSize, 8); err != nil {
		return nil, fmt.Errorf("xsk: fill ring: %w", err)
	}
	if err := s.comp.mmap(fd, unix.XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr, o.CompSize, 8); err != nil {
		return nil, fmt.Errorf("xsk: completion ring: %w", err)
	}
	if o.RxSize > 0 {
		if err := s.rx.mmap(fd, unix.XDP_PGOFF_RX_RING, off.Rx, o.RxSize, int(unsafe.Sizeof(Desc{}))); err != nil {
			return nil, fmt.Errorf("xsk: rx ring: %w", err)
		}
	}
	if o.TxSize > 0 {
		if err := s.tx.mmap(fd, unix.XDP_PGOFF_TX_RING, off.Tx, o.TxSize, int(unsafe.Sizeof(Desc{}))); err != nil {
			return nil, fmt.Errorf("xsk: tx ring: %w", err)
		}
	}
	if err := bind(fd, &unix.SockaddrXDP{Flags: o.BindFlags, Ifindex: uint32(ifindex), QueueID: uint32(queue)}); err != nil {
		return nil, fmt.Errorf("xsk: bind to ifindex %d queue %d: %w", ifindex, queue, err)
	}
	s.free = make([]uint64, 0, o.NumFrames)
	for i := o.NumFrames - 1; i >= 0; i-- {
		s.free = append(s.free, uint64(i*o.FrameSize))
	}
	return s, nil
}

// bindBusyWait is how long bind retries EBUSY. A socket closed on the
// queue a moment ago keeps it until the kernel's deferred release of its
// buffer pool (after an RCU grace period, on a workqueue: 10-20 ms on an
// idle 6.18 machine), so re-opening right after Close got EBUSY. A queue
// that another open socket holds still fails, after this long.
var bindBusyWait = time.Second

func bind(fd int, sa *unix.SockaddrXDP) error {
	deadline := time.Now().Add(bindBusyWait)
	for wait := time.Millisecond; ; wait = min(2*wait, 10*time.Millisecond) {
		err := unix.Bind(fd, sa)
		if err != unix.EBUSY || time.Now().After(deadline) {
			return err
		}
		time.Sleep(wait)
	}
}

func setsockopt(fd, opt int, p unsafe.Pointer, n uintptr) error {
	if _, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), n, 0); e != 0 {
		return e
	}
	return nil
}

func (r *ring) mmap(fd int, pgoff int64, off unix.XDPRingOffset, n, descSize int) error {
	mem, err := unix.Mmap(fd, pgoff, int(off.Desc)+n*descSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return err
	}
	base := unsafe.Pointer(&mem[0])
	r.mem = mem
	r.prod = (*atomic.Uint32)(unsafe.Add(base, off.Producer))
	r.cons = (*atomic.Uint32)(unsafe.Add(base, off.Consumer))
	r.flags = (*atomic.Uint32)(unsafe.Add(base, off.Flags))
	r.descs = unsafe.Add(base, off.Desc)
	r.size = uint32(n)
	r.mask = uint32(n - 1)
	return nil
}

// FD returns the socket's file descriptor (for an XSKMAP).
func (s *Socket) FD() int { return s.fd }

// Ifindex and Queue return what the socket is bound to.
func (s *Socket) Ifindex() int { return s.ifindex }

// Queue returns the queue the socket is bound to.
func (s *Socket) Queue() int { return s.queue }

// Frame returns the UMEM bytes of d. They belong to the kernel again once
// the frame is re-filled or transmitted. The slice's capacity ends at the
// end of d's frame: a received descriptor's address is past the frame's
// start (the kernel's headroom), so capping at Addr+FrameSize would run
// into the next frame, and past the UMEM for the last one.
func (s *Socket) Frame(d Desc) []byte {
	end := d.Addr - d.Addr%uint64(s.opts.FrameSize) + uint64(s.opts.FrameSize)
	return s.umem[d.Addr : d.Addr+uint64(d.Len) : end]
}

// FreeFrames is how many frames userspace holds.
func (s *Socket) FreeFrames() int { return len(s.free) }

// Fill gives up to n free frames to the kernel to receive into and
// returns how many it gave.
func (s *Socket) Fill(n int) int {
	prod := s.fill.prod.Load()
	room := int(s.fill.size - (prod - s.fill.cons.Load()))
	n = min(n, room, len(s.free))
	for i := 0; i < n; i++ {
		*s.fill.u64(prod) = s.free[len(s.free)-1]
		s.free = s.free[:len(s.free)-1]
		prod++
	}
	s.fill.prod.Store(prod)
	return n
}

// Receive appends up to max received descriptors to dst. The frames stay
// userspace's until Release or Transmit.
func (s *Socket) Receive(dst []Desc, max int) []Desc {
	cons := s.rx.cons.Load()
	avail := int(s.rx.prod.Load() - cons)
	for i := 0; i < min(avail, max); i++ {
		dst = append(dst, *s.rx.desc(cons))
		cons++
	}
	s.rx.cons.Store(cons)
	return dst
}

// Release returns received frames to the free list.
func (s *Socket) Release(ds ...Desc) {
	for _, d := range ds {
		s.free = append(s.free, d.Addr-d.Addr%uint64(s.opts.FrameSize))
	}
}

// Alloc takes a free frame for transmitting; ok is false if none is free
// (call Complete).
func (s *Socket) Alloc() (d Desc, ok bool) {
	if len(s.free) == 0 {
		return Desc{}, false
	}
	d.Addr = s.free[len(s.free)-1]
	s.free = s.free[:len(s.free)-1]
	return d, true
}

// Transmit queues descriptors on the tx ring and kicks the kernel. It
// returns how many were queued (the rest did not fit; their frames are
// still the caller's). A full device queue is not an error: the kernel
// keeps the descriptors and sends them on a later kick.
func (s *Socket) Transmit(ds []Desc) (int, error) {
	prod := s.tx.prod.Load()
	room := int(s.tx.size - (prod - s.tx.cons.Load()))
	n := min(room, len(ds))
	for i := 0; i < n; i++ {
		*s.tx.desc(prod) = ds[i]
		prod++
	}
	s.tx.prod.Store(prod)
	s.outstandingTx += n
	return n, s.Kick()
}

// Kick asks the kernel to process the tx ring.
func (s *Socket) Kick() error {
	for {
		var before uint32
		if s.tx.cons != nil {
			before = s.tx.cons.Load()
		}
		_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0, unix.EBUSY, unix.ENOBUFS:
			return nil
		case unix.EAGAIN:
			// Copy mode sends at most 32 descriptors per call
			// (TX_BATCH_SIZE) and answers EAGAIN for the rest: go on
			// while the kernel makes progress. Without progress the
			// device queue is full; a later kick sends the rest.
			if s.tx.cons != nil {
				if c := s.tx.cons.Load(); c != before && c != s.tx.prod.Load() {
					continue
				}
			}
			return nil
		case unix.EINTR:
			continue
		}
		return fmt.Errorf("xsk: transmit on ifindex %d queue %d: %w", s.ifindex, s.queue, e)
	}
}

// Complete moves transmitted frames back to the free list and returns how
// many.
func (s *Socket) Complete() int {
	cons := s.comp.cons.Load()
	n := int(s.comp.prod.Load() - cons)
	for i := 0; i < n; i++ {
		s.free = append(s.free, *s.comp.u64(cons))
		cons++
	}
	s.comp.cons.Store(cons)
	s.outstandingTx -= n
	return n
}

// Outstanding is how many transmitted frames are not completed yet.
func (s *Socket) Outstanding() int { return s.outstandingTx }

// Poll waits up to timeoutMs for received frames (and, with tx true, for
// room to transmit). It returns false on timeout.
func (s *Socket) Poll(timeoutMs int, tx bool) (bool, error) {
	ev := int16(unix.POLLIN)
	if tx {
		ev |= unix.POLLOUT
	}
	pfd := []unix.PollFd{{Fd: int32(s.fd), Events: ev}}
	for {
		n, err := unix.Poll(pfd, timeoutMs)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("xsk: poll: %w", err)
		}
		return n > 0, nil
	}
}

// Stats returns the kernel's counters for the socket.
func (s *Socket) Stats() (unix.XDPStatistics, error) {
	var st unix.XDPStatistics
	l := uint32(unsafe.Sizeof(st))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(s.fd), unix.SOL_XDP, unix.XDP_STATISTICS, uintptr(unsafe.Pointer(&st)), uintptr(unsafe.Pointer(&l)), 0); e != 0 {
		return st, fmt.Errorf("xsk: XDP_STATISTICS: %w", e)
	}
	return st, nil
}

// Close unmaps the rings and the UMEM and closes the socket, which
// unbinds it from its queue.
func (s *Socket) Close() error {
	var errs []error
	for _, r := range []*ring{&s.fill, &s.comp, &s.rx, &s.tx} {
		if r.mem != nil {
			errs = append(errs, unix.Munmap(r.mem))
			*r = ring{}
		}
	}
	if s.fd >= 0 {
		errs = append(errs, unix.Close(s.fd))
		s.fd = -1
	}
	if s.umem != nil {
		errs = append(errs, unix.Munmap(s.umem))
		s.umem = nil
	}
	return errors.Join(errs...)
}
