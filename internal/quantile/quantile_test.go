package quantile

import (
	"slices"
	"testing"
)

func TestRank(t *testing.T) {
	for _, tc := range []struct {
		n    int
		q    float64
		want int
	}{
		{0, 0.5, -1},
		{-3, 0.5, -1},
		{1, 0.5, 0},
		{1, 0.99, 0},
		{2, 0.5, 0},
		{3, 0.5, 1},
		{4, 0.5, 1},
		{5, 0.5, 2},
		{50, 0.5, 24},
		{50, 0.99, 49},
		{100, 0.99, 98},
		{100, 0.07, 6}, // 0.07·100 rounds up to 7.000000000000001 in float64
		{1000, 0.99, 989},
		{7, 0.9, 6},
		{10, 0, 0},
		{10, -1, 0},
		{10, 1, 9},
		{10, 2, 9},
	} {
		if got := Rank(tc.n, tc.q); got != tc.want {
			t.Errorf("Rank(%d, %v) = %d, want %d", tc.n, tc.q, got, tc.want)
		}
	}
}

// TestOf uses the nearest-rank examples of the Wikipedia article
// "Percentile".
func TestOf(t *testing.T) {
	five := []float64{50, 15, 40, 20, 35} // unsorted on purpose
	ten := []float64{3, 6, 7, 8, 8, 10, 13, 15, 16, 20}
	for _, tc := range []struct {
		name string
		xs   []float64
		q    float64
		want float64
	}{
		{"5th of five", five, 0.05, 15},
		{"30th of five", five, 0.30, 20},
		{"40th of five", five, 0.40, 20},
		{"50th of five", five, 0.50, 35},
		{"100th of five", five, 1, 50},
		{"25th of ten", ten, 0.25, 7},
		{"50th of ten", ten, 0.50, 8},
		{"75th of ten", ten, 0.75, 15},
		{"100th of ten", ten, 1, 20},
		{"none", nil, 0.5, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := slices.Clone(tc.xs)
			if got := Of(tc.xs, tc.q); got != tc.want {
				t.Errorf("Of(%v, %v) = %v, want %v", tc.xs, tc.q, got, tc.want)
			}
			if !slices.Equal(before, tc.xs) {
				t.Errorf("Of modified its input: %v, was %v", tc.xs, before)
			}
			sorted := slices.Sorted(slices.Values(tc.xs))
			if got := Sorted(sorted, tc.q); got != tc.want {
				t.Errorf("Sorted(%v, %v) = %v, want %v", sorted, tc.q, got, tc.want)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{4}, 4},
		{[]float64{9, 1, 5}, 5},
		{[]float64{4, 1, 3, 2}, 2}, // the lower middle: a measured value
	} {
		if got := Median(tc.xs); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
}
