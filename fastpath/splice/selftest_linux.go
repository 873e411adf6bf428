package splice

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"time"

	"github.com/fibmesh/fibmesh/fastpath/ktls"
	"github.com/fibmesh/fibmesh/internal/loopback"
)

// selfTestTimeout bounds the whole self-test: a kernel that loses bytes
// must fail it, not hang it.
const selfTestTimeout = 20 * time.Second

// SelfTest proves ModeSockmap on the running kernel, end to end, over
// loopback TCP: a plaintext pair stands for the application, a second pair
// carries TLS 1.3 with kTLS (random AES-128-GCM keys) on the joined end and
// a TLS record layer in Go on the far end, which sees exactly what kTLS puts
// on the wire. It pushes known bytes both ways through a joined pair and
// checks that
//
//   - the application receives the far end's plaintext intact, with the
//     bulk records redirected by the verdict, not passed to userspace;
//   - what reaches the far end is TLS records that decrypt, with the keys
//     and TLS 1.3 nonces (IV XOR sequence number) and additional data (the
//     record header), to the application's bytes: ciphertext on the wire;
//   - close_notify from the far end reaches the application as EOF, and the
//     application's EOF reaches the far end as close_notify then FIN.
//
// It returns nil when all of that holds, or an *UnprovenError (errors.Is
// ErrSockmapUnproven) naming the step that failed, with Limit set where the
// kernel refuses the path rather than breaking it: no kTLS (step "ktls",
// the error also matches ktls.ErrUnsupported), no kTLS socket allowed in a
// sockhash ("ktls-install", Linux 6.1), or records the verdict cannot cut
// so they go through userspace ("in-kernel", reported after every other
// check passed, Linux 6.12). It takes well under a second on real
// hardware, at most 20 s where the kernel loses bytes.
func (s *Sockmap) SelfTest() error {
	return s.selfTest(1<<20, 1<<20)
}

func (s *Sockmap) selfTest(toPlain, toTLS int) error {
	fail := func(step string, err error) error { return &UnprovenError{Step: step, Err: err} }
	limit := func(step string, err error) error { return &UnprovenError{Step: step, Limit: true, Err: err} }
	if err := probeKTLS(); err != nil {
		return limit("ktls", fmt.Errorf("kTLS is unavailable on this kernel, so there is no sockmap-with-kTLS path to prove: %w", err))
	}
	deadline := time.Now().Add(selfTestTimeout)
	appC, appS, err := loopback.TCPPair()
	if err != nil {
		return fail("sockets", err)
	}
	defer appC.Close()
	wireS, wireC, err := loopback.TCPPair()
	if err != nil {
		appS.Close()
		return fail("sockets", err)
	}
	defer wireC.Close()
	appC.SetDeadline(deadline)
	wireC.SetDeadline(deadline)

	pr, err := s.Prepare(wireS)
	if err != nil {
		appS.Close()
		wireS.Close()
		return fail("prepare", err)
	}
	tx, rx := randomKeys(), randomKeys()
	kc, err := ktls.NewConn(wireS, tx, rx, nil, nil)
	if err != nil {
		appS.Close()
		wireS.Close()
		if errors.Is(err, ktls.ErrUnsupported) {
			// The same keys install on a socket outside a sockhash (the
			// "ktls" step proved the ULP; fastpath/ktls's tests prove
			// the keys): it is the sockhash the kernel objects to. A
			// socket with the ULP cannot join a sockhash either, so
			// there is no order that works.
			return limit("ktls-install", fmt.Errorf("the kernel refuses kTLS keys on a socket in a sockhash, and refuses a kTLS socket into one, so it cannot carry kTLS sockets: %w", err))
		}
		return fail("ktls-install", err)
	}
	farRX, err := newRecordLayer(tx.Key, tx.IV) // decrypts what kTLS sends
	if err != nil {
		return fail("ktls-install", err)
	}
	farTX, err := newRecordLayer(rx.Key, rx.IV) // encrypts what kTLS receives
	if err != nil {
		return fail("ktls-install", err)
	}
	stats0, err := s.Stats()
	if err != nil {
		return fail("join", err)
	}
	pair, err := Join(appS, kc, Options{Mode: ModeSockmap, Prepared: pr})
	if err != nil {
		return fail("join", err)
	}
	defer pair.Close()

	// Both directions at once, as in real traffic.
	a, b := pattern(1, toPlain), pattern(2, toTLS)
	sizes := recordSizes(toPlain)
	errc := make(chan error, 3)
	go func() { // far end: records to kTLS
		var buf []byte
		off := 0
		for _, n := range sizes {
			buf = append(buf, farTX.seal(recordApplicationData, a[off:off+n])...)
			off += n
		}
		_, err := wireC.Write(buf)
		errc <- wrapStep("tls-to-plain", "far end write", err)
	}()
	go func() { // application: plaintext to kTLS
		_, err := appC.Write(b)
		errc <- wrapStep("plain-to-tls", "application write", err)
	}()
	go func() { // far end: decrypt what kTLS sent
		var got []byte
		for len(got) < len(b) {
			typ, data, err := farRX.open(wireC)
			if err != nil {
				errc <- fail("plain-to-tls", fmt.Errorf("far end after %d of %d bytes: %w", len(got), len(b), err))
				return
			}
			if typ != recordApplicationData {
				errc <- fail("plain-to-tls", fmt.Errorf("far end got a record of type %d after %d bytes", typ, len(got)))
				return
			}
			got = append(got, data...)
		}
		if !bytes.Equal(got, b) {
			errc <- fail("plain-to-tls", fmt.Errorf("the far end decrypted %d bytes that differ from what the application sent (first difference at %d)", len(got), firstDiff(got, b)))
			return
		}
		errc <- nil
	}()
	got := make([]byte, len(a))
	if _, err := io.ReadFull(appC, got); err != nil {
		return fail("tls-to-plain", fmt.Errorf("application read: %w", err))
	}
	if !bytes.Equal(got, a) {
		return fail("tls-to-plain", fmt.Errorf("the application got %d bytes that differ from what the far end sealed (first difference at %d)", len(got), firstDiff(got, a)))
	}
	for range 3 {
		if err := <-errc; err != nil {
			return err
		}
	}

	// Bulk in the kernel: every application byte was redirected, and so
	// was every byte of the far end's full-size records.
	e := pair.eng.(*sockmapEngine)
	c := pair.Counters()
	bulk := 0
	for _, n := range sizes {
		if n >= 4096 {
			bulk += n
		}
	}
	e.lastMu.Lock()
	redirected := e.last
	e.lastMu.Unlock()
	if c.TLSToPlain != uint64(len(a)) || c.PlainToTLS != uint64(len(b)) {
		return fail("counters", fmt.Errorf("counters %+v, want %d to plain and %d to tls", c, len(a), len(b)))
	}
	if redirected.PlainToTLS != uint64(len(b)) {
		return fail("in-kernel", fmt.Errorf("the verdict redirected %d of the application's %d bytes", redirected.PlainToTLS, len(b)))
	}
	// Bytes that went through userspace arrived intact, so the rest of
	// the path is still worth proving; the shortfall is reported last.
	var inKernel error
	if redirected.TLSToPlain < uint64(bulk) {
		short := fmt.Errorf("the verdict redirected %d bytes of the far end's records, less than the %d bytes in its records of 4 KiB and more: the rest went through userspace (intact)", redirected.TLSToPlain, bulk)
		stats1, err := s.Stats()
		if err != nil {
			stats1 = nil // no deltas
		}
		if n := statDelta(stats0, stats1, "pass_tls_tail"); n > 0 {
			inKernel = limit("in-kernel", fmt.Errorf("%w; the kernel's bpf_skb_change_tail refused to cut %d records to their plaintext (it makes no skb longer than SKB_MAX_ALLOC, about 16 KB, so no full 16 KiB record, nor shorter than the header offsets kTLS copies, a few hundred bytes), and %d records after them followed through userspace to keep the order", short, n, statDelta(stats0, stats1, "pass_hold")))
		} else {
			inKernel = fail("in-kernel", short)
		}
	}

	// close_notify from the far end: the application sees EOF.
	if _, err := wireC.Write(farTX.seal(recordAlert, []byte{1, 0})); err != nil {
		return fail("close-notify-from-peer", err)
	}
	var one [1]byte
	if n, err := appC.Read(one[:]); n != 0 || err != io.EOF {
		return fail("close-notify-from-peer", fmt.Errorf("application read after close_notify: %d bytes, %v; want EOF", n, err))
	}
	// The application's EOF: the far end sees close_notify, then FIN.
	if err := appC.CloseWrite(); err != nil {
		return fail("close-notify-to-peer", err)
	}
	typ, data, err := farRX.open(wireC)
	if err != nil {
		return fail("close-notify-to-peer", fmt.Errorf("far end: %w", err))
	}
	if typ != recordAlert || len(data) != 2 || data[1] != 0 {
		return fail("close-notify-to-peer", fmt.Errorf("far end got record type %d % x, want a close_notify alert", typ, data))
	}
	if n, err := wireC.Read(one[:]); n != 0 || err != io.EOF {
		return fail("close-notify-to-peer", fmt.Errorf("far end read after close_notify: %d bytes, %v; want EOF", n, err))
	}
	if err := pair.Wait(); err != nil {
		return fail("end", err)
	}
	return inKernel
}

