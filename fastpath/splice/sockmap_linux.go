package splice

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/fastpath/ktls"
	xsplice "github.com/fibmesh/fibmesh/xdp/splice"
)

// The verdict's peer flags and per-socket stats (xdp/splice/prog.c).
const (
	flagJoined  = uint32(xsplice.SplicePeerFlagsPEER_F_JOINED)
	flagTLS13RX = uint32(xsplice.SplicePeerFlagsPEER_F_TLS13RX)
)

// tls13Overhead is what kTLS adds to each TLS 1.3 record it sends: the
// 5-byte header, the inner content type and the 16-byte tag (every TLS 1.3
// AEAD suite has a 16-byte tag).
const tls13Overhead = 5 + 1 + 16

// SockmapOptions configure OpenSockmap.
type SockmapOptions struct {
	// MaxSockets bounds the sockets joined at once (two per pair);
	// default 65536.
	MaxSockets uint32
}

// Sockmap is a loaded xdp/splice program: its sockhash with the stream
// parser and verdict attached. One agent loads one and joins many pairs
// through it. Nothing is pinned: the sockets belong to the agent process
// and die with it, so their map entries have nothing to outlive.
type Sockmap struct {
	objs xsplice.SpliceObjects

	mu     sync.Mutex
	closed bool
	pairs  map[*Pair]struct{}
}

// OpenSockmap loads the xdp/splice program and attaches its stream parser
// and verdict to the sockhash. It needs CAP_BPF and CAP_NET_ADMIN (or root)
// and a kernel with BPF stream parsers (CONFIG_BPF_STREAM_PARSER).
func OpenSockmap(opts SockmapOptions) (*Sockmap, error) {
	spec, err := xsplice.LoadSplice()
	if err != nil {
		return nil, fmt.Errorf("splice: load spec: %w", err)
	}
	if opts.MaxSockets > 0 {
		for _, name := range []string{xsplice.SpliceMapSocks, xsplice.SpliceMapPeers, xsplice.SpliceMapSocketStats} {
			spec.Maps[name].MaxEntries = opts.MaxSockets
		}
	}
	s := &Sockmap{pairs: make(map[*Pair]struct{})}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		return nil, fmt.Errorf("splice: load xdp/splice: %w", err)
	}
	for _, a := range []struct {
		prog *ebpf.Program
		typ  ebpf.AttachType
	}{
		{s.objs.SpliceParser, ebpf.AttachSkSKBStreamParser},
		{s.objs.SpliceVerdict, ebpf.AttachSkSKBStreamVerdict},
	} {
		if err := link.RawAttachProgram(link.RawAttachProgramOptions{Target: s.objs.Socks.FD(), Program: a.prog, Attach: a.typ}); err != nil {
			s.objs.Close()
			return nil, fmt.Errorf("splice: attach %v to the sockhash: %w", a.typ, err)
		}
	}
	return s, nil
}

// Close tears down every pair still joined through s (see Pair.Close),
// detaches the programs and releases the maps.
func (s *Sockmap) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	pairs := make([]*Pair, 0, len(s.pairs))
	for p := range s.pairs {
		pairs = append(pairs, p)
	}
	s.mu.Unlock()
	var errs []error
	for _, p := range pairs {
		errs = append(errs, p.Close())
	}
	for _, a := range []struct {
		prog *ebpf.Program
		typ  ebpf.AttachType
	}{
		{s.objs.SpliceVerdict, ebpf.AttachSkSKBStreamVerdict},
		{s.objs.SpliceParser, ebpf.AttachSkSKBStreamParser},
	} {
		if err := link.RawDetachProgram(link.RawDetachProgramOptions{Target: s.objs.Socks.FD(), Program: a.prog, Attach: a.typ}); err != nil {
			errs = append(errs, fmt.Errorf("splice: detach %v: %w", a.typ, err))
		}
	}
	errs = append(errs, s.objs.Close())
	return errors.Join(errs...)
}

// statNames are the verdict's outcomes, in enum stat_reason order
// (xdp/splice/prog.c).
var statNames = []string{
	"redirect",
	"drop_no_entry",
	"drop_not_joined",
	"drop_peer_gone",
	"drop_tls_empty",
	"pass_tls_control",
	"pass_tls_short",
	"pass_tls_tail",
	"pass_tls_head",
	"pass_hold",
}

