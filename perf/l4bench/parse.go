package l4bench

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/fibmesh/fibmesh/perf/benchlab"
)

// Stream is one bulk transfer as iperf3 reports it at its end, from the
// receiver's side (what arrived).
type Stream struct {
	Bytes       int64   `json:"bytes"`
	Seconds     float64 `json:"seconds"`
	Retransmits int     `json:"retransmits"`
}

// Gbps is the stream's rate in Gbit/s (10^9 bits per second).
func (s Stream) Gbps() float64 {
	if s.Seconds <= 0 {
		return 0
	}
	return float64(s.Bytes) * 8 / s.Seconds / 1e9
}

// ParseIperf3 reads the output of "iperf3 --client ... --json": the
// receiver's byte count and duration (end.sum_received) and the sender's
// retransmits (end.sum_sent). An "error" in the report, or a report with
// no bytes received, is an error that quotes it.
func ParseIperf3(b []byte) (Stream, error) {
	var r struct {
		End struct {
			SumSent *struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived *struct {
				Bytes   int64   `json:"bytes"`
				Seconds float64 `json:"seconds"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return Stream{}, fmt.Errorf("iperf3's JSON report: %w (output: %q)", err, benchlab.Clip(string(b), 200))
	}
	if r.Error != "" {
		return Stream{}, fmt.Errorf("iperf3: %s", r.Error)
	}
	if r.End.SumReceived == nil || r.End.SumReceived.Bytes <= 0 || r.End.SumReceived.Seconds <= 0 {
		return Stream{}, errors.New("iperf3's report has no bytes received (end.sum_received)")
	}
	s := Stream{Bytes: r.End.SumReceived.Bytes, Seconds: r.End.SumReceived.Seconds}
	if r.End.SumSent != nil {
		s.Retransmits = r.End.SumSent.Retransmits
	}
	return s, nil
}

// ParseCPS reads the JSON line "bench-l4 cps" prints.
func ParseCPS(b []byte) (CPSResult, error) {
	var r CPSResult
	if err := json.Unmarshal(b, &r); err != nil {
		return CPSResult{}, fmt.Errorf("bench-l4 cps output: %w (output: %q)", err, benchlab.Clip(string(b), 200))
	}
	if r.Seconds <= 0 {
		return CPSResult{}, fmt.Errorf("bench-l4 cps output %q: no duration", benchlab.Clip(string(b), 200))
	}
	return r, nil
}
