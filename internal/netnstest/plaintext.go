package netnstest

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Plaintext scanner defaults.
const (
	DefaultWindow  = 32
	DefaultSamples = 1024
)

// filterBits sizes PlaintextScanner's prefilter: 2^20 bits (128 KiB) keep
// false hits, each a map lookup, near 1 in 1000 positions for 1024
// samples, so scanning stays a load, a multiply and a bit test per byte.
const filterBits = 20

// PlaintextMatch says where a plaintext window appeared in a stream.
type PlaintextMatch struct {
	PlaintextOffset int   // start of the window in the plaintext
	StreamOffset    int64 // where it appeared in the stream
}

// PlaintextScanner reports whether any of a set of windows sampled from a
// plaintext appears in the bytes written to it, in any chunks: the check
// that a capture of an encrypted connection carries none of the data
// sent. It keeps window-1 bytes of the stream and the samples, never the
// stream, so it can follow a 100 MB transfer as a Capture sink.
//
// The samples are windows of window bytes at evenly spaced offsets,
// including the first and the last window of the plaintext. Use random
// plaintext: a window of it that appears in ciphertext by chance is then
// out of the question, and repeated content does not shrink the sample.
type PlaintextScanner struct {
	window  int
	samples map[uint64][]int // window prefix -> plaintext offsets
	text    []byte           // the sampled windows' source (not copied)
	filter  []uint64
	tail    []byte // the stream's last window-1 bytes
	off     int64  // stream bytes consumed
	found   bool
	match   PlaintextMatch
}

// NewPlaintextScanner samples up to samples windows of window bytes
// (defaults DefaultSamples and DefaultWindow for 0; window at least 8)
// from plaintext, which it keeps and must not change while in use.
func NewPlaintextScanner(plaintext []byte, window, samples int) (*PlaintextScanner, error) {
	if window == 0 {
		window = DefaultWindow
	}
	if samples == 0 {
		samples = DefaultSamples
	}
	if window < 8 {
		return nil, fmt.Errorf("plaintext window of %d bytes: want at least 8", window)
	}
	if len(plaintext) < window {
		return nil, fmt.Errorf("plaintext of %d bytes is shorter than the %d-byte window", len(plaintext), window)
	}
	s := &PlaintextScanner{
		window:  window,
		samples: map[uint64][]int{},
		text:    plaintext,
		filter:  make([]uint64, 1<<filterBits/64),
	}
	last := len(plaintext) - window
	n := min(samples, last+1)
	for i := range n {
		off := 0
		if n > 1 {
			off = int(int64(i) * int64(last) / int64(n-1))
		}
		k := binary.LittleEndian.Uint64(plaintext[off:])
		if dup(s.samples[k], plaintext, off, window) {
			continue
		}
		s.samples[k] = append(s.samples[k], off)
		h := filterHash(k)
		s.filter[h/64] |= 1 << (h % 64)
	}
	return s, nil
}

// dup reports whether the window at off equals one already sampled.
func dup(offs []int, text []byte, off, window int) bool {
	for _, o := range offs {
		if bytes.Equal(text[o:o+window], text[off:off+window]) {
			return true
		}
	}
	return false
}

func filterHash(k uint64) uint64 { return (k * 0x9e3779b97f4a7c15) >> (64 - filterBits) }

// Write scans p. It never fails; once a window is found it stops
// scanning.
func (s *PlaintextScanner) Write(p []byte) (int, error) {
	if s.found || len(p) == 0 {
		s.off += int64(len(p))
		return len(p), nil
	}
	w := s.window
	// Windows starting in the tail of earlier writes.
	if len(s.tail) > 0 {
		joint := append(s.tail[:len(s.tail):len(s.tail)], p[:min(len(p), w-1)]...)
		base := s.off - int64(len(s.tail))
		if m, ok := s.scan(joint, len(s.tail)); ok {
			s.found, s.match = true, PlaintextMatch{m.PlaintextOffset, base + m.StreamOffset}
		}
	}
	if !s.found {
		if m, ok := s.scan(p, len(p)); ok {
			s.found, s.match = true, PlaintextMatch{m.PlaintextOffset, s.off + m.StreamOffset}
		}
	}
	// Keep the last window-1 bytes of tail+p.
	if len(p) >= w-1 {
		s.tail = append(s.tail[:0], p[len(p)-(w-1):]...)
	} else {
		s.tail = append(s.tail, p...)
		if len(s.tail) > w-1 {
			s.tail = s.tail[len(s.tail)-(w-1):]
		}
	}
	s.off += int64(len(p))
	return len(p), nil
}

// scan looks for a sampled window starting at b[i] for i < starts and
// i+window <= len(b); StreamOffset in the result is relative to b.
func (s *PlaintextScanner) scan(b []byte, starts int) (PlaintextMatch, bool) {
	end := min(starts, len(b)-s.window+1)
	for i := 0; i < end; i++ {
		k := binary.LittleEndian.Uint64(b[i:])
		h := filterHash(k)
		if s.filter[h/64]&(1<<(h%64)) == 0 {
			continue
		}
		for _, off := range s.samples[k] {
			if bytes.Equal(b[i:i+s.window], s.text[off:off+s.window]) {
				return PlaintextMatch{PlaintextOffset: off, StreamOffset: int64(i)}, true
			}
		}
	}
	return PlaintextMatch{}, false
}

// Found returns the first match, if a sampled window appeared.
func (s *PlaintextScanner) Found() (PlaintextMatch, bool) { return s.match, s.found }

// Samples returns the number of distinct windows looked for.
func (s *PlaintextScanner) Samples() int {
	n := 0
	for _, offs := range s.samples {
		n += len(offs)
	}
	return n
}

// FindPlaintext reports whether stream contains any of the windows a
// NewPlaintextScanner(plaintext, window, samples) looks for.
func FindPlaintext(stream, plaintext []byte, window, samples int) (PlaintextMatch, bool, error) {
	s, err := NewPlaintextScanner(plaintext, window, samples)
	if err != nil {
		return PlaintextMatch{}, false, err
	}
	s.Write(stream)
	m, ok := s.Found()
	return m, ok, nil
}