// Stats reads the verdict's outcome counters.
func (s *Sockmap) Stats() ([]Stat, error) {
	out := make([]Stat, len(statNames))
	for i, name := range statNames {
		var per []xsplice.SpliceSpliceStat
		if err := s.objs.Stats.Lookup(uint32(i), &per); err != nil {
			return nil, fmt.Errorf("splice: read stat %s: %w", name, err)
		}
		out[i].Reason = name
		for _, v := range per {
			out[i].Msgs += v.Msgs
			out[i].Bytes += v.Bytes
		}
	}
	return out, nil
}

// Prepared is a kTLS-to-be socket in the sockhash, waiting for its tls ULP
// and then Join.
type Prepared struct {
	s        *Sockmap
	tcp      *net.TCPConn
	rc       syscall.RawConn
	cookie   uint64
	rcvlowat int
	consumed uint64 // consumedSeq before it entered the sockhash

	mu   sync.Mutex
	used bool
}

// Prepare puts tcp, the socket of an mTLS connection whose handshake is
// done but whose tls ULP is not set yet, into the sockhash, so that Join
// can later redirect its bytes with ModeSockmap. The order is the
// kernel's: a socket that already has a ULP cannot join a sockhash, and a
// kTLS socket cannot leave one and keep receiving. So:
//
//	prep, err := sm.Prepare(tcp)         // before the tls ULP
//	kc, err := tc.Offload()              // or ktls.NewConn: ULP, TX, RX
//	pair, err := splice.Join(app, kc, splice.Options{Mode: splice.ModeSockmap, Prepared: prep})
//
// Until Join, bytes that reach tcp are held back from the verdict: its
// receive low-water mark is raised, so TCP raises no data_ready for them
// until they nearly fill the receive window. Bytes that still reach the
// verdict before the ULP takes over (a peer sending a window's worth in the
// microseconds between Prepare and the ULP) are dropped and counted, and
// Join then fails with ErrSockmapRace. Bytes already queued at Prepare
// are not touched. If the ULP cannot be
// set (kTLS unsupported), call Abort and keep using tcp in userspace.
//
// ModeSockmap joins TLS 1.3 connections only: check the negotiated version
// before Prepare.
func (s *Sockmap) Prepare(tcp *net.TCPConn) (*Prepared, error) {
	rc, err := tcp.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("splice: prepare: %w", err)
	}
	cookie, err := socketCookie(rc)
	if err != nil {
		return nil, fmt.Errorf("splice: prepare: %w", err)
	}
	low, err := rcvlowat(rc)
	if err != nil {
		return nil, fmt.Errorf("splice: prepare: %w", err)
	}
	consumed, err := consumedSeq(rc)
	if err != nil {
		return nil, fmt.Errorf("splice: prepare: %w", err)
	}
	pr := &Prepared{s: s, tcp: tcp, rc: rc, cookie: cookie, rcvlowat: low, consumed: consumed}
	if err := s.install(cookie, xsplice.SplicePeer{}); err != nil {
		return nil, fmt.Errorf("splice: prepare: %w", err)
	}
	if err := setRcvlowat(rc, maxRcvlowat); err != nil {
		s.uninstall(cookie)
		return nil, fmt.Errorf("splice: prepare: %w", err)
	}
	if err := s.insert(rc, cookie); err != nil {
		setRcvlowat(rc, low)
		s.uninstall(cookie)
		return nil, fmt.Errorf("splice: prepare: %w", err)
	}
	return pr, nil
}

// Abort takes a prepared socket out of the sockhash and restores its
// receive low-water mark, for a caller that could not set the tls ULP and
// keeps the socket in userspace. After the ULP is set it must not be
// called: close the connection instead.
func (pr *Prepared) Abort() error {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.used {
		return errors.New("splice: Abort after Join")
	}
	pr.used = true
	var errs []error
	if err := pr.s.objs.Socks.Delete(pr.cookie); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		errs = append(errs, fmt.Errorf("splice: abort: remove from sockhash: %w", err))
	}
	if err := setRcvlowat(pr.rc, pr.rcvlowat); err != nil {
		errs = append(errs, fmt.Errorf("splice: abort: %w", err))
	}
	pr.s.uninstall(pr.cookie)
	return errors.Join(errs...)
}

// install writes a socket's peers entry and zeroed stats, before the
// socket enters the sockhash (the verdict must never see it without them).
func (s *Sockmap) install(cookie uint64, peer xsplice.SplicePeer) error {
	if err := s.objs.SocketStats.Update(cookie, xsplice.SpliceSockStats{}, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("create socket stats: %w", err)
	}
	if err := s.objs.Peers.Update(cookie, peer, ebpf.UpdateAny); err != nil {
		s.objs.SocketStats.Delete(cookie)
		return fmt.Errorf("write peer entry: %w", err)
	}
	return nil
}

