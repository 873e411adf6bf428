package resilience

import (
	"regexp"
	"sync"
	"testing"
)

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestRequestID(t *testing.T) {
	seen := make(map[string]bool)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 5000 {
				id := RequestID()
				if len(id) != RequestIDLen || !uuidV4.MatchString(id) {
					t.Errorf("RequestID() = %q, not a version 4 UUID", id)
					return
				}
				mu.Lock()
				if seen[id] {
					t.Errorf("RequestID() repeated %q", id)
				}
				seen[id] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()

	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(1000, func() { buf = AppendRequestID(buf[:0]) }); n != 0 {
		t.Errorf("AppendRequestID allocates %v times, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() { _ = RequestID() }); n != 1 {
		t.Errorf("RequestID allocates %v times, want 1 (the string)", n)
	}
	if got := string(AppendRequestID([]byte("id="))); !uuidV4.MatchString(got[3:]) || got[:3] != "id=" {
		t.Errorf("AppendRequestID did not append: %q", got)
	}
}

func TestXFCC(t *testing.T) {
	// sha256("abc"), FIPS 180-2's test vector.
	const abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	tests := []struct {
		name, by, uri string
		der           []byte
		want          string
	}{
		{
			name: "istio",
			by:   "spiffe://cluster.local/ns/default/sa/reviews",
			uri:  "spiffe://cluster.local/ns/default/sa/frontend",
			der:  []byte("abc"),
			want: `By=spiffe://cluster.local/ns/default/sa/reviews;Hash=` + abc + `;Subject="";URI=spiffe://cluster.local/ns/default/sa/frontend`,
		},
		{
			name: "empty sha256",
			by:   "spiffe://td/a", uri: "spiffe://td/b",
			want: `By=spiffe://td/a;Hash=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855;Subject="";URI=spiffe://td/b`,
		},
		{
			name: "separators are quoted",
			by:   `a;b`, uri: `x="y" z`,
			der:  []byte("abc"),
			want: `By="a;b";Hash=` + abc + `;Subject="";URI="x=\"y\" z"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := XFCC(tt.by, tt.uri, tt.der); got != tt.want {
				t.Errorf("XFCC() =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestXFCCAppend(t *testing.T) {
	tests := []struct{ existing, element, want string }{
		{"", "By=a", "By=a"},
		{"By=x;URI=y", "By=a", "By=x;URI=y,By=a"},
	}
	for _, tt := range tests {
		if got := XFCCAppend(tt.existing, tt.element); got != tt.want {
			t.Errorf("XFCCAppend(%q, %q) = %q, want %q", tt.existing, tt.element, got, tt.want)
		}
	}
}

func BenchmarkRequestID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = RequestID()
	}
}

func BenchmarkRequestIDParallel(b *testing.B) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 0, RequestIDLen)
		for pb.Next() {
			buf = AppendRequestID(buf[:0])
		}
	})
}

func BenchmarkXFCC(b *testing.B) {
	der := make([]byte, 600) // a typical EC leaf
	b.ReportAllocs()
	for b.Loop() {
		_ = XFCC("spiffe://cluster.local/ns/default/sa/reviews", "spiffe://cluster.local/ns/default/sa/frontend", der)
	}
}
