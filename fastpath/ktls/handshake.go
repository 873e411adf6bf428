package ktls

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
)

// TLSConn is a crypto/tls connection prepared for Offload. Use it like the
// embedded *tls.Conn until the connection needs no more userspace work,
// then call Offload. Don't read or write it concurrently with Offload.
type TLSConn struct {
	*tls.Conn
	raw  *recordConn
	klog *keyLog
	// records in each direction when the handshake returned (TLS 1.3:
	// application records are numbered from there).
	hsRead, hsWritten uint64
	offloaded         bool
	userspace         atomic.Bool
}

// KeepInUserspace gives up the option to Offload, for a connection that
// will stay in userspace (the kernel has no kTLS, or the caller decided):
// reads are no longer cut at TLS record boundaries and records are no
// longer counted, which saves a system call per record. Offload then
// returns an *UnsupportedError. It must not be called concurrently with
// Offload.
func (c *TLSConn) KeepInUserspace() {
	c.userspace.Store(true)
	c.raw.passthrough.Store(true)
}

// Client runs a TLS client handshake over raw (a TCP connection) and
// returns the connection ready for Offload. cfg is cloned; its KeyLogWriter,
// if any, still receives the key log.
func Client(ctx context.Context, raw net.Conn, cfg *tls.Config) (*TLSConn, error) {
	return handshake(ctx, raw, cfg, true, false)
}

// Server runs a TLS server handshake over raw. cfg is cloned with session
// tickets disabled: a NewSessionTicket sent under the application key
// would move the sequence numbers from under the kernel.
func Server(ctx context.Context, raw net.Conn, cfg *tls.Config) (*TLSConn, error) {
	return handshake(ctx, raw, cfg, false, false)
}

// ServerUserspace runs a TLS server handshake for a connection that will
// stay in userspace (the kernel has no kTLS): crypto/tls may issue
// session tickets, so clients can resume, and the connection is returned
// after KeepInUserspace (Offload refuses).
func ServerUserspace(ctx context.Context, raw net.Conn, cfg *tls.Config) (*TLSConn, error) {
	tc, err := handshake(ctx, raw, cfg, false, true)
	if err != nil {
		return nil, err
	}
	tc.KeepInUserspace()
	return tc, nil
}

func handshake(ctx context.Context, raw net.Conn, cfg *tls.Config, client, tickets bool) (*TLSConn, error) {
	if cfg == nil {
		return nil, errors.New("ktls: nil tls.Config")
	}
	kl := &keyLog{next: cfg.KeyLogWriter}
	cfg = cfg.Clone()
	cfg.KeyLogWriter = kl
	rc := &recordConn{Conn: raw, isClient: client}
	var tc *tls.Conn
	if client {
		// A renegotiation would move the TLS 1.2 keys and the CCS count
		// after the first handshake's key log line.
		cfg.Renegotiation = tls.RenegotiateNever
		tc = tls.Client(rc, cfg)
	} else {
		if !tickets {
			cfg.SessionTicketsDisabled = true
		}
		if get := cfg.GetConfigForClient; get != nil {
			// crypto/tls swaps in the config this returns: impose the
			// same two settings on it, or the key log would be empty
			// and a ticket could move the sequence numbers.
			cfg.GetConfigForClient = func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
				c, err := get(chi)
				if err != nil || c == nil {
					return c, err
				}
				c = c.Clone()
				if !tickets {
					c.SessionTicketsDisabled = true
				}
				c.KeyLogWriter = &keyLog{next: c.KeyLogWriter, into: kl}
				return c, nil
			}
		}
		tc = tls.Server(rc, cfg)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	r, _, w, _, _ := rc.counts()
	return &TLSConn{Conn: tc, raw: rc, klog: kl, hsRead: r, hsWritten: w}, nil
}

// keys computes both directions' kernel state from the handshake and the
// records counted since. secrets are the TLS 1.3 traffic secrets (nil for
// TLS 1.2).
func (c *TLSConn) keys() (tx, rx Keys, txSecret, rxSecret []byte, err error) {
	st := c.ConnectionState()
	s, ok := suiteOf(st.CipherSuite)
	if !ok {
		return tx, rx, nil, nil, &UnsupportedError{Version: Version(st.Version),
			Reason: fmt.Sprintf("cipher suite %s has no kTLS cipher (want AES-GCM or ChaCha20-Poly1305)", tls.CipherSuiteName(st.CipherSuite))}
	}
	r, rCCS, w, wCCS, clean := c.raw.counts()
	if !clean {
		return tx, rx, nil, nil, errors.New("ktls: a record is half read or half written (a Read or Write through the tls.Conn failed or timed out mid-record, or runs concurrently with Offload): the connection cannot be offloaded")
	}
	switch st.Version {
	case tls.VersionTLS13:
		cs, ss, err := c.klog.secrets13()
		if err != nil {
			return tx, rx, nil, nil, err
		}
		txSecret, rxSecret = cs, ss
		if !c.raw.isClient {
			txSecret, rxSecret = ss, cs
		}
		tx = keys13(s, txSecret, w-c.hsWritten)
		rx = keys13(s, rxSecret, r-c.hsRead)
		return tx, rx, txSecret, rxSecret, nil
	case tls.VersionTLS12:
		cr, master, err := c.klog.master12()
		if err != nil {
			return tx, rx, nil, nil, err
		}
		sr, err := c.raw.serverRandom()
		if err != nil {
			return tx, rx, nil, nil, err
		}
		if rCCS == 0 || wCCS == 0 {
			return tx, rx, nil, nil, errors.New("ktls: TLS 1.2 handshake without a ChangeCipherSpec each way")
		}
		ck, sk := keys12(s, master, cr, sr)
		if !c.raw.isClient {
			ck, sk = sk, ck
		}
		// The Finished message is record 0 under the new keys.
		return ck.withSeq(w - wCCS), sk.withSeq(r - rCCS), nil, nil, nil
	}
	return tx, rx, nil, nil, &UnsupportedError{Version: Version(st.Version), Reason: "kTLS takes TLS 1.2 and 1.3 only"}
}

