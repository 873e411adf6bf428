// Package quantile reports medians and percentiles of benchmark samples by
// the nearest-rank method: the q-quantile of n samples is the smallest
// sample that at least q·n samples are at or below, so what is reported is
// always a measured value, never an interpolation between two. It is the
// one definition for every benchmark and test that prints p50 or p99.
package quantile

import (
	"math"
	"slices"
)

// epsilon absorbs the binary rounding of q·n (0.07·100 is
// 7.000000000000001 in float64, whose ceiling would skip a rank).
const epsilon = 1e-9

// Rank returns the index, in ascending order, of the q-quantile of n
// samples: ⌈q·n⌉−1, clamped to [0, n−1] (q ≤ 0 gives the minimum, q ≥ 1
// the maximum). It returns -1 when n ≤ 0. Use it to pick the sample that
// holds the quantile from a slice sorted by any key.
func Rank(n int, q float64) int {
	if n <= 0 {
		return -1
	}
	r := int(math.Ceil(q*float64(n)-epsilon)) - 1
	return max(0, min(r, n-1))
}

// Sorted returns the q-quantile of xs, which must be in ascending order
// (slices.Sort), or 0 when xs is empty.
func Sorted(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return xs[Rank(len(xs), q)]
}

// Of returns the q-quantile of xs in any order, or 0 when xs is empty. xs
// is not modified.
func Of(xs []float64, q float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return Sorted(s, q)
}

// Median returns Of(xs, 0.5): the middle sample of an odd count, the
// lower of the two middle ones of an even count.
func Median(xs []float64) float64 { return Of(xs, 0.5) }
