package l7bench

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/fibmesh/fibmesh/perf/benchlab"
)

// The load generator runs as its own process inside a pod's network
// namespace ("bench-l7 load"): Args and ParseLoadArgs are the two ends of
// its command line, kept side by side so that they cannot drift apart,
// and ParseLoad reads the JSON line it prints.

// Args returns the command line of "bench-l7 load" (after "load") that
// ParseLoadArgs reads back as o.
func (o LoadOptions) Args() []string {
	d := func(v time.Duration) string { return v.String() }
	return []string{
		"--addr", o.Addr, "--host", o.Host, "--path", o.Path,
		"--conns", strconv.Itoa(o.Conns), "--rate", strconv.FormatFloat(o.Rate, 'g', -1, 64),
		"--warmup", d(o.Warmup), "--duration", d(o.Duration), "--timeout", d(o.Timeout),
		"--request-size", strconv.Itoa(o.RequestSize), "--body-size", strconv.Itoa(o.BodySize),
	}
}

// ParseLoadArgs reads the command line of "bench-l7 load"; usage, when
// not nil, receives the flags' help (for -h).
func ParseLoadArgs(args []string, usage io.Writer) (LoadOptions, error) {
	fs := flag.NewFlagSet("bench-l7 load", flag.ContinueOnError)
	if usage == nil {
		usage = io.Discard
	}
	fs.SetOutput(usage)
	var o LoadOptions
	fs.StringVar(&o.Addr, "addr", "", "HOST:PORT to send the requests to (required)")
	fs.StringVar(&o.Host, "host", "", "the requests' Host header (default: --addr)")
	fs.StringVar(&o.Path, "path", "/", "the requests' path")
	fs.IntVar(&o.Conns, "conns", 32, "keep-alive connections, one request in flight on each")
	fs.Float64Var(&o.Rate, "rate", 0, "requests per second, open loop, latency from each request's due time; 0: closed loop, as fast as answered")
	fs.DurationVar(&o.Warmup, "warmup", time.Second, "unmeasured time first")
	fs.DurationVar(&o.Duration, "duration", 5*time.Second, "measured time")
	fs.DurationVar(&o.Timeout, "timeout", 2*time.Second, "bound on one request")
	fs.IntVar(&o.RequestSize, "request-size", 256, "bytes of each request's head (padded with an X-Bench-Pad header)")
	fs.IntVar(&o.BodySize, "body-size", 0, "bytes every answer's body must have (0: not checked)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("bench-l7 load: unexpected argument %q", fs.Arg(0))
	case o.Addr == "":
		return o, errors.New("bench-l7 load: --addr is required (HOST:PORT of the server or of a proxy in front of it)")
	case o.Rate < 0:
		return o, fmt.Errorf("bench-l7 load: --rate %v: want requests per second, or 0 for a closed loop", o.Rate)
	case o.Duration < 0 || o.Warmup < 0:
		return o, errors.New("bench-l7 load: --duration and --warmup must not be negative")
	}
	return o, nil
}

// ParseLoad reads the JSON line "bench-l7 load" prints (a LoadResult).
func ParseLoad(b []byte) (LoadResult, error) {
	var r LoadResult
	if err := json.Unmarshal(b, &r); err != nil {
		return LoadResult{}, fmt.Errorf("bench-l7 load output: %w (output: %q)", err, benchlab.Clip(string(b), 200))
	}
	if r.Seconds <= 0 {
		return LoadResult{}, fmt.Errorf("bench-l7 load output %q: no measured time", benchlab.Clip(string(b), 200))
	}
	return r, nil
}