// Offload moves the record layer into the kernel and returns the kTLS
// connection; the TLSConn must not be used afterwards (its Close is then a
// no-op on the socket, which the returned Conn owns).
//
// If the kernel cannot take this connection's version, cipher or a
// direction (see Probe), or refuses the tls ULP on this socket (it is no
// longer established), Offload returns an *UnsupportedError and the
// TLSConn stays usable in userspace.
func (c *TLSConn) Offload() (*Conn, error) {
	if c.offloaded {
		return nil, errors.New("ktls: Offload called twice")
	}
	if c.userspace.Load() {
		return nil, &UnsupportedError{Reason: "KeepInUserspace was called: the record counts the kernel needs were not kept"}
	}
	tcp, ok := c.raw.Conn.(*net.TCPConn)
	if !ok {
		return nil, &UnsupportedError{Reason: fmt.Sprintf("the transport is %T, not *net.TCPConn", c.raw.Conn)}
	}
	tx, rx, txSecret, rxSecret, err := c.keys()
	if err != nil {
		return nil, err
	}
	caps, err := Probe()
	if err != nil {
		return nil, &UnsupportedError{Version: tx.Version, Cipher: tx.Cipher, Reason: "this socket refused the tls ULP: " + err.Error()}
	}
	for _, d := range []Direction{TX, RX} {
		if err := caps.Supports(tx.Version, tx.Cipher, d); err != nil {
			return nil, err
		}
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("ktls: %w", err)
	}
	// The ULP alone changes nothing on the wire (without keys the socket
	// passes bytes as before), so on failure the TLSConn stays usable:
	// an UnsupportedError. The kernel refuses it on a socket that is no
	// longer ESTABLISHED (ENOTCONN: the peer's FIN arrived), which a
	// short connection meets.
	if err := EnableULP(rc); err != nil {
		return nil, &UnsupportedError{Version: tx.Version, Cipher: tx.Cipher, Reason: "this socket refused the tls ULP: " + err.Error()}
	}
	pending, eof, perr := c.detach()
	if perr != nil {
		tcp.Close()
		return nil, fmt.Errorf("ktls: the connection had already failed in crypto/tls (socket closed): %w", perr)
	}
	kc, err := install(tcp, rc, tx, rx, txSecret, rxSecret)
	if err != nil {
		// Detached: crypto/tls cannot go on, and a half-installed
		// socket must not carry anything. Not ErrUnsupported: there is
		// nothing to fall back to.
		tcp.Close()
		return nil, fmt.Errorf("ktls: install %v %v after the probe accepted it (socket closed): %v", tx.Version, tx.Cipher, err)
	}
	kc.pending = pending
	if eof {
		kc.rerr = io.EOF
	}
	return kc, nil
}

// detach stops crypto/tls from touching the socket again and takes back
// what it decrypted that the caller has not read: with the socket
// detached, tls.Conn.Read returns buffered plaintext and then a temporary
// error instead of reading. An error crypto/tls had already latched is
// returned, except io.EOF (the peer's close_notify was read), which the
// kTLS Conn keeps returning.
func (c *TLSConn) detach() (pending []byte, eof bool, err error) {
	c.offloaded = true
	c.raw.detach()
	buf := make([]byte, 16<<10)
	for {
		n, err := c.Conn.Read(buf)
		pending = append(pending, buf[:n]...)
		switch {
		case err == nil && n > 0:
			continue
		case err == nil || errors.Is(err, errDetached):
			return pending, false, nil
		case errors.Is(err, io.EOF):
			return pending, true, nil
		}
		return pending, false, err
	}
}

// keyLog keeps the key log lines of one connection (NSS key log format).
type keyLog struct {
	next io.Writer
	into *keyLog // where lines go instead (a GetConfigForClient config's log)
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (k *keyLog) Write(p []byte) (int, error) {
	dst := k
	if k.into != nil {
		dst = k.into
	}
	dst.mu.Lock()
	dst.buf.Write(p)
	dst.mu.Unlock()
	if k.next != nil {
		return k.next.Write(p)
	}
	return len(p), nil
}

// lookup returns the secret of the first line with label, and its client
// random.
func (k *keyLog) lookup(label string) (random, secret []byte, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	sc := bufio.NewScanner(bytes.NewReader(k.buf.Bytes()))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != label {
			continue
		}
		r, err1 := hex.DecodeString(f[1])
		s, err2 := hex.DecodeString(f[2])
		if err := errors.Join(err1, err2); err != nil {
			return nil, nil, fmt.Errorf("ktls: key log line %s: %w", label, err)
		}
		return r, s, nil
	}
	return nil, nil, fmt.Errorf("ktls: the handshake logged no %s", label)
}

func (k *keyLog) secrets13() (client, server []byte, err error) {
	_, client, err1 := k.lookup("CLIENT_TRAFFIC_SECRET_0")
	_, server, err2 := k.lookup("SERVER_TRAFFIC_SECRET_0")
	return client, server, errors.Join(err1, err2)
}

func (k *keyLog) master12() (clientRandom, master []byte, err error) {
	return k.lookup("CLIENT_RANDOM")
}
