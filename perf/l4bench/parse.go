package l4bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
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
		return Stream{}, fmt.Errorf("iperf3's JSON report: %w (output: %q)", err, clip(string(b), 200))
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

// ClockTicks is the unit of utime and stime in /proc/<pid>/stat
// (USER_HZ, sysconf(_SC_CLK_TCK)): 100 on every Linux architecture Go
// supports.
const ClockTicks = 100

// ParseStatCPU returns the CPU time, in seconds, that a /proc/<pid>/stat
// line reports the process (all its threads) spent in user and kernel
// mode: utime + stime, fields 14 and 15. The command name (field 2) may
// hold spaces and parentheses, so fields are counted after its last ')'.
func ParseStatCPU(stat string) (float64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc stat line %q: no ')' after the command name", clip(stat, 80))
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state), so utime (14) is f[11] and stime (15) f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc stat line %q: %d fields after the command name, want at least 13", clip(stat, 80), len(f))
	}
	var ticks uint64
	for _, s := range f[11:13] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc stat line: utime/stime %q: %w", s, err)
		}
		ticks += n
	}
	return float64(ticks) / ClockTicks, nil
}

// ParseCPS reads the JSON line "bench-l4 cps" prints.
func ParseCPS(b []byte) (CPSResult, error) {
	var r CPSResult
	if err := json.Unmarshal(b, &r); err != nil {
		return CPSResult{}, fmt.Errorf("bench-l4 cps output: %w (output: %q)", err, clip(string(b), 200))
	}
	if r.Seconds <= 0 {
		return CPSResult{}, fmt.Errorf("bench-l4 cps output %q: no duration", clip(string(b), 200))
	}
	return r, nil
}

func clip(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
