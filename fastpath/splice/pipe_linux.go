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
	plainRC syscall.RawConn
	pipes   [2]*pipe // by Direction
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
	e := &spliceEngine{plainRC: plainRC, pending: opts.PlainPending}
	for i := range e.pipes {
		pp, err := newPipe(size)
		if err != nil {
			e.release()
			return nil, fmt.Errorf("splice: %w", err)
		}
		e.pipes[i] = pp
	}
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
		n, err := p.tls.Write(e.pending)
		e.moved[PlainToTLS].Add(uint64(n))
		if err != nil {
			return fmt.Errorf("write pending plaintext: %w", err)
		}
	}
	pp := e.pipes[PlainToTLS]
	for {
		n, err := fill(e.plainRC, pp, false)
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
		if n == pp.size {
			if q, err := inq(e.plainRC); err == nil && q > 0 {
				more = unix.SPLICE_F_MORE
			}
		}
		if err := drain(pp, p.tlsRC, n, more, &e.moved[PlainToTLS]); err != nil {
			return err
		}
	}
}

// tlsToPlain moves the kTLS peer's bytes to the application until the
// peer's close_notify, which it propagates as a FIN.
func (e *spliceEngine) tlsToPlain() error {
	p := e.p
	if pend := p.tls.Pending(); len(pend) > 0 {
		n, err := p.plain.Write(pend)
		e.moved[TLSToPlain].Add(uint64(n))
		if err != nil {
			return fmt.Errorf("write pending plaintext: %w", err)
		}
	}
	pp := e.pipes[TLSToPlain]
	var buf []byte
	for {
		n, err := fill(p.tlsRC, pp, true)
		if err != nil && !errors.Is(err, unix.EINVAL) {
			return err
		}
		if n > 0 {
			// No SPLICE_F_MORE: whether the peer has sent more is
			// unknown until kTLS has a whole record.
			if err := drain(pp, e.plainRC, n, 0, &e.moved[TLSToPlain]); err != nil {
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
			w, err := p.plain.Write(buf[:m])
			e.moved[TLSToPlain].Add(uint64(w))
			if err != nil {
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

// fill splices what src has (up to the pipe's size) into the empty pipe,
// waiting in the netpoller until src is readable. 0 means EOF.
//
// With records set, src is a kTLS socket, whose splice returns at most
// one record (16 KiB) a call: fill then goes on splicing what is ready
// until the pipe is full, so that one drain moves many records. It stops
// early at what needs the caller (EOF, a control record, an error) and
// leaves that for the next fill, after the bytes before it are drained.
func fill(src syscall.RawConn, pp *pipe, records bool) (int, error) {
	var total int
	var serr error
	err := src.Read(func(fd uintptr) bool {
		for total < pp.size {
			n, err := unix.Splice(int(fd), nil, pp.w, nil, pp.size-total, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				// Nothing yet: wait for src (the pipe is empty, so
				// it cannot be the pipe). Some: drain it first
				// (src has no more ready, or the pipe ran out of
				// buffers).
				return total > 0
			case err != nil:
				if total == 0 {
					serr = err
				}
				return true
			case n == 0:
				return true
			}
			total += int(n)
			if !records {
				return true
			}
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, os.NewSyscallError("splice from socket", serr)
	}
	return total, nil
}

// drain splices the n bytes in the pipe into dst, waiting in the netpoller
// while dst is full, and counts them.
func drain(pp *pipe, dst syscall.RawConn, n, more int, moved *atomic.Uint64) error {
	for n > 0 {
		var m int64
		var serr error
		err := dst.Write(func(fd uintptr) bool {
			for {
				m, serr = unix.Splice(pp.r, nil, int(fd), nil, n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK|more)
				if serr != unix.EINTR {
					return serr != unix.EAGAIN
				}
			}
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return os.NewSyscallError("splice to socket", serr)
		}
		if m == 0 {
			return fmt.Errorf("splice to socket: no progress with %d bytes in the pipe: %w", n, io.ErrNoProgress)
		}
		moved.Add(uint64(m))
		n -= int(m)
	}
	return nil
}
