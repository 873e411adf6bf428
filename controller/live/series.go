package live

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Sample is one series of a scrape as the text exposition format writes
// it: a histogram is its _bucket (with le), _sum and _count series, a
// summary its quantiles, _sum and _count.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Samples are a scrape's series by name (name_bucket for a histogram's
// buckets).
type Samples map[string][]Sample

// ParseText reads the Prometheus text exposition format (what an agent's
// /metrics serves to a client that asks for text/plain).
func ParseText(r io.Reader) (Samples, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	out := make([]*dto.MetricFamily, 0, len(mfs))
	for _, mf := range mfs {
		out = append(out, mf)
	}
	return Flatten(out), nil
}

// Flatten turns metric families (a registry's Gather, or a parsed
// scrape) into Samples. A sample whose value is NaN or infinite is
// dropped: no rate or sum the page shows can use it (and JSON has no
// such numbers).
func Flatten(mfs []*dto.MetricFamily) Samples {
	s := flatten(mfs)
	for name, ss := range s {
		s[name] = slices.DeleteFunc(ss, func(x Sample) bool { return math.IsNaN(x.Value) || math.IsInf(x.Value, 0) })
	}
	return s
}

func flatten(mfs []*dto.MetricFamily) Samples {
	s := Samples{}
	for _, mf := range mfs {
		name := mf.GetName()
		for _, m := range mf.GetMetric() {
			labels := make(map[string]string, len(m.GetLabel())+1)
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			with := func(k, v string) map[string]string {
				l := make(map[string]string, len(labels)+1)
				for a, b := range labels {
					l[a] = b
				}
				l[k] = v
				return l
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				s[name] = append(s[name], Sample{labels, m.GetCounter().GetValue()})
			case dto.MetricType_GAUGE:
				s[name] = append(s[name], Sample{labels, m.GetGauge().GetValue()})
			case dto.MetricType_UNTYPED:
				s[name] = append(s[name], Sample{labels, m.GetUntyped().GetValue()})
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				h := m.GetHistogram()
				inf := false
				for _, b := range h.GetBucket() {
					if math.IsInf(b.GetUpperBound(), +1) {
						inf = true
					}
					s[name+"_bucket"] = append(s[name+"_bucket"], Sample{with("le", formatLE(b.GetUpperBound())), float64(b.GetCumulativeCount())})
				}
				if !inf { // the text format always has +Inf; a registry's Gather leaves it implicit
					s[name+"_bucket"] = append(s[name+"_bucket"], Sample{with("le", "+Inf"), float64(h.GetSampleCount())})
				}
				s[name+"_sum"] = append(s[name+"_sum"], Sample{labels, h.GetSampleSum()})
				s[name+"_count"] = append(s[name+"_count"], Sample{labels, float64(h.GetSampleCount())})
			case dto.MetricType_SUMMARY:
				sm := m.GetSummary()
				for _, q := range sm.GetQuantile() {
					s[name] = append(s[name], Sample{with("quantile", strconv.FormatFloat(q.GetQuantile(), 'g', -1, 64)), q.GetValue()})
				}
				s[name+"_sum"] = append(s[name+"_sum"], Sample{labels, sm.GetSampleSum()})
				s[name+"_count"] = append(s[name+"_count"], Sample{labels, float64(sm.GetSampleCount())})
			}
		}
	}
	return s
}

func formatLE(f float64) string {
	if math.IsInf(f, +1) {
		return "+Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// key identifies a series within its name: its labels, sorted.
func key(labels map[string]string) string {
	ks := make([]string, 0, len(labels))
	for k := range labels {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var b strings.Builder
	for _, k := range ks {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(labels[k])
		b.WriteByte(0)
	}
	return b.String()
}

// Increase is how much each counter series of cur grew since prev, the
// way Prometheus's increase() sees it: a value below the previous one is
// a reset (the process restarted) and counts from zero, and a series
// absent from prev was created in between (Istio's series appear with
// their first request) and counts from zero too.
func Increase(prev, cur []Sample) []Sample {
	before := make(map[string]float64, len(prev))
	for _, p := range prev {
		before[key(p.Labels)] = p.Value
	}
	out := make([]Sample, 0, len(cur))
	for _, c := range cur {
		d := c.Value
		if b, ok := before[key(c.Labels)]; ok && c.Value >= b {
			d = c.Value - b
		}
		out = append(out, Sample{c.Labels, d})
	}
	return out
}

// Sum adds the values of samples whose labels satisfy match (nil: all).
func Sum(samples []Sample, match func(map[string]string) bool) float64 {
	var v float64
	for _, s := range samples {
		if match == nil || match(s.Labels) {
			v += s.Value
		}
	}
	return v
}

// SumBy adds the values of samples by the value of one label.
func SumBy(samples []Sample, label string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range samples {
		out[s.Labels[label]] += s.Value
	}
	return out
}

// Bucket is one cumulative bucket of a histogram: the count of
// observations at most UpperBound.
type Bucket struct {
	UpperBound float64
	Count      float64
}

// Buckets merges _bucket samples (all of one histogram, or several to be
// added together) by le, sorted by upper bound.
func Buckets(samples []Sample) ([]Bucket, error) {
	by := map[float64]float64{}
	for _, s := range samples {
		le, ok := s.Labels["le"]
		if !ok {
			return nil, fmt.Errorf("bucket sample without an le label: %v", s.Labels)
		}
		ub, err := strconv.ParseFloat(le, 64)
		if err != nil {
			return nil, fmt.Errorf("bucket le %q: %w", le, err)
		}
		by[ub] += s.Value
	}
	out := make([]Bucket, 0, len(by))
	for ub, c := range by {
		out = append(out, Bucket{ub, c})
	}
	slices.SortFunc(out, func(a, b Bucket) int {
		switch {
		case a.UpperBound < b.UpperBound:
			return -1
		case a.UpperBound > b.UpperBound:
			return 1
		}
		return 0
	})
	return out, nil
}

// Quantile estimates the q-quantile (0 ≤ q ≤ 1) of cumulative buckets
// as Prometheus's histogram_quantile does: linear interpolation within
// the bucket the rank falls in, the lowest bucket starting at 0, and the
// +Inf bucket answered with the highest finite bound. It returns NaN when
// there are no observations or no +Inf bucket. buckets is not modified.
func Quantile(q float64, buckets []Bucket) float64 {
	buckets = slices.Clone(buckets)
	n := len(buckets)
	if n == 0 || !math.IsInf(buckets[n-1].UpperBound, +1) || q < 0 || q > 1 {
		return math.NaN()
	}
	// Cumulative counts must not decrease (sums of deltas across agents
	// can, by float error or a reset seen by one of them).
	for i := 1; i < n; i++ {
		if buckets[i].Count < buckets[i-1].Count {
			buckets[i].Count = buckets[i-1].Count
		}
	}
	total := buckets[n-1].Count
	if total <= 0 {
		return math.NaN()
	}
	if n < 2 {
		return math.NaN()
	}
	rank := q * total
	i := sort.Search(n-1, func(i int) bool { return buckets[i].Count >= rank })
	if i == n-1 { // the +Inf bucket
		return buckets[n-2].UpperBound
	}
	lo, below := 0.0, 0.0
	if i > 0 {
		lo, below = buckets[i-1].UpperBound, buckets[i-1].Count
	} else if buckets[0].UpperBound <= 0 {
		return buckets[0].UpperBound
	}
	inBucket := buckets[i].Count - below
	if inBucket <= 0 {
		return buckets[i].UpperBound
	}
	return lo + (buckets[i].UpperBound-lo)*(rank-below)/inBucket
}
