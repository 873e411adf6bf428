package netnstest

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestPlaintextScanner(t *testing.T) {
	plain := randomBytes(1, 1<<20)
	noise := randomBytes(2, 1<<20)
	window := 32
	s, err := NewPlaintextScanner(plain, window, 512)
	if err != nil {
		t.Fatal(err)
	}
	if s.Samples() != 512 {
		t.Fatalf("Samples = %d, want 512", s.Samples())
	}
	// The last sample is the plaintext's last window.
	last := plain[len(plain)-window:]
	tests := []struct {
		name   string
		stream []byte
		want   bool
		at     int64
	}{
		{"random bytes", noise, false, 0},
		{"the plaintext itself", plain, true, 0},
		{"last window inside noise", cat(noise[:1000], last, noise[:10]), true, 1000},
		{"one byte short of a window", cat(noise[:1000], last[1:], noise[:10]), false, 0},
		{"first window at the end", cat(noise[:77], plain[:window]), true, 77},
		{"empty stream", nil, false, 0},
	}
	for _, tt := range tests {
		for _, chunk := range []int{1, 7, 31, 32, 33, 4096, 1 << 21} {
			s, _ := NewPlaintextScanner(plain, window, 512)
			for p := tt.stream; len(p) > 0; p = p[min(chunk, len(p)):] {
				s.Write(p[:min(chunk, len(p))])
			}
			m, ok := s.Found()
			if ok != tt.want || (ok && m.StreamOffset != tt.at) {
				t.Errorf("%s, chunks of %d: Found = %+v, %v; want found %v at %d", tt.name, chunk, m, ok, tt.want, tt.at)
			}
			if ok && !bytes.Equal(tt.stream[m.StreamOffset:m.StreamOffset+int64(window)], plain[m.PlaintextOffset:m.PlaintextOffset+window]) {
				t.Errorf("%s: match %+v is not the plaintext", tt.name, m)
			}
		}
	}
}

func TestPlaintextScannerRepeated(t *testing.T) {
	// All windows of a constant plaintext are one sample.
	s, err := NewPlaintextScanner(bytes.Repeat([]byte{'A'}, 4096), 16, 100)
	if err != nil {
		t.Fatal(err)
	}
	if s.Samples() != 1 {
		t.Errorf("Samples = %d, want 1", s.Samples())
	}
	if _, ok, _ := FindPlaintext([]byte("xx"+string(bytes.Repeat([]byte{'A'}, 16))), bytes.Repeat([]byte{'A'}, 4096), 16, 100); !ok {
		t.Error("FindPlaintext missed the window")
	}
}

func TestPlaintextScannerErrors(t *testing.T) {
	if _, err := NewPlaintextScanner(make([]byte, 100), 4, 1); err == nil {
		t.Error("window 4: no error")
	}
	if _, err := NewPlaintextScanner(make([]byte, 10), 32, 1); err == nil {
		t.Error("plaintext shorter than the window: no error")
	}
}

func BenchmarkPlaintextScanner(b *testing.B) {
	s, _ := NewPlaintextScanner(randomBytes(1, 1<<20), 0, 0)
	stream := randomBytes(2, 1<<20)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		s.Write(stream)
	}
}
