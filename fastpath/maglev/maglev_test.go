package maglev

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// backends returns n equal-weight backends with address-like Names.
func backends(n int) []Backend {
	bs := make([]Backend, n)
	for i := range bs {
		bs[i] = Backend{Name: fmt.Sprintf("10.1.%d.%d:8080", i/256, i%256)}
	}
	return bs
}

func weighted(ws ...uint32) []Backend {
	bs := make([]Backend, len(ws))
	for i, w := range ws {
		bs[i] = Backend{Name: fmt.Sprintf("10.2.0.%d:53", i+1), Weight: w}
	}
	return bs
}

func mustBuild(t testing.TB, bs []Backend, m uint32) []int {
	t.Helper()
	table, err := Build(bs, m)
	if err != nil {
		t.Fatalf("Build(%d backends, %d): %v", len(bs), m, err)
	}
	return table
}

func TestSize(t *testing.T) {
	for _, tc := range []struct {
		n       int
		want    uint32
		wantErr bool
	}{
		{n: 0, want: 101},
		{n: 1, want: 101},
		{n: 2, want: 211},
		{n: 3, want: 307},
		{n: 10, want: 1009},
		{n: 100, want: 10007},
		{n: 1000, want: 100003},
		{n: MaxBackends, want: MaxSize},
		{n: MaxBackends + 1, wantErr: true},
		{n: -1, wantErr: true},
	} {
		got, err := Size(tc.n)
		if tc.wantErr {
			if err == nil {
				t.Errorf("Size(%d) = %d, want an error", tc.n, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Size(%d) = %d, %v; want %d", tc.n, got, err, tc.want)
		}
	}
	if _, err := Size(MaxBackends + 1); !errors.Is(err, ErrTooManyBackends) {
		t.Errorf("Size(MaxBackends+1): %v, want ErrTooManyBackends", err)
	}
	// The rule itself, for every n: a prime >= 100n with no prime in
	// [max(100n, 101), Size(n)).
	for n := 0; n <= MaxBackends; n++ {
		m, err := Size(n)
		if err != nil {
			t.Fatalf("Size(%d): %v", n, err)
		}
		lo := uint32(max(100*n, 101))
		if m < lo || m > MaxSize || !isPrime(m) {
			t.Fatalf("Size(%d) = %d: not a prime in [%d, %d]", n, m, lo, MaxSize)
		}
		for p := lo; p < m; p++ {
			if isPrime(p) {
				t.Fatalf("Size(%d) = %d, but %d is a smaller prime >= %d", n, m, p, lo)
			}
		}
	}
}

func TestIsPrime(t *testing.T) {
	var got []uint32
	for n := uint32(0); n < 50; n++ {
		if isPrime(n) {
			got = append(got, n)
		}
	}
	want := []uint32{2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("primes below 50 (-want +got):\n%s", d)
	}
	for _, n := range []uint32{MaxSize, 4294967291} {
		if !isPrime(n) {
			t.Errorf("isPrime(%d) = false", n)
		}
	}
	for _, n := range []uint32{409600, 4294967295, 65537 * 65521} {
		if isPrime(n) {
			t.Errorf("isPrime(%d) = true", n)
		}
	}
}

func TestFit(t *testing.T) {
	for _, tc := range []struct {
		name string
		cur  uint32
		n    int
		want uint32
	}{
		{"no table yet", 0, 3, 601},                // Size(6)
		{"keeps size on removal", 307, 2, 307},     // 307 >= 200
		{"keeps size on addition", 1009, 9, 1009},  // 1009 >= 900
		{"grows with headroom", 307, 4, 809},       // 307 < 400: Size(8)
		{"not prime", 1000, 3, 601},                // Size(6)
		{"shrinks when 8x too big", 10007, 1, 211}, // 10007 > 8*101: Size(2)
		{"keeps up to 8x", 797, 1, 797},            // largest prime <= 8*101
		{"no headroom past MaxBackends", 0, 3000, 300007},
		{"above MaxSize", 409619, MaxBackends, MaxSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Fit(tc.cur, tc.n)
			if err != nil || got != tc.want {
				t.Errorf("Fit(%d, %d) = %d, %v; want %d", tc.cur, tc.n, got, err, tc.want)
			}
		})
	}
	if _, err := Fit(MaxSize, MaxBackends+1); !errors.Is(err, ErrTooManyBackends) {
		t.Errorf("Fit(_, MaxBackends+1): %v, want ErrTooManyBackends", err)
	}
}

// TestBuildBalance checks that every backend holds floor or ceil of its
// ideal m*w/W slots, and that the deviation is within 1% of the ideal
// wherever the ideal is at least 100 slots (below that, one slot is more
// than 1%: the bound is one slot).
func TestBuildBalance(t *testing.T) {
	for _, tc := range []struct {
		name string
		bs   []Backend
	}{
		{"1 equal", backends(1)},
		{"2 equal", backends(2)},
		{"3 equal", backends(3)},
		{"10 equal", backends(10)},
		{"100 equal", backends(100)},
		{"1000 equal", backends(1000)},
		{"1,2,3", weighted(1, 2, 3)},
		{"1,1,8", weighted(1, 1, 8)},
		{"100,1", weighted(100, 1)},
		{"90,10", weighted(90, 10)},
		{"max,1", weighted(math.MaxUint32, 1)},
		{"max,max,max", weighted(math.MaxUint32, math.MaxUint32, math.MaxUint32)},
		{"0,0,5", weighted(0, 0, 5)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Size(len(tc.bs))
			if err != nil {
				t.Fatal(err)
			}
			table := mustBuild(t, tc.bs, m)
			if len(table) != int(m) {
				t.Fatalf("len(table) = %d, want %d", len(table), m)
			}
			count := make([]int, len(tc.bs))
			for i, b := range table {
				if b < 0 || b >= len(tc.bs) {
					t.Fatalf("slot %d = %d: not an index into %d backends", i, b, len(tc.bs))
				}
				count[b]++
			}
			var total float64
			for _, b := range tc.bs {
				total += float64(max(b.Weight, 1))
			}
			worst := 0.0
			for i, b := range tc.bs {
				ideal := float64(m) * float64(max(b.Weight, 1)) / total
				dev := math.Abs(float64(count[i]) - ideal)
				if dev >= 1 {
					t.Errorf("backend %d (weight %d): %d slots of %d, ideal %.2f: off by %.2f >= 1 slot", i, b.Weight, count[i], m, ideal, dev)
				}
				if ideal >= 100 {
					worst = max(worst, dev/ideal)
					if dev > 0.01*ideal {
						t.Errorf("backend %d (weight %d): %d slots of %d, ideal %.2f: off by %.2f%% > 1%%", i, b.Weight, count[i], m, ideal, 100*dev/ideal)
					}
				}
			}
			t.Logf("m=%d slots=%v worst relative deviation (ideal >= 100 slots) %.3f%%", m, truncate(count, 10), 100*worst)
		})
	}
}