func (s *Sockmap) uninstall(cookie uint64) {
	s.objs.Peers.Delete(cookie)
	s.objs.SocketStats.Delete(cookie)
}

// insert puts the socket into the sockhash.
func (s *Sockmap) insert(rc syscall.RawConn, cookie uint64) error {
	return control(rc, func(fd int) error {
		err := s.objs.Socks.Update(cookie, uint64(fd), ebpf.UpdateNoExist)
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("insert into sockhash (a socket with a ULP, e.g. kTLS already set, cannot join one; call Prepare before the tls ULP): %w", err)
		}
		if err != nil {
			return fmt.Errorf("insert into sockhash: %w", err)
		}
		return nil
	})
}

func (s *Sockmap) sockStats(cookie uint64) (xsplice.SpliceSockStats, error) {
	var st xsplice.SpliceSockStats
	err := s.objs.SocketStats.Lookup(cookie, &st)
	return st, err
}

// sockmapEngine is ModeSockmap's state for one pair.
type sockmapEngine struct {
	s         *Sockmap
	p         *Pair
	plainRC   syscall.RawConn
	plainCk   uint64
	tlsCk     uint64
	tlsPeer   xsplice.SplicePeer // the kTLS socket's entry, HOLD cleared
	tls13     bool
	cipher    ktls.Cipher
	plainW0   uint64 // tcpWritten of each socket at Join
	tlsW0     uint64
	plainC0   uint64 // consumedSeq of each socket as it entered the sockhash
	tlsC0     uint64
	tlsSeq0   uint64           // kTLS TX sequence number at Join
	userBytes [2]atomic.Uint64 // bytes written from userspace, by Direction
	last      Counters
	lastMu    sync.Mutex
}

// connState is what *ktls.Conn tells about its record layer.
type connState interface{ State() ktls.ConnState }

