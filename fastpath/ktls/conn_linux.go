package ktls

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Conn is a TCP connection whose TLS record layer runs in the kernel: Write
// hands plaintext to the kernel, which sends TLS records; Read returns the
// plaintext of the application_data records the kernel decrypted and acts
// on control records (see the package doc). It implements net.Conn, and
// syscall.Conn so the byte path can splice it.
type Conn struct {
	tcp   *net.TCPConn
	rc    syscall.RawConn
	state ConnState
	suite suite

	rmu      sync.Mutex
	pending  []byte // plaintext decrypted before the offload, or left by a short Read
	rerr     error  // sticky read error (io.EOF after close_notify)
	hs       []byte // a handshake message split across records
	rxSecret []byte // TLS 1.3 application traffic secrets, for KeyUpdate
	scratch  []byte
	oob      [64]byte

	wmu      sync.Mutex // orders control records and re-keys with writes
	txSecret []byte
	sentEOF  bool   // close_notify or a fatal alert sent: no more writes
	sentWhat string // which of the two, for Write's error
}

// ConnState describes an offloaded connection.
type ConnState struct {
	Version Version
	Cipher  Cipher
	// TXSeq and RXSeq are the sequence numbers the kernel started from.
	TXSeq, RXSeq uint64
}

// NewConn installs tx and rx on tcp (the tls ULP first) and returns the
// kTLS connection. rx's and tx's versions and ciphers must agree. The
// secrets are the TLS 1.3 application traffic secrets the keys came from,
// kept for KeyUpdate; nil disables re-keying (a peer's KeyUpdate then fails
// the connection with ErrKeyUpdate). Most callers use TLSConn.Offload,
// which derives the keys from a handshake; NewConn is for tests, probes
// and callers that negotiate keys themselves.
//
// If the ULP cannot be set (an *UnsupportedError) the socket is unchanged.
// Any later error closes it: a socket with one direction installed cannot
// go on in userspace.
func NewConn(tcp *net.TCPConn, tx, rx Keys, txSecret, rxSecret []byte) (*Conn, error) {
	rc, err := tcp.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("ktls: %w", err)
	}
	if err := EnableULP(rc); err != nil {
		return nil, err
	}
	kc, err := install(tcp, rc, tx, rx, txSecret, rxSecret)
	if err != nil {
		tcp.Close()
		return nil, err
	}
	return kc, nil
}

// install sets both directions' keys on a socket that has the tls ULP.
func install(tcp *net.TCPConn, rc syscall.RawConn, tx, rx Keys, txSecret, rxSecret []byte) (*Conn, error) {
	if tx.Version != rx.Version || tx.Cipher != rx.Cipher {
		return nil, fmt.Errorf("ktls: TX is %v %v but RX is %v %v", tx.Version, tx.Cipher, rx.Version, rx.Cipher)
	}
	if err := SetKeys(rc, TX, tx); err != nil {
		return nil, err
	}
	if err := SetKeys(rc, RX, rx); err != nil {
		return nil, err
	}
	s, _ := suiteForCipher(tx.Cipher)
	return &Conn{
		tcp:      tcp,
		rc:       rc,
		suite:    s,
		state:    ConnState{Version: tx.Version, Cipher: tx.Cipher, TXSeq: tx.Seq, RXSeq: rx.Seq},
		txSecret: txSecret,
		rxSecret: rxSecret,
	}, nil
}

// suiteForCipher is the TLS 1.3 suite of a kTLS cipher (the hash for
// KeyUpdate).
func suiteForCipher(c Cipher) (suite, bool) {
	switch c {
	case CipherAESGCM128:
		return suiteOf(tls.TLS_AES_128_GCM_SHA256)
	case CipherAESGCM256:
		return suiteOf(tls.TLS_AES_256_GCM_SHA384)
	case CipherChaCha20Poly1305:
		return suiteOf(tls.TLS_CHACHA20_POLY1305_SHA256)
	}
	return suite{}, false
}

// State reports the connection's version, cipher and starting sequence
// numbers.
func (c *Conn) State() ConnState { return c.state }

// Pending returns, and forgets, plaintext that userspace already holds:
// what crypto/tls decrypted before the offload but the caller had not read.
// The byte path writes it to the other socket before it splices.
func (c *Conn) Pending() []byte {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	p := c.pending
	c.pending = nil
	return p
}