func truncate(s []int, n int) []int { return s[:min(len(s), n)] }

// byName maps a table to the Names of its backends, to compare tables built
// from differently ordered inputs.
func byName(table []int, bs []Backend) []string {
	out := make([]string, len(table))
	for i, b := range table {
		out[i] = bs[b].Name
	}
	return out
}

func TestBuildDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, bs := range [][]Backend{backends(3), backends(100), weighted(5, 1, 0, 7, 3, 3)} {
		m, _ := Size(len(bs))
		want := byName(mustBuild(t, bs, m), bs)
		for range 5 {
			shuffled := append([]Backend(nil), bs...)
			rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			if d := cmp.Diff(want, byName(mustBuild(t, shuffled, m), shuffled)); d != "" {
				t.Fatalf("%d backends: shuffled input gives another table (-want +got):\n%s", len(bs), d)
			}
		}
	}
}

func TestBuildWeightZeroIsOne(t *testing.T) {
	zero := weighted(0, 3, 0)
	one := weighted(1, 3, 1)
	m, _ := Size(3)
	if d := cmp.Diff(mustBuild(t, one, m), mustBuild(t, zero, m)); d != "" {
		t.Errorf("weight 0 and weight 1 give different tables (-1 +0):\n%s", d)
	}
}

func TestBuildEmpty(t *testing.T) {
	table, err := Build(nil, 101)
	if err != nil || table != nil {
		t.Errorf("Build(nil, 101) = %v, %v; want nil, nil", table, err)
	}
	if got := Shares(nil, 3); !cmp.Equal(got, []float64{0, 0, 0}) {
		t.Errorf("Shares(nil, 3) = %v, want zeros", got)
	}
}

func TestBuildErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		bs      []Backend
		m       uint32
		wantErr string
		is      error
	}{
		{"duplicate", []Backend{{Name: "a:1"}, {Name: "b:1"}, {Name: "a:1", Weight: 2}}, 101, `backends 0 and 2: duplicate Name "a:1"`, nil},
		{"empty name", []Backend{{Name: "a:1"}, {Name: ""}}, 101, "backend 1: Name is empty", nil},
		{"size not prime", backends(3), 300, "table size 300 for 3 backends: want a prime", nil},
		{"size zero", backends(1), 0, "table size 0", nil},
		{"size above MaxSize", backends(3), 409619, "table size 409619", nil},
		{"size below backends", backends(5), 3, "table size 3 for 5 backends", nil},
		{"too many backends", backends(MaxBackends + 1), MaxSize, "4097 backends: too many backends", ErrTooManyBackends},
	} {
		t.Run(tc.name, func(t *testing.T) {
			table, err := Build(tc.bs, tc.m)
			if err == nil {
				t.Fatalf("Build = %d slots, nil error; want an error containing %q", len(table), tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Build error %q, want it to contain %q", err, tc.wantErr)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("Build error %q is not %v", err, tc.is)
			}
		})
	}
}