func (s *Sockmap) join(plain *net.TCPConn, tls Offloaded, opts Options) (*Pair, error) {
	pr := opts.Prepared
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.used {
		return nil, errors.New("splice: a Prepared socket joins once")
	}
	tlsRC, err := tls.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("splice: kTLS socket: %w", err)
	}
	plainRC, err := plain.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("splice: plaintext socket: %w", err)
	}
	tlsCk, err := socketCookie(tlsRC)
	if err != nil {
		return nil, fmt.Errorf("splice: %w", err)
	}
	if tlsCk != pr.cookie {
		return nil, errors.New("splice: the kTLS side is not the socket that was prepared")
	}
	plainCk, err := socketCookie(plainRC)
	if err != nil {
		return nil, fmt.Errorf("splice: %w", err)
	}
	e := &sockmapEngine{s: s, plainRC: plainRC, plainCk: plainCk, tlsCk: tlsCk, tlsC0: pr.consumed}
	e.tlsPeer = xsplice.SplicePeer{Peer: plainCk, Flags: flagJoined}
	if cs, ok := tls.(connState); ok {
		st := cs.State()
		if st.Version != ktls.VersionTLS13 {
			return nil, fmt.Errorf("splice: ModeSockmap joins TLS 1.3 only (the verdict finds a record's content type at its end), this connection is %v: %w", st.Version, ErrUnsupported)
		}
		e.tls13, e.cipher = true, st.Cipher
		e.tlsPeer.Flags |= flagTLS13RX
	}

	if e.plainW0, err = tcpWritten(plainRC); err != nil {
		return nil, fmt.Errorf("splice: %w", err)
	}
	if e.tlsW0, err = tcpWritten(tlsRC); err != nil {
		return nil, fmt.Errorf("splice: %w", err)
	}
	if e.tls13 {
		if e.tlsSeq0, err = tlsTXSeq(tlsRC, e.cipher); err != nil {
			return nil, fmt.Errorf("splice: %w", err)
		}
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errors.New("splice: the Sockmap is closed")
	}
	s.mu.Unlock()

	// From here on the pair owns the sockets: a failure resets them.
	pr.used = true
	p := newPair(ModeSockmap, plain, tls, tlsRC)
	e.p = p
	p.eng = e
	p.counters = e.counters
	p.stop = e.stop
	p.release = e.release
	fail := func(err error) (*Pair, error) {
		e.stop()
		e.release()
		return nil, err // Join resets and closes the sockets
	}

	// Userspace plaintext goes first, before the kernel can move a byte:
	// the kTLS side's pending plaintext (no verdict runs on that socket
	// until the reader below calls recvmsg) ...
	if pend := tls.Pending(); len(pend) > 0 {
		if err := writeCounted(plain, pend, &e.userBytes[TLSToPlain]); err != nil {
			return fail(fmt.Errorf("splice: write pending plaintext: %w", err))
		}
	}
	// ... and what is already queued on the plaintext socket, which is
	// not in the sockhash yet. Reading it out also leaves the socket at an
	// skb boundary, which the stream parser needs (a partly read skb
	// would sit in the parser until more data came).
	queued, err := drainQueued(plainRC)
	if err != nil {
		return fail(fmt.Errorf("splice: read queued plaintext: %w", err))
	}
	for _, b := range [][]byte{opts.PlainPending, queued} {
		if len(b) == 0 {
			continue
		}
		if err := writeCounted(tls, b, &e.userBytes[PlainToTLS]); err != nil {
			return fail(fmt.Errorf("splice: write pending plaintext: %w", err))
		}
	}

	if e.plainC0, err = consumedSeq(plainRC); err != nil {
		return fail(fmt.Errorf("splice: %w", err))
	}
	// The plaintext socket first: its bytes go to the kTLS socket, in the
	// sockhash since Prepare. Then the kTLS socket, whose bytes now find
	// their peer; whatever the verdict dropped before this was lost.
	if err := s.install(plainCk, xsplice.SplicePeer{Peer: tlsCk, Flags: flagJoined}); err != nil {
		return fail(fmt.Errorf("splice: %w", err))
	}
	if err := s.insert(plainRC, plainCk); err != nil {
		return fail(fmt.Errorf("splice: plaintext socket: %w", err))
	}
	if err := s.objs.Peers.Update(tlsCk, e.tlsPeer, ebpf.UpdateExist); err != nil {
		return fail(fmt.Errorf("splice: join the kTLS socket: %w", err))
	}
	st, err := s.sockStats(tlsCk)
	if err != nil {
		return fail(fmt.Errorf("splice: read the prepared socket's stats: %w", err))
	}
	if st.DropBytes > 0 {
		return fail(fmt.Errorf("splice: %d bytes reached the prepared socket before it was joined and were dropped: %w", st.DropBytes, ErrSockmapRace))
	}
	// Bytes that reached either socket while it was in the sockhash with
	// no data_ready for them (after the read above; on the kTLS socket
	// since Prepare raised its low-water mark) are handed on now.
	if err := setRcvlowat(plainRC, 1); err != nil {
		return fail(fmt.Errorf("splice: %w", err))
	}
	if err := setRcvlowat(tlsRC, pr.rcvlowat); err != nil {
		return fail(fmt.Errorf("splice: %w", err))
	}

	s.mu.Lock()
	s.pairs[p] = struct{}{}
	s.mu.Unlock()
	p.run(e.watchPlain, e.readTLS)
	return p, nil
}

// drainQueued reads, without waiting, whatever the socket has queued.
func drainQueued(rc syscall.RawConn) ([]byte, error) {
	var out []byte
	var rerr error
	buf := make([]byte, 64<<10)
	err := rc.Read(func(fd uintptr) bool {
		for {
			n, err := unix.Read(int(fd), buf)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN, n == 0:
				return true
			case err != nil:
				rerr = err
				return true
			}
			out = append(out, buf[:n]...)
		}
	})
	if err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	return out, nil
}

func (e *sockmapEngine) counters() Counters {
	e.lastMu.Lock()
	defer e.lastMu.Unlock()
	c := Counters{PlainToTLS: e.userBytes[PlainToTLS].Load(), TLSToPlain: e.userBytes[TLSToPlain].Load()}
	// Once the entries are gone the last reading stands.
	if st, err := e.s.sockStats(e.plainCk); err == nil {
		e.last.PlainToTLS = st.RedirectBytes
	}
	if st, err := e.s.sockStats(e.tlsCk); err == nil {
		e.last.TLSToPlain = st.RedirectBytes
	}
	c.PlainToTLS += e.last.PlainToTLS
	c.TLSToPlain += e.last.TLSToPlain
	return c
}