// Read returns decrypted application data. It returns io.EOF after the
// peer's close_notify, an *AlertError for any other alert, an error
// wrapping ErrTruncated if TCP ends without close_notify, and an error
// wrapping ErrKeyUpdate if the peer re-keyed and the kernel cannot follow.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	if c.rerr != nil {
		return 0, c.rerr
	}
	if len(p) == 0 {
		return 0, nil
	}
	// A control record must fit whole (alerts are 2 bytes, KeyUpdate 5):
	// tiny reads go through a scratch buffer.
	buf := p
	small := len(p) < 64
	if small {
		if c.scratch == nil {
			c.scratch = make([]byte, 16<<10)
		}
		buf = c.scratch
	}
	for {
		n, typ, err := c.recvRecord(buf)
		if err != nil {
			if !isTimeout(err) {
				c.rerr = err
			}
			return 0, err
		}
		if typ == recordApplicationData {
			if small {
				m := copy(p, buf[:n])
				c.pending = append(c.pending[:0], buf[m:n]...)
				return m, nil
			}
			return n, nil
		}
		if err := c.control(typ, buf[:n]); err != nil {
			c.rerr = err
			return 0, err
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// recvRecord reads (part of) one record with its type.
func (c *Conn) recvRecord(buf []byte) (n int, typ byte, err error) {
	var oobn int
	var serr error
	err = c.rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, serr = unix.Recvmsg(int(fd), buf, c.oob[:], 0)
		return serr != unix.EAGAIN
	})
	if err != nil {
		return 0, 0, &net.OpError{Op: "read", Net: "tcp", Source: c.tcp.LocalAddr(), Addr: c.tcp.RemoteAddr(), Err: err}
	}
	if serr != nil {
		return 0, 0, c.recvErr(serr)
	}
	if n == 0 && oobn == 0 {
		return 0, 0, fmt.Errorf("ktls: %w: %w", ErrTruncated, io.ErrUnexpectedEOF)
	}
	typ = recordApplicationData
	msgs, perr := unix.ParseSocketControlMessage(c.oob[:oobn])
	if perr != nil {
		return 0, 0, fmt.Errorf("ktls: parse record type control message: %w", perr)
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_TLS && m.Header.Type == tlsGetRecordType && len(m.Data) > 0 {
			typ = m.Data[0]
		}
	}
	return n, typ, nil
}

// recvErr explains the kernel's kTLS receive errors.
func (c *Conn) recvErr(errno error) error {
	switch errno {
	case unix.EBADMSG:
		return fmt.Errorf("ktls: a record failed authentication (EBADMSG): wrong keys, wrong sequence number or a tampered record; connection failed: %w", errno)
	case unix.EKEYEXPIRED:
		return fmt.Errorf("ktls: %w: the kernel paused decryption after a KeyUpdate: %w", ErrKeyUpdate, errno)
	case unix.EMSGSIZE:
		return fmt.Errorf("ktls: record too large (EMSGSIZE): %w", errno)
	}
	return &net.OpError{Op: "read", Net: "tcp", Source: c.tcp.LocalAddr(), Addr: c.tcp.RemoteAddr(), Err: os.NewSyscallError("recvmsg", errno)}
}

// control acts on a non-data record: nil means "keep reading".
func (c *Conn) control(typ byte, b []byte) error {
	switch typ {
	case recordAlert:
		if len(b) != 2 {
			c.sendAlert(alertUnexpectedMessage)
			return fmt.Errorf("ktls: malformed alert record of %d bytes", len(b))
		}
		if b[1] == alertCloseNotify {
			return io.EOF
		}
		if b[0] == 1 && (b[1] == 90 || c.state.Version == VersionTLS12) {
			// Warning user_canceled announces a close_notify; TLS 1.2
			// warnings are not fatal (crypto/tls ignores them too).
			return nil
		}
		return &AlertError{Level: b[0], Description: b[1]}
	case recordHandshake:
		c.hs = append(c.hs, b...)
		for len(c.hs) >= 4 {
			l := int(c.hs[1])<<16 | int(c.hs[2])<<8 | int(c.hs[3])
			if len(c.hs) < 4+l {
				if l > 1<<16 {
					c.sendAlert(alertUnexpectedMessage)
					return fmt.Errorf("ktls: post-handshake message type %d of %d bytes is too large", c.hs[0], l)
				}
				return nil
			}
			msg, body := c.hs[0], c.hs[4:4+l]
			c.hs = c.hs[4+l:]
			switch msg {
			case handshakeNewSessionTicket:
				// Dropped: fibmesh does not resume sessions.
			case handshakeKeyUpdate:
				if err := c.peerKeyUpdate(body); err != nil {
					return err
				}
			default:
				c.sendAlert(alertUnexpectedMessage)
				return fmt.Errorf("ktls: unexpected post-handshake message type %d", msg)
			}
		}
		return nil
	}
	c.sendAlert(alertUnexpectedMessage)
	return fmt.Errorf("ktls: unexpected record type %d after the handshake", typ)
}

// peerKeyUpdate applies a peer's KeyUpdate (RFC 8446, section 4.6.3).
func (c *Conn) peerKeyUpdate(body []byte) error {
	switch {
	case c.state.Version != VersionTLS13:
		c.sendAlert(alertUnexpectedMessage)
		return fmt.Errorf("ktls: KeyUpdate on a %v connection (TLS 1.3 only)", c.state.Version)
	case len(body) != 1 || body[0] > 1:
		c.sendAlert(alertUnexpectedMessage)
		return fmt.Errorf("ktls: malformed KeyUpdate: body %x, want one byte 0 or 1", body)
	}
	if c.rxSecret == nil {
		c.sendAlert(alertInternalError)
		return fmt.Errorf("ktls: %w: no traffic secret kept for re-keying", ErrKeyUpdate)
	}
	next := nextSecret(c.suite, c.rxSecret)
	if err := SetKeys(c.rc, RX, keys13(c.suite, next, 0)); err != nil {
		c.sendAlert(alertInternalError)
		return fmt.Errorf("ktls: %w: install the next TLS_RX key: %v", ErrKeyUpdate, err)
	}
	c.rxSecret = next
	if body[0] == 1 {
		return c.updateTX(false)
	}
	return nil
}