// kept returns the fraction of old's slots whose backend survives in next
// (oldToNew maps an old index to the new one, -1 when removed) and that
// still hold it in next.
func kept(old, next []int, oldToNew func(int) int) float64 {
	keep, total := 0, 0
	for i, o := range old {
		n := oldToNew(o)
		if n < 0 {
			continue
		}
		total++
		if next[i] == n {
			keep++
		}
	}
	return float64(keep) / float64(total)
}

// TestDisruptionRemove removes one backend at a time from n (same table
// size) and measures, over the slots that served a surviving backend, the
// fraction that still do. Measured worst case (equal weights, m = Size(n)):
// n=3 96.6%, n=10 96.8%, n=100 98.1%, n=1000 99.4%; weighted >= 96.7%.
func TestDisruptionRemove(t *testing.T) {
	for _, tc := range []struct {
		name    string
		bs      []Backend
		removes int // how many of the backends to try removing (0: all)
		bound   float64
	}{
		{"3 equal", backends(3), 0, 0.95},
		{"10 equal", backends(10), 0, 0.95},
		{"100 equal", backends(100), 20, 0.97},
		{"1000 equal", backends(1000), 3, 0.98},
		{"1,2,3", weighted(1, 2, 3), 0, 0.95},
		{"1,1,8", weighted(1, 1, 8), 0, 0.95},
		{"100,1", weighted(100, 1), 0, 0.95},
	} {
		n := len(tc.bs)
		t.Run(tc.name, func(t *testing.T) {
			m, _ := Size(n)
			old := mustBuild(t, tc.bs, m)
			worst, sum, tries := 1.0, 0.0, tc.removes
			if tries == 0 {
				tries = n
			}
			for k := range tries {
				rm := k * n / tries
				rest := append(append([]Backend(nil), tc.bs[:rm]...), tc.bs[rm+1:]...)
				next := mustBuild(t, rest, m)
				for i, b := range next {
					if b < 0 || b >= n-1 {
						t.Fatalf("removing backend %d of %d: slot %d = %d", rm, n, i, b)
					}
				}
				f := kept(old, next, func(o int) int {
					switch {
					case o == rm:
						return -1
					case o > rm:
						return o - 1
					}
					return o
				})
				worst, sum = min(worst, f), sum+f
				if f < tc.bound {
					t.Errorf("removing backend %d of %d (m=%d): %.2f%% of surviving backends' slots kept, want >= %.0f%%", rm, n, m, 100*f, 100*tc.bound)
				}
			}
			t.Logf("m=%d removing one of %d backends (%d tries): kept worst %.2f%% mean %.2f%% of the survivors' slots", m, n, tries, 100*worst, 100*sum/float64(tries))
		})
	}
}

// TestDisruptionAdd adds one backend to n (same table size) and measures,
// over the slots that the new backend does not take, the fraction that
// keep their backend. Measured (equal weights, m = Size(n+1)): n=3 95.4%,
// n=10 97.9%, n=100 98.2%, n=1000 99.4%.
func TestDisruptionAdd(t *testing.T) {
	for _, tc := range []struct {
		name  string
		bs    []Backend
		add   Backend
		bound float64
	}{
		{"3 equal", backends(3), Backend{Name: "10.9.9.9:8080"}, 0.95},
		{"10 equal", backends(10), Backend{Name: "10.9.9.9:8080"}, 0.95},
		{"100 equal", backends(100), Backend{Name: "10.9.9.9:8080"}, 0.97},
		{"1000 equal", backends(1000), Backend{Name: "10.9.9.9:8080"}, 0.98},
		{"1,2,3 + 2", weighted(1, 2, 3), Backend{Name: "10.9.9.9:53", Weight: 2}, 0.95},
	} {
		n := len(tc.bs)
		t.Run(tc.name, func(t *testing.T) {
			// The table is sized for the larger set, as Fit keeps it.
			m, _ := Size(n + 1)
			old := mustBuild(t, tc.bs, m)
			next := mustBuild(t, append(append([]Backend(nil), tc.bs...), tc.add), m)
			keep, total := 0, 0
			for i, o := range old {
				if next[i] == n {
					continue
				}
				total++
				if next[i] == o {
					keep++
				}
			}
			f := float64(keep) / float64(total)
			if f < tc.bound {
				t.Errorf("adding a backend to %d (m=%d): %.2f%% of the other slots kept, want >= %.0f%%", n, m, 100*f, 100*tc.bound)
			}
			t.Logf("m=%d adding one to %d backends: kept %.2f%% of the slots the new one did not take", m, n, 100*f)
		})
	}
}