// statDelta is how many messages the verdict counted under reason between
// the Stats readings before and after.
func statDelta(before, after []Stat, reason string) uint64 {
	for i := range after {
		if after[i].Reason == reason && i < len(before) {
			return after[i].Msgs - before[i].Msgs
		}
	}
	return 0
}

func wrapStep(step, what string, err error) error {
	if err == nil {
		return nil
	}
	return &UnprovenError{Step: step, Err: fmt.Errorf("%s: %w", what, err)}
}

// probeKTLS checks that the kernel takes the tls ULP on a TCP socket, as
// ktls.Probe found it (once per process). A kernel without it is an
// *ktls.UnsupportedError, which matches ktls.ErrUnsupported.
func probeKTLS() error {
	caps, err := ktls.Probe()
	if err == nil && !caps.ULP {
		err = caps.Supports(ktls.VersionTLS13, ktls.CipherAESGCM128, ktls.TX)
	}
	return err
}

func randomKeys() ktls.Keys {
	k := ktls.Keys{Version: ktls.VersionTLS13, Cipher: ktls.CipherAESGCM128, Key: make([]byte, 16), IV: make([]byte, 12)}
	rand.Read(k.Key)
	rand.Read(k.IV)
	return k
}

// pattern is n reproducible pseudo-random bytes, different per seed, so
// a path that loses, repeats or reorders bytes cannot pass.
func pattern(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := mrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 'f', 'i', 'b', 'm', 'e', 's', 'h'})
	r.Read(b)
	return b
}

// recordSizes splits n bytes into records: small ones of every framing
// edge first (1 byte, under and over a cache line, a page), then full
// 16 KiB records.
func recordSizes(n int) []int {
	var out []int
	for _, s := range []int{1, 2, 63, 200, 1000, 4096, 4097} {
		if n < s {
			break
		}
		out = append(out, s)
		n -= s
	}
	for n > 0 {
		s := min(n, maxRecord)
		out = append(out, s)
		n -= s
	}
	return out
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