// stop makes the verdict drop both sockets' bytes, before the pair resets
// them.
func (e *sockmapEngine) stop() {
	for _, ck := range []uint64{e.plainCk, e.tlsCk} {
		var peer xsplice.SplicePeer
		if e.s.objs.Peers.Lookup(ck, &peer) == nil {
			peer.Flags = 0
			e.s.objs.Peers.Update(ck, peer, ebpf.UpdateExist)
		}
	}
}

// release removes the pair's entries. The sockets left the sockhash when
// they were closed; deleting them again is for a socket someone else still
// holds open. The last reading of the counters is Pair.finish's, taken
// just before.
func (e *sockmapEngine) release() error {
	var errs []error
	for _, ck := range []uint64{e.plainCk, e.tlsCk} {
		if err := e.s.objs.Socks.Delete(ck); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("splice: remove socket %#x from the sockhash: %w", ck, err))
		}
		e.s.uninstall(ck)
	}
	e.s.mu.Lock()
	delete(e.s.pairs, e.p)
	e.s.mu.Unlock()
	return errors.Join(errs...)
}

// readTLS is the kTLS side's reader. It sits in recvmsg, which is where
// kTLS decrypts records and runs the verdict on them; it returns only with
// records the verdict passed up, or at the end of the stream.
func (e *sockmapEngine) readTLS() error {
	p := e.p
	buf := make([]byte, maxRecord+256)
	for {
		n, err := rereadingRead(p.tls, buf)
		if n > 0 {
			// The verdict passed these records and holds every later
			// one back (PEER_F_HOLD): the plaintext socket must have
			// every redirected byte before them.
			if err := e.waitPlainWritten(); err != nil {
				return err
			}
			if err := writeCounted(p.plain, buf[:n], &e.userBytes[TLSToPlain]); err != nil {
				return err
			}
			// A full buffer may have cut a record short, its rest
			// left in kTLS for the next read; redirected records must
			// not overtake it, so the hold stays until a read ends
			// on a record boundary (short of the buffer).
			if n == len(buf) {
				continue
			}
			if p.aborting() {
				return net.ErrClosed
			}
			if err := e.s.objs.Peers.Update(e.tlsCk, e.tlsPeer, ebpf.UpdateExist); err != nil {
				return fmt.Errorf("resume redirecting: %w", err)
			}
		}
		switch {
		case err == io.EOF:
			// With kTLS every record before close_notify ran through
			// the verdict in this goroutine, so its count is final;
			// a plain TCP socket in its place reports EOF as soon as
			// the FIN is in, maybe before the parser got to the bytes
			// before it.
			if !e.tls13 {
				if err := e.waitVerdicted(e.tlsCk, p.tlsRC, e.tlsC0); err != nil {
					return err
				}
			}
			if err := e.waitPlainWritten(); err != nil {
				return err
			}
			if p.aborting() { // the EOF may be the reset's own shutdown
				return net.ErrClosed
			}
			if err := p.plain.CloseWrite(); err != nil {
				return fmt.Errorf("propagate close_notify (FIN): %w", err)
			}
			return nil
		case err != nil:
			return err
		}
	}
}

// watchPlain waits for the application's EOF, which it propagates once the
// kernel has handed every byte before it to kTLS. The plaintext socket's
// reads only ever see what the verdict passes, and it passes nothing.
func (e *sockmapEngine) watchPlain() error {
	p := e.p
	var buf [512]byte
	n, err := rereadingRead(p.plain, buf[:])
	if n > 0 {
		return fmt.Errorf("the verdict passed %d plaintext bytes up (it must redirect or drop)", n)
	}
	if err != io.EOF {
		return err
	}
	// TCP reports EOF as soon as the FIN is in, maybe before the stream
	// parser (which can run from a work queue) got to the bytes before
	// it: wait for the verdict to have seen them all, then for the kernel
	// to have handed them to kTLS.
	if err := e.waitVerdicted(e.plainCk, e.plainRC, e.plainC0); err != nil {
		return err
	}
	if err := e.waitTLSWritten(); err != nil {
		return err
	}
	if p.aborting() {
		return net.ErrClosed
	}
	if err := p.tls.CloseWrite(); err != nil {
		return fmt.Errorf("propagate EOF (close_notify): %w", err)
	}
	return nil
}

// Bounds of rereadingRead's waits.
const (
	rereadMin = 50 * time.Millisecond
	rereadMax = time.Second
)

