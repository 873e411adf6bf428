package splice

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// Mode selects the engine that moves a joined pair's bytes.
type Mode int

// The engines. The zero Mode means DefaultMode().
const (
	// ModeSplice moves the bytes with splice(2) through a pipe per
	// direction. It works wherever kTLS does.
	ModeSplice Mode = iota + 1
	// ModeSockmap moves the bytes with the xdp/splice sockmap verdict. It
	// needs a loaded Sockmap whose SelfTest passed, TLS 1.3 and software
	// kTLS RX, and the kTLS socket prepared before its tls ULP was set.
	ModeSockmap
)

func (m Mode) String() string {
	switch m {
	case ModeSplice:
		return "splice"
	case ModeSockmap:
		return "sockmap"
	case 0:
		return "default"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// DefaultMode is the engine Join uses when Options.Mode is zero:
// ModeSplice, because it is the one proven and the faster one measured
// (docs/splice.md has the runs):
//
//   - it works wherever kTLS does, with nothing to prove or prepare first;
//   - ModeSockmap cannot carry kTLS on Debian 12's kernel (6.1 refuses kTLS
//     keys on a socket in a sockhash, and a kTLS socket into one), and on
//     6.12 only half of it runs in the kernel: the verdict cannot cut the
//     peer's full 16 KiB records to their plaintext, so they go through the
//     pair's reader in userspace;
//   - where ModeSockmap does work throughout (plain TCP, Linux 6.18, 2
//     CPUs), it moved 5.1 Gbit/s against splice's 6.1; it spends a tenth of
//     splice's CPU in the agent (0.026 against 0.27 s per GiB moved) but
//     more in kernel work queues: 2.67 against 2.50 s per GiB for the whole
//     machine.
func DefaultMode() Mode { return ModeSplice }

// Offloaded is the kTLS side of a join: *ktls.Conn (what
// ktls.TLSConn.Offload returns) implements it; tests use a plain
// *net.TCPConn with a Pending method in its place.
//
// Join reads the socket through SyscallConn. It calls Read only where the
// kernel will not move the bytes itself (a TLS control record, or records
// the sockmap verdict passed up), Write only for PlainPending, CloseWrite to
// propagate the application's EOF (close_notify, then FIN) and Close at the
// end.
type Offloaded interface {
	io.ReadWriter
	SyscallConn() (syscall.RawConn, error)
	// Pending returns, and forgets, plaintext already decrypted in
	// userspace: Join writes it to the plaintext socket first.
	Pending() []byte
	CloseWrite() error
	Close() error
}

// Options configure Join.
type Options struct {
	// Mode picks the engine; zero means DefaultMode().
	Mode Mode
	// Prepared is what Sockmap.Prepare returned for the kTLS socket
	// before its tls ULP was set. Required for ModeSockmap; it names the
	// Sockmap the pair joins.
	Prepared *Prepared
	// PipeSize is the capacity asked of each pipe of ModeSplice (default
	// 1 MiB, the default /proc/sys/fs/pipe-max-size). Where the kernel
	// refuses it (pipe-max-size, pipe-user-pages-soft) the pipe keeps the
	// size the kernel gives.
	PipeSize int
	// PlainPending is plaintext the caller already read from the plaintext
	// socket (a bufio.Reader's buffer after sniffing): Join writes it to the
	// kTLS side before any byte the kernel moves.
	PlainPending []byte
}

// Direction is one way through a joined pair.
type Direction int

// The two directions.
const (
	PlainToTLS Direction = iota // application to kTLS peer
	TLSToPlain                  // kTLS peer to application
)

func (d Direction) String() string {
	switch d {
	case PlainToTLS:
		return "plain→tls"
	case TLSToPlain:
		return "tls→plain"
	}
	return fmt.Sprintf("direction(%d)", int(d))
}

// Counters are a pair's payload bytes (plaintext) handed to the destination
// socket, per direction: spliced into it, queued for it by the sockmap
// verdict, or written to it from userspace (pending data, records the
// kernel would not move).
type Counters struct {
	PlainToTLS uint64
	TLSToPlain uint64
}

// Pair is a joined plaintext and kTLS socket. Its methods are safe for
// concurrent use.
type Pair struct {
	mode  Mode
	plain *net.TCPConn
	tls   Offloaded
	tlsRC syscall.RawConn

	// Engine hooks. counters reads the live counters; stop, called once
	// when the pair is torn down early, stops the kernel moving bytes
	// before the sockets are reset; release frees what the engine holds
	// once both directions have returned and both sockets are closed.
	counters func() Counters
	stop     func()
	release  func() error
	eng      any // the engine's state, for SelfTest

	running atomic.Int32  // directions still running
	abortc  chan struct{} // closed when the pair is torn down early
	done    chan struct{} // closed when everything is released

	mu        sync.Mutex
	err       error // what ended the pair, nil for a clean end or Close
	closing   bool  // Close was called
	aborted   bool
	final     Counters
	released  bool
	closeErrs error
}

// Mode is the engine that moves the pair's bytes.
func (p *Pair) Mode() Mode { return p.mode }

// Counters returns the bytes moved so far, per direction. After the pair
// has ended they are the final counts.
func (p *Pair) Counters() Counters {
	p.mu.Lock()
	if p.released {
		c := p.final
		p.mu.Unlock()
		return c
	}
	p.mu.Unlock()
	return p.counters()
}

// Done is closed when the pair has ended and released its sockets.
func (p *Pair) Done() <-chan struct{} { return p.done }

// Wait blocks until the pair has ended: both directions reached their EOF
// and propagated it (a clean end, nil), or one failed (the error, naming
// the direction), or Close was called (nil). Both sockets are closed when
// Wait returns.
func (p *Pair) Wait() error {
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Close tears the pair down now: the kernel stops moving its bytes, bytes
// in flight are lost, both connections are reset (the kTLS peer gets no
// close_notify, so it sees a cut stream, not a complete one) and Close
// returns once every goroutine and kernel entry of the pair is gone. The
// error is about releasing those (map entries), never about the traffic;
// see Wait for that.
func (p *Pair) Close() error {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	p.abort()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closeErrs
}

// run starts the two directions. Each returns nil after it propagated its
// EOF, or the error that ended it.
func (p *Pair) run(plainToTLS, tlsToPlain func() error) {
	p.running.Store(2)
	for _, d := range []struct {
		dir Direction
		fn  func() error
	}{{PlainToTLS, plainToTLS}, {TLSToPlain, tlsToPlain}} {
		go func() {
			if err := d.fn(); err != nil {
				p.fail(fmt.Errorf("splice: %v: %w", d.dir, err))
			}
			if p.running.Add(-1) == 0 {
				p.finish()
			}
		}()
	}
}

// fail records the first error and tears the pair down.
func (p *Pair) fail(err error) {
	p.mu.Lock()
	// After Close or a first failure, errors are consequences of the
	// sockets being reset under the other direction.
	if p.err == nil && !p.closing && !p.aborted {
		p.err = err
	}
	p.mu.Unlock()
	p.abort()
}

// abort stops the engine and resets both connections, which unblocks any
// direction still waiting on them.
func (p *Pair) abort() {
	p.mu.Lock()
	if p.aborted || p.released {
		p.mu.Unlock()
		return
	}
	p.aborted = true
	p.mu.Unlock()
	close(p.abortc)
	if p.stop != nil {
		p.stop()
	}
	// The application's socket first: resetting the kTLS side shuts it
	// down, which its reader may take for an EOF to propagate, and the
	// application must see the reset, not that EOF.
	p.plain.SetLinger(0)
	p.plain.Close()
	resetTLS(p.tls, p.tlsRC)
}

// finish runs once both directions have returned: after a clean end it
// closes both sockets, then it releases the engine.
func (p *Pair) finish() {
	p.mu.Lock()
	aborted := p.aborted
	p.mu.Unlock()
	var errs []error
	if !aborted {
		// Both EOFs were propagated: close_notify was sent by
		// CloseWrite, so Close sends nothing more.
		if err := p.tls.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("splice: close kTLS side: %w", err))
		}
		if err := p.plain.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("splice: close plaintext side: %w", err))
		}
	}
	final := p.counters()
	if p.release != nil {
		if err := p.release(); err != nil {
			errs = append(errs, err)
		}
	}
	p.mu.Lock()
	p.final = final
	p.released = true
	p.closeErrs = errors.Join(errs...)
	if p.err == nil && !p.closing && !aborted && p.closeErrs != nil {
		p.err = p.closeErrs
	}
	p.mu.Unlock()
	close(p.done)
}

// aborting reports whether the pair is being torn down early.
func (p *Pair) aborting() bool {
	select {
	case <-p.abortc:
		return true
	default:
		return false
	}
}

func newPair(mode Mode, plain *net.TCPConn, tls Offloaded, tlsRC syscall.RawConn) *Pair {
	return &Pair{
		mode:   mode,
		plain:  plain,
		tls:    tls,
		tlsRC:  tlsRC,
		abortc: make(chan struct{}),
		done:   make(chan struct{}),
	}
}
