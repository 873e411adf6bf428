package splice

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// DefaultPipeSize is the pipe capacity ModeSplice asks for: the default
// /proc/sys/fs/pipe-max-size, so an unprivileged agent gets it too. A
// larger pipe means fewer splice calls per byte, and kTLS records of the
// full 16 KiB.
const DefaultPipeSize = 1 << 20

// maxRecord is the largest TLS plaintext record (RFC 8446 section 5.1), the
// buffer for what the kTLS side's Read returns.
const maxRecord = 16 << 10

// pipe is one direction's pipe.
type pipe struct {
	r, w int
	size int
}

func newPipe(size int) (*pipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	p := &pipe{r: fds[0], w: fds[1]}
	// A refusal (EPERM above pipe-max-size or the user's pipe pages) is
	// not an error: the pipe keeps the size it has.
	unix.FcntlInt(uintptr(p.w), unix.F_SETPIPE_SZ, size)
	n, err := unix.FcntlInt(uintptr(p.w), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		p.close()
		return nil, os.NewSyscallError("fcntl F_GETPIPE_SZ", err)
	}
	p.size = n
	return p, nil
}

func (p *pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// spliceEngine is ModeSplice's state for one pair.
type spliceEngine struct {
	p       *Pair
	pipes   [2]*pipe      // by Direction
	dirs    [2]*spliceDir // by Direction
	moved   [2]atomic.Uint64
	pending []byte // opts.PlainPending
}

func joinSplice(plain *net.TCPConn, tls Offloaded, opts Options) (*Pair, error) {
	plainRC, err := plain.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("splice: plaintext socket: %w", err)
	}
	tlsRC, err := tls.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("splice: kTLS socket: %w", err)
	}
	size := opts.PipeSize
	if size <= 0 {
		size = DefaultPipeSize
	}
	e := &spliceEngine{pending: opts.PlainPending}
	for i := range e.pipes {
		pp, err := newPipe(size)
		if err != nil {
			e.release()
			return nil, fmt.Errorf("splice: %w", err)
		}
		e.pipes[i] = pp
	}
	e.dirs[PlainToTLS] = newSpliceDir(plainRC, tlsRC, e.pipes[PlainToTLS], false, &e.moved[PlainToTLS])
	e.dirs[TLSToPlain] = newSpliceDir(tlsRC, plainRC, e.pipes[TLSToPlain], true, &e.moved[TLSToPlain])
	p := newPair(ModeSplice, plain, tls, tlsRC)
	e.p = p
	p.counters = func() Counters {
		return Counters{PlainToTLS: e.moved[PlainToTLS].Load(), TLSToPlain: e.moved[TLSToPlain].Load()}
	}
	p.release = e.release
	p.run(e.plainToTLS, e.tlsToPlain)
	return p, nil
}

func (e *spliceEngine) release() error {
	for _, pp := range e.pipes {
		if pp != nil {
			pp.close()
		}
	}
	return nil
}

// plainToTLS moves the application's bytes into kTLS until the
// application's EOF, which it propagates as close_notify and FIN.
func (e *spliceEngine) plainToTLS() error {
	p := e.p
	if len(e.pending) > 0 {
		if err := writeCounted(p.tls, e.pending, &e.moved[PlainToTLS]); err != nil {
			return fmt.Errorf("write pending plaintext: %w", err)
		}
	}
	d := e.dirs[PlainToTLS]
	for {
		n, err := d.fill()
		if err != nil {
			return err
		}
		if n == 0 {
			if p.aborting() {
				return net.ErrClosed
			}
			if err := p.tls.CloseWrite(); err != nil {
				return fmt.Errorf("propagate EOF (close_notify): %w", err)
			}
			return nil
		}
		// SPLICE_F_MORE holds kTLS's record open (and corks TCP) until
		// the next write, so it is set only when the next fill is
		// certain to find bytes: the pipe was filled and the socket has
		// more queued. Otherwise a message that happens to end at a
		// pipe boundary would wait in an open record for the next one.
		more := 0
		if n == d.pp.size {
			if q, err := d.inq(); err == nil && q > 0 {
				more = unix.SPLICE_F_MORE
			}
		}
		if err := d.drain(n, more); err != nil {
			return err
		}
	}
}

