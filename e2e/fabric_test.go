package e2e

import (
	"io"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"

	"github.com/fibmesh/fibmesh/internal/netnstest"
	"github.com/fibmesh/fibmesh/lab"
	"github.com/fibmesh/fibmesh/slowpath"
)

// fabricWatch captures the lab's fabric on node2's link: every stream to
// or from the tunnel port must be TLS records only, and no stream may
// carry a window of the test's payloads in clear.
type fabricWatch struct {
	capt     *netnstest.Capture
	mu       sync.Mutex
	checkers map[string]*netnstest.TLSRecordChecker
	scanners []*netnstest.PlaintextScanner
}

// watchFabric starts the capture in the lab's fabric namespace; texts
// says which payloads a stream src → dst must not carry in clear.
func watchFabric(t *testing.T, fabricNetns string, texts func(src, dst netip.AddrPort) [][]byte) *fabricWatch {
	t.Helper()
	w := &fabricWatch{checkers: map[string]*netnstest.TLSRecordChecker{}}
	fabric := netnstest.Existing(t, filepath.Join(lab.NetnsDir, fabricNetns), "n2")
	w.capt = fabric.Capture(t, netnstest.CaptureConfig{MaxBytes: -1, Sink: func(src, dst netip.AddrPort) io.Writer {
		w.mu.Lock()
		defer w.mu.Unlock()
		var ws []io.Writer
		for _, p := range texts(src, dst) {
			sc, err := netnstest.NewPlaintextScanner(p, netnstest.DefaultWindow, 256)
			if err != nil {
				panic(err)
			}
			w.scanners = append(w.scanners, sc)
			ws = append(ws, sc)
		}
		if src.Port() == slowpath.TunnelPort || dst.Port() == slowpath.TunnelPort {
			c := &netnstest.TLSRecordChecker{}
			w.checkers[src.String()+">"+dst.String()] = c
			ws = append(ws, c)
		}
		return io.MultiWriter(ws...)
	}})
	return w
}

// stop ends the capture and reports plaintext of a payload and tunnel
// streams that are not TLS records (unless frames were dropped: a stream
// with a gap loses its record framing). It returns the TLS records
// counted, the tunnel streams seen and the frames the capture dropped.
func (w *fabricWatch) stop(t *testing.T) (records int64, streams, dropped int) {
	t.Helper()
	res, err := w.capt.Stop()
	if err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, sc := range w.scanners {
		if m, found := sc.Found(); found {
			t.Errorf("plaintext of the payload on the fabric: %+v", m)
		}
	}
	for k, ch := range w.checkers {
		if err := ch.Err(); err != nil && res.Dropped == 0 {
			t.Errorf("tunnel stream %s is not TLS records only: %v", k, err)
		}
		records += ch.Records()
	}
	return records, len(w.checkers), res.Dropped
}