// TestDisruptionResize shows why Fit exists: a removal that also changes
// the table size (Size(n) to Size(n-1)) moves most flows of the surviving
// backends, since a flow's slot is its hash mod m; Fit keeps the size and
// the flows. It follows 100,000 random flow hashes.
func TestDisruptionResize(t *testing.T) {
	bs := backends(10)
	m, _ := Size(10)
	old := mustBuild(t, bs, m)
	rest := bs[:9]
	m9, _ := Size(9)
	fit, err := Fit(m, 9)
	if err != nil || fit != m {
		t.Fatalf("Fit(%d, 9) = %d, %v; want %d", m, fit, err, m)
	}
	resized, same := mustBuild(t, rest, m9), mustBuild(t, rest, fit)
	rng := rand.New(rand.NewPCG(3, 4))
	var survivors, keptResized, keptSame int
	for range 100000 {
		h := rng.Uint32()
		b := old[h%m]
		if b == 9 {
			continue
		}
		survivors++
		if resized[h%m9] == b {
			keptResized++
		}
		if same[h%fit] == b {
			keptSame++
		}
	}
	fr, fs := float64(keptResized)/float64(survivors), float64(keptSame)/float64(survivors)
	t.Logf("removing 1 of 10: %.2f%% of the survivors' flows kept with Size(9)=%d, %.2f%% with Fit=%d", 100*fr, m9, 100*fs, fit)
	if fr > 0.5 || fs < 0.95 {
		t.Errorf("kept %.2f%% at a new size, %.2f%% at the same size: want >= 95%% at the same size and a new size to lose most", 100*fr, 100*fs)
	}
}

func TestShares(t *testing.T) {
	for _, bs := range [][]Backend{backends(1), backends(3), weighted(1, 2, 3), weighted(100, 1), backends(1000)} {
		m, _ := Size(len(bs))
		shares := Shares(mustBuild(t, bs, m), len(bs))
		var sum, total float64
		for _, b := range bs {
			total += float64(max(b.Weight, 1))
		}
		for i, s := range shares {
			sum += s
			if want := float64(max(bs[i].Weight, 1)) / total; math.Abs(s-want) >= 1/float64(m) {
				t.Errorf("%d backends: share[%d] = %.5f, want %.5f within one slot", len(bs), i, s, want)
			}
		}
		if math.Abs(sum-1) > 1e-9 {
			t.Errorf("%d backends: shares sum to %v, want 1", len(bs), sum)
		}
	}
	if got, want := Shares([]int{0, 1, 1, 7, -1}, 2), []float64{0.2, 0.4}; !cmp.Equal(got, want) {
		t.Errorf("Shares with out-of-range slots = %v, want %v", got, want)
	}
}

// TestGolden pins the hashes and one table. If it fails, the tables that
// agents build have changed: every agent of a mesh must run the same
// version, and existing flows without a flow entry will move. Change the
// wanted values only with a release note saying so.
func TestGolden(t *testing.T) {
	if got, want := [2]uint64{hash('o', "10.1.2.3:8080"), hash('s', "10.1.2.3:8080")}, [2]uint64{0x11b1faada1d0c189, 0xa781b9542b36f812}; got != want {
		t.Errorf("hash('o'|'s', \"10.1.2.3:8080\") = %#x, want %#x", got, want)
	}
	bs := []Backend{{Name: "10.1.2.3:8080", Weight: 1}, {Name: "10.1.2.4:8080", Weight: 2}, {Name: "10.1.7.1:8080", Weight: 0}}
	table := mustBuild(t, bs, 307)
	buf := make([]byte, 0, 4*len(table))
	for _, b := range table {
		buf = binary.LittleEndian.AppendUint32(buf, uint32(b))
	}
	sum := sha256.Sum256(buf)
	if got, want := hex.EncodeToString(sum[:]), "d737afdecf43d86340d92f85f4e5de8d6ea281abcd358f6c83537bd2a1ff0bc6"; got != want {
		t.Errorf("table digest = %s, want %s; first slots %v", got, want, table[:16])
	}
}

func BenchmarkBuild(b *testing.B) {
	for _, n := range []int{3, 1000} {
		bs := backends(n)
		m, _ := Size(n)
		b.Run(fmt.Sprintf("backends=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Build(bs, m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