// tlsToPlain moves the kTLS peer's bytes to the application until the
// peer's close_notify, which it propagates as a FIN.
func (e *spliceEngine) tlsToPlain() error {
	p := e.p
	if pend := p.tls.Pending(); len(pend) > 0 {
		if err := writeCounted(p.plain, pend, &e.moved[TLSToPlain]); err != nil {
			return fmt.Errorf("write pending plaintext: %w", err)
		}
	}
	d := e.dirs[TLSToPlain]
	var buf []byte
	for {
		n, err := d.fill()
		if err != nil && !errors.Is(err, unix.EINVAL) {
			return err
		}
		if n > 0 {
			// No SPLICE_F_MORE: whether the peer has sent more is
			// unknown until kTLS has a whole record.
			if err := d.drain(n, 0); err != nil {
				return err
			}
			continue
		}
		// EINVAL: the next record is a control record, which splice
		// cannot return. 0: TCP EOF, with or without close_notify.
		// Either way the kTLS side's Read says what it is: io.EOF after
		// close_notify, an error for an alert or a truncation, or data
		// (after a KeyUpdate or NewSessionTicket it consumed), which is
		// written on from userspace.
		if buf == nil {
			buf = make([]byte, maxRecord+256)
		}
		m, rerr := p.tls.Read(buf)
		if m > 0 {
			if err := writeCounted(p.plain, buf[:m], &e.moved[TLSToPlain]); err != nil {
				return err
			}
		}
		switch {
		case rerr == io.EOF:
			if p.aborting() { // the EOF may be the reset's own shutdown
				return net.ErrClosed
			}
			if err := p.plain.CloseWrite(); err != nil {
				return fmt.Errorf("propagate close_notify (FIN): %w", err)
			}
			return nil
		case rerr != nil:
			return rerr
		}
	}
}

// spliceDir is one direction's splice state, built once in joinSplice: the
// callbacks handed to RawConn.Read, Write and Control are bound here once
// and keep their results in the struct, so that fill, drain and inq
// allocate nothing per chunk.
type spliceDir struct {
	src, dst syscall.RawConn
	pp       *pipe
	records  bool // src is a kTLS socket (see fill)
	moved    *atomic.Uint64

	// fill's state and results.
	total int
	serr  error

	// drain's state and results.
	n, more int
	m       int64
	derr    error

	// inq's results.
	q    int
	qerr error

	fillFn, drainFn func(fd uintptr) bool
	inqFn           func(fd uintptr)
}

func newSpliceDir(src, dst syscall.RawConn, pp *pipe, records bool, moved *atomic.Uint64) *spliceDir {
	d := &spliceDir{src: src, dst: dst, pp: pp, records: records, moved: moved}
	d.fillFn = d.fillOnce
	d.drainFn = d.drainOnce
	d.inqFn = d.inqOnce
	return d
}

// fill splices what src has (up to the pipe's size) into the empty pipe,
// waiting in the netpoller until src is readable. 0 means EOF.
//
// With records set, src is a kTLS socket, whose splice returns at most
// one record (16 KiB) a call: fill then goes on splicing what is ready
// until the pipe is full, so that one drain moves many records. It stops
// early at what needs the caller (EOF, a control record, an error) and
// leaves that for the next fill, after the bytes before it are drained.
func (d *spliceDir) fill() (int, error) {
	d.total, d.serr = 0, nil
	err := d.src.Read(d.fillFn)
	if err != nil {
		return 0, err
	}
	if d.serr != nil {
		return 0, os.NewSyscallError("splice from socket", d.serr)
	}
	return d.total, nil
}

// fillOnce is fill's RawConn.Read callback.
func (d *spliceDir) fillOnce(fd uintptr) bool {
	pp := d.pp
	for d.total < pp.size {
		n, err := unix.Splice(int(fd), nil, pp.w, nil, pp.size-d.total, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			// Nothing yet: wait for src (the pipe is empty, so
			// it cannot be the pipe). Some: drain it first
			// (src has no more ready, or the pipe ran out of
			// buffers).
			return d.total > 0
		case err != nil:
			if d.total == 0 {
				d.serr = err
			}
			return true
		case n == 0:
			return true
		}
		d.total += int(n)
		if !d.records {
			return true
		}
	}
	return true
}

// drain splices the n bytes in the pipe into dst, waiting in the netpoller
// while dst is full, and counts them.
func (d *spliceDir) drain(n, more int) error {
	d.more = more
	for n > 0 {
		d.n, d.m, d.derr = n, 0, nil
		err := d.dst.Write(d.drainFn)
		if err != nil {
			return err
		}
		if d.derr != nil {
			return os.NewSyscallError("splice to socket", d.derr)
		}
		m := d.m
		if m == 0 {
			return fmt.Errorf("splice to socket: no progress with %d bytes in the pipe: %w", n, io.ErrNoProgress)
		}
		d.moved.Add(uint64(m))
		n -= int(m)
	}
	return nil
}

// drainOnce is drain's RawConn.Write callback.
func (d *spliceDir) drainOnce(fd uintptr) bool {
	for {
		d.m, d.derr = unix.Splice(d.pp.r, nil, int(fd), nil, d.n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK|d.more)
		if d.derr != unix.EINTR {
			return d.derr != unix.EAGAIN
		}
	}
}
