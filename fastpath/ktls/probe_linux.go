package ktls

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/internal/loopback"
)

var (
	probeMu   sync.Mutex
	probeCaps *Capabilities
)

// Probe returns the kernel's capabilities, probed once per process. A
// failed probe (no loopback, out of file descriptors) is not remembered:
// the next call tries again.
func Probe() (*Capabilities, error) {
	probeMu.Lock()
	defer probeMu.Unlock()
	if probeCaps != nil {
		return probeCaps, nil
	}
	caps, err := ProbeNow()
	if err != nil {
		return nil, err
	}
	probeCaps = caps
	return caps, nil
}

// ProbeNow probes the kernel again. It needs a working loopback interface
// in the calling thread's network namespace. The error is only for a
// failed probe (no loopback); a kernel without kTLS is a Capabilities with
// ULP false.
func ProbeNow() (*Capabilities, error) {
	caps := &Capabilities{}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		caps.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("ktls: probe: listen on loopback: %w", err)
	}
	defer ln.Close()

	// The ULP alone first: it tells "no kTLS at all" from "no such cipher".
	a, b, err := loopback.Pair(ln)
	if err != nil {
		return nil, fmt.Errorf("ktls: probe: %w", err)
	}
	ra, _ := a.SyscallConn()
	err = EnableULP(ra)
	a.Close()
	b.Close()
	caps.AvailableULPs = availableULPs()
	caps.Stat = tlsStat()
	if err != nil {
		// The reason alone: Supports wraps it in an *UnsupportedError
		// naming the suite, which would otherwise say "unsupported" twice.
		caps.ULPError = err.Error()
		if ue := (*UnsupportedError)(nil); errors.As(err, &ue) {
			caps.ULPError = ue.Reason
		}
		for _, v := range []Version{VersionTLS13, VersionTLS12} {
			for _, c := range Ciphers {
				caps.Suites = append(caps.Suites, SuiteSupport{Version: v, Cipher: c, Reason: caps.ULPError})
			}
		}
		return caps, nil
	}
	caps.ULP = true
	for _, v := range []Version{VersionTLS13, VersionTLS12} {
		for _, c := range Ciphers {
			s, err := probeSuite(ln, v, c)
			if err != nil {
				return nil, fmt.Errorf("ktls: probe %v %v: %w", v, c, err)
			}
			caps.Suites = append(caps.Suites, s)
		}
	}
	caps.Rekey = probeRekey(ln)
	return caps, nil
}

func randomKeys(v Version, c Cipher) Keys {
	k := Keys{Version: v, Cipher: c, Key: make([]byte, c.keyLen()), IV: make([]byte, 12)}
	rand.Read(k.Key)
	rand.Read(k.IV)
	return k
}

// probeSuite installs v/c both ways on a fresh pair and moves a record
// each way. An error is for the probe itself (loopback broken).
func probeSuite(ln net.Listener, v Version, c Cipher) (SuiteSupport, error) {
	s := SuiteSupport{Version: v, Cipher: c}
	a, b, err := loopback.Pair(ln)
	if err != nil {
		return s, err
	}
	defer a.Close()
	defer b.Close()
	ra, _ := a.SyscallConn()
	rb, _ := b.SyscallConn()
	if err := errors.Join(EnableULP(ra), EnableULP(rb)); err != nil {
		s.Reason = err.Error()
		return s, nil
	}
	ab, ba := randomKeys(v, c), randomKeys(v, c)
	if err := SetKeys(ra, TX, ab); err != nil {
		s.Reason = err.Error()
		return s, nil
	}
	if err := SetKeys(rb, RX, ab); err != nil {
		s.Reason = err.Error()
		return s, nil
	}
	if err := roundTrip(a, b); err != nil {
		s.Reason = "TX then RX installed but a record did not arrive: " + err.Error()
		return s, nil
	}
	s.TX, s.RX = true, true
	// The other way on the same pair: a socket takes TX and RX once each.
	if err := SetKeys(rb, TX, ba); err != nil {
		s.TX, s.Reason = false, err.Error()
		return s, nil
	}
	if err := SetKeys(ra, RX, ba); err != nil {
		s.RX, s.Reason = false, err.Error()
		return s, nil
	}
	if err := roundTrip(b, a); err != nil {
		s.TX, s.RX = false, false
		s.Reason = "both directions installed but a record did not arrive: " + err.Error()
	}
	return s, nil
}

// roundTrip sends a short record from a and reads it on b through kTLS.
func roundTrip(a, b *net.TCPConn) error {
	msg := []byte("fibmesh ktls probe")
	if _, err := a.Write(msg); err != nil {
		return err
	}
	rb, _ := b.SyscallConn()
	kc := &Conn{tcp: b, rc: rb}
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer b.SetReadDeadline(time.Time{})
	got := make([]byte, 0, len(msg))
	buf := make([]byte, 64)
	for len(got) < len(msg) {
		n, typ, err := kc.recvRecord(buf)
		if err != nil {
			return err
		}
		if typ != recordApplicationData {
			return fmt.Errorf("got record type %d, want application_data", typ)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("got %q, want %q", got, msg)
	}
	return nil
}

// probeRekey reports whether a second TLS_TX is accepted.
func probeRekey(ln net.Listener) bool {
	a, b, err := loopback.Pair(ln)
	if err != nil {
		return false
	}
	defer a.Close()
	defer b.Close()
	ra, _ := a.SyscallConn()
	if EnableULP(ra) != nil {
		return false
	}
	k := randomKeys(VersionTLS13, CipherAESGCM128)
	if SetKeys(ra, TX, k) != nil {
		return false
	}
	k2 := randomKeys(VersionTLS13, CipherAESGCM128)
	return SetKeys(ra, TX, k2) == nil
}

func availableULPs() []string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_ulp")
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}

// tlsStat parses /proc/net/tls_stat ("TlsCurrTxSw   1" lines).
func tlsStat() map[string]uint64 {
	b, err := os.ReadFile("/proc/net/tls_stat")
	if err != nil {
		return nil
	}
	return parseTLSStat(b)
}

func parseTLSStat(b []byte) map[string]uint64 {
	m := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		if v, err := strconv.ParseUint(f[1], 10, 64); err == nil {
			m[f[0]] = v
		}
	}
	return m
}