// updateTX sends a KeyUpdate under the current key and switches TX to the
// next one.
func (c *Conn) updateTX(requestPeer bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.txSecret == nil {
		return fmt.Errorf("ktls: %w: no traffic secret kept for re-keying", ErrKeyUpdate)
	}
	req := byte(0)
	if requestPeer {
		req = 1
	}
	if err := c.sendRecord(recordHandshake, []byte{handshakeKeyUpdate, 0, 0, 1, req}); err != nil {
		return fmt.Errorf("ktls: send KeyUpdate: %w", err)
	}
	next := nextSecret(c.suite, c.txSecret)
	if err := SetKeys(c.rc, TX, keys13(c.suite, next, 0)); err != nil {
		// The peer now expects the next key and we cannot give it: the
		// connection is dead.
		c.tcp.Close()
		return fmt.Errorf("ktls: %w: install the next TLS_TX key: %v", ErrKeyUpdate, err)
	}
	c.txSecret = next
	return nil
}

// UpdateKeys starts a TLS 1.3 KeyUpdate: it sends the KeyUpdate (asking the
// peer to update too if requestPeer) and re-keys TX. Where the kernel
// cannot re-key (Capabilities.Rekey false) it returns ErrKeyUpdate and
// sends nothing.
func (c *Conn) UpdateKeys(requestPeer bool) error {
	if c.state.Version != VersionTLS13 {
		return fmt.Errorf("ktls: KeyUpdate is TLS 1.3 only")
	}
	if caps, err := Probe(); err != nil || !caps.Rekey {
		return fmt.Errorf("ktls: %w: this kernel cannot re-key kTLS (Linux 6.14+ can); nothing was sent", ErrKeyUpdate)
	}
	return c.updateTX(requestPeer)
}

// sendRecord sends one record of type typ through the kernel's TLS_TX.
func (c *Conn) sendRecord(typ byte, data []byte) error {
	var oob [unix.SizeofCmsghdr + 8]byte
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level = unix.SOL_TLS
	h.Type = tlsSetRecordType
	h.SetLen(unix.CmsgLen(1))
	oob[unix.CmsgLen(0)] = typ
	var serr error
	err := c.rc.Write(func(fd uintptr) bool {
		_, serr = unix.SendmsgN(int(fd), data, oob[:unix.CmsgSpace(1)], nil, 0)
		return serr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	return serr
}

// sendAlert sends a fatal alert, best effort: the connection is failing.
func (c *Conn) sendAlert(desc byte) {
	// The deadline first: a Write stuck on a full socket holds wmu.
	c.tcp.SetWriteDeadline(time.Now().Add(time.Second))
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.sentEOF {
		return
	}
	c.sentEOF, c.sentWhat = true, "a fatal "+alertName(desc)+" alert"
	c.sendRecord(recordAlert, []byte{2, desc})
}

// Write sends p as application data; the kernel splits it into records.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.sentEOF {
		return 0, fmt.Errorf("ktls: write after %s was sent: %w", c.sentWhat, net.ErrClosed)
	}
	return c.tcp.Write(p)
}

// CloseWrite sends close_notify and shuts down the sending half of TCP.
func (c *Conn) CloseWrite() error {
	if err := c.closeNotify(); err != nil {
		return err
	}
	return c.tcp.CloseWrite()
}

func (c *Conn) closeNotify() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.sentEOF {
		return nil
	}
	c.sentEOF, c.sentWhat = true, "close_notify"
	if err := c.sendRecord(recordAlert, []byte{1, alertCloseNotify}); err != nil {
		return fmt.Errorf("ktls: send close_notify: %w", err)
	}
	return nil
}

// Close sends close_notify (waiting at most 5 s, as crypto/tls does) and
// closes the socket.
func (c *Conn) Close() error {
	c.tcp.SetWriteDeadline(time.Now().Add(5 * time.Second))
	nerr := c.closeNotify()
	if err := c.tcp.Close(); err != nil {
		return err
	}
	if nerr != nil && !errors.Is(nerr, net.ErrClosed) && !errors.Is(nerr, unix.EPIPE) && !errors.Is(nerr, unix.ECONNRESET) {
		return nerr
	}
	return nil
}

// SyscallConn returns the socket, for splice and sockmap.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

// TCPConn returns the underlying socket. Reading or writing it directly
// bypasses the control-record handling: only the byte path does, through
// splice, which the kernel stops at control records.
func (c *Conn) TCPConn() *net.TCPConn { return c.tcp }

func (c *Conn) LocalAddr() net.Addr                { return c.tcp.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr               { return c.tcp.RemoteAddr() }
func (c *Conn) SetDeadline(t time.Time) error      { return c.tcp.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.tcp.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.tcp.SetWriteDeadline(t) }