// rereadingRead is c.Read for a socket in the sockhash, where the kernel
// may raise no event for the end of the stream: on 6.18, a FIN that
// reached the socket after the verdict took over sometimes wakes no
// reader, though the socket is in CLOSE-WAIT with nothing queued and a
// read returns EOF at once (TestPendingFirst/sockmap stalled in about one
// run in fifty, the reader asleep in the poller). So a read that waited
// long is tried again, after 50 ms, then at doubling intervals up to 1 s:
// a missed end of stream costs at most that much, and an idle pair one
// wake-up per second and direction. A reader without deadlines reads as
// it is.
func rereadingRead(c io.Reader, buf []byte) (int, error) {
	d, ok := c.(interface{ SetReadDeadline(time.Time) error })
	if !ok {
		return c.Read(buf)
	}
	wait := rereadMin
	for {
		if err := d.SetReadDeadline(time.Now().Add(wait)); err != nil {
			return c.Read(buf) // closed: Read says so
		}
		n, err := c.Read(buf)
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			wait = min(2*wait, rereadMax)
			continue
		}
		return n, err
	}
}

// waitVerdicted waits, after the socket's EOF, until the verdict has seen
// every byte the socket received since it entered the sockhash
// (consumedSeq c0 then). TCP counts the FIN in the bytes received: one
// less is payload.
func (e *sockmapEngine) waitVerdicted(ck uint64, rc syscall.RawConn, c0 uint64) error {
	return e.waitWritten(func() (bool, error) {
		r, err := tcpReceived(rc)
		if err != nil {
			return false, err
		}
		st, err := e.s.sockStats(ck)
		if err != nil {
			return false, fmt.Errorf("read stats: %w", err)
		}
		return st.RedirectBytes+st.PassBytes+st.DropBytes+c0+1 >= r, nil
	})
}

// waitPlainWritten waits until the plaintext socket has taken every byte
// sent its way: the verdict's redirects run through a kernel work queue,
// so a byte counted at the verdict may still be on its way.
func (e *sockmapEngine) waitPlainWritten() error {
	return e.waitWritten(func() (bool, error) {
		st, err := e.s.sockStats(e.tlsCk)
		if err != nil {
			return false, fmt.Errorf("read stats: %w", err)
		}
		w, err := tcpWritten(e.plainRC)
		if err != nil {
			return false, err
		}
		return w-e.plainW0 >= st.RedirectBytes+e.userBytes[TLSToPlain].Load(), nil
	})
}

// waitTLSWritten is waitPlainWritten for the kTLS socket, whose TCP stream
// carries each record's overhead on top of the plaintext: the kTLS TX
// sequence number says how many records that is.
func (e *sockmapEngine) waitTLSWritten() error {
	return e.waitWritten(func() (bool, error) {
		st, err := e.s.sockStats(e.plainCk)
		if err != nil {
			return false, fmt.Errorf("read stats: %w", err)
		}
		// TCP first, then the record count: a record sent in between
		// is then counted with its overhead but maybe not its bytes,
		// which can only delay the answer, never advance it.
		w, err := tcpWritten(e.p.tlsRC)
		if err != nil {
			return false, err
		}
		want := st.RedirectBytes + e.userBytes[PlainToTLS].Load()
		if e.tls13 {
			seq, err := tlsTXSeq(e.p.tlsRC, e.cipher)
			if err != nil {
				return false, err
			}
			if seq < e.tlsSeq0 {
				return false, errors.New("kTLS re-keyed its sending direction during the join: its records can no longer be counted")
			}
			want += tls13Overhead * (seq - e.tlsSeq0)
		}
		return w-e.tlsW0 >= want, nil
	})
}

// Backoff bounds of waitWritten.
const (
	drainPollMin = 20 * time.Microsecond
	drainPollMax = 5 * time.Millisecond
)

// waitWritten polls done until it holds. The kernel raises no event when a
// stream parser has caught up or a psock's backlog has been sent, so this
// is a poll, with a backoff from 20 µs to 5 ms; it runs once per direction
// at a half-close and before a record the verdict passed up, and usually
// succeeds at once. It gives up when the pair is torn down.
func (e *sockmapEngine) waitWritten(done func() (bool, error)) error {
	d := drainPollMin
	var t *time.Timer
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		if t == nil {
			t = time.NewTimer(d)
			defer t.Stop()
		} else {
			t.Reset(d)
		}
		select {
		case <-t.C:
		case <-e.p.abortc:
			return net.ErrClosed
		}
		d = min(2*d, drainPollMax)
	}
}
