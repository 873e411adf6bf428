package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/internal/output"
)

const topUsage = `fibctl top: a live view of a node's agent: its connections and offloaded
flows, busiest first, with their rates, read from its admin API
(/connections and /offload/flows).

Usage:
  fibctl top [--node NETNS] [--admin ADDR] [--interval DURATION] [--count N]
             [--limit N] [--sort rate|bytes|age] [--pod NS/NAME] [--all] [-o table|json|yaml]

Every --interval (default 2s) fibctl reads both tables again and shows:

  - a summary: connections by state and offload mode, the node's total
    rate, the offloaded flows' XDP packet and byte rates;
  - the connections by rate (bytes per second both ways since the last
    read): id, direction, pod, peer (its SPIFFE ID, or the destination
    where there is none), state, offload (splice, sockmap: the kernel
    moves the bytes; userspace: fibctl conns says why), OUT/s and IN/s
    (from the app and to it), total bytes and age;
  - the offloaded connections' XDP flow entries by rate: tunnel 5-tuple,
    state, packets and bytes per second as XDP counted them.

A connection that appeared since the last read is rated over its own
lifetime. Closed connections are left out unless they closed since the
last read (or with --all). On a terminal the screen is redrawn in place
(ANSI clear); elsewhere each view follows the previous one. Ctrl-C stops.

-o json (or yaml) prints one snapshot and exits: it reads twice,
--interval apart, so that the rates are real; fields are those of the
table plus the raw counters, e.g.

  fibctl --node fm-node1 top -o json | jq '.connections[0]'

Examples:
  fibctl --node fm-node1 top
  fibctl top --node fm-node2 --interval 1s --sort bytes --pod production/frontend-7c9d
  fibctl top --node fm-node1 -o json --interval 500ms

Flags:
`

// TopSnapshot is what fibctl top shows once: -o json prints it.
type TopSnapshot struct {
	// Node is the --node namespace ("" for the current one).
	Node string    `json:"node"`
	Time time.Time `json:"time"`
	// IntervalSeconds is the time between the two reads the rates come
	// from.
	IntervalSeconds float64         `json:"intervalSeconds"`
	Summary         TopSummary      `json:"summary"`
	Connections     []TopConnection `json:"connections"`
	Flows           []TopFlow       `json:"flows"`
}

// TopSummary totals a snapshot.
type TopSummary struct {
	// Connections counts the rows shown, by state and by offload mode
	// (offloaded ones: splice, sockmap; userspace).
	Connections int            `json:"connections"`
	ByState     map[string]int `json:"byState"`
	ByOffload   map[string]int `json:"byOffload"`
	// BytesPerSec is the sum of the connections' rates, both ways.
	BytesPerSec float64 `json:"bytesPerSec"`
	// OffloadedFlows counts the offloaded connections with XDP flow
	// entries; XDP*PerSec are their entries' rates, summed.
	OffloadedFlows      int     `json:"offloadedFlows"`
	XDPPacketsPerSec    float64 `json:"xdpPacketsPerSec"`
	XDPBytesPerSec      float64 `json:"xdpBytesPerSec"`
	OffloadedBytesRatio float64 `json:"offloadedBytesRatio"`
}

// TopConnection is one connection, its /connections row (all of its
// fields, under their names), with its rates.
type TopConnection struct {
	admin.Connection
	// OutPerSec and InPerSec are bytes per second since the last read
	// (from the app, to the app); BytesPerSec their sum.
	OutPerSec   float64 `json:"outPerSec"`
	InPerSec    float64 `json:"inPerSec"`
	BytesPerSec float64 `json:"bytesPerSec"`
	// XDPPacketsPerSec and XDPBytesPerSec are the rates of the
	// connection's XDP flow entries, when it is offloaded with them.
	XDPPacketsPerSec float64 `json:"xdpPacketsPerSec,omitempty"`
	XDPBytesPerSec   float64 `json:"xdpBytesPerSec,omitempty"`
	AgeSeconds       float64 `json:"ageSeconds"`
}

// TopFlow is one offloaded connection's XDP flow entries, its
// /offload/flows row, with their rates.
type TopFlow struct {
	admin.OffloadFlow
	PacketsPerSec float64 `json:"packetsPerSec"`
	BytesPerSec   float64 `json:"bytesPerSec"`
}

// topRead is one read of the agent's tables.
type topRead struct {
	at    time.Time
	conns []admin.Connection
	flows []admin.OffloadFlow
}

// topOptions are what computeTop keeps and how it sorts.
type topOptions struct {
	sort string // rate, bytes or age
	all  bool   // keep connections closed before the previous read
}

// topSorts are --sort's values.
var topSorts = []string{"rate", "bytes", "age"}

// rate is (cur-prev)/dt, 0 when dt is not positive or the counter went
// back (a restarted agent reuses ids).
func rate(cur, prev uint64, dt float64) float64 {
	if dt <= 0 || cur < prev {
		return 0
	}
	return float64(cur-prev) / dt
}

// rater rates the counters of the things in a read against the previous
// read.
type rater struct {
	since time.Time // the previous read; zero for none
	at    time.Time // this read
}

// rates returns the per-second rates of two counters of a thing that
// lived from start to end (zero: still alive): their growth from prev
// (zero for a thing new since the last read) to cur, over the part of
// [since, at] the thing overlaps.
func (r rater) rates(start, end time.Time, cur, prev [2]uint64) (float64, float64) {
	from, to := start, r.at
	if from.Before(r.since) {
		from = r.since
	}
	if !end.IsZero() && end.Before(to) {
		to = end
	}
	dt := to.Sub(from).Seconds()
	return rate(cur[0], prev[0], dt), rate(cur[1], prev[1], dt)
}

// computeTop rates cur against prev (nil: the first read, everything is
// rated over its own lifetime up to cur.at) and sorts.
func computeTop(node string, prev *topRead, cur topRead, o topOptions) TopSnapshot {
	s := TopSnapshot{Node: node, Time: cur.at, Connections: []TopConnection{}, Flows: []TopFlow{},
		Summary: TopSummary{ByState: map[string]int{}, ByOffload: map[string]int{}}}
	r := rater{at: cur.at}
	prevConns := map[uint64]admin.Connection{}
	prevFlows := map[uint64]admin.OffloadFlow{}
	if prev != nil {
		r.since = prev.at
		s.IntervalSeconds = cur.at.Sub(prev.at).Seconds()
		for _, c := range prev.conns {
			prevConns[c.ID] = c
		}
		for _, f := range prev.flows {
			prevFlows[f.ConnID] = f
		}
	}
	flowRates := map[uint64]TopFlow{}
	for _, f := range cur.flows {
		p := prevFlows[f.ConnID]
		tf := TopFlow{OffloadFlow: f}
		tf.PacketsPerSec, tf.BytesPerSec = r.rates(f.Installed, time.Time{}, [2]uint64{f.Packets, f.Bytes}, [2]uint64{p.Packets, p.Bytes})
		s.Flows = append(s.Flows, tf)
		flowRates[f.ConnID] = tf
		s.Summary.XDPPacketsPerSec += tf.PacketsPerSec
		s.Summary.XDPBytesPerSec += tf.BytesPerSec
	}
	s.Summary.OffloadedFlows = len(s.Flows)
	var offloadedRate float64
	for _, c := range cur.conns {
		if !o.all && !c.End.IsZero() && (r.since.IsZero() || c.End.Before(r.since)) {
			continue // closed before the previous read
		}
		p := prevConns[c.ID]
		end := cur.at
		if !c.End.IsZero() {
			end = c.End
		}
		tc := TopConnection{Connection: c, AgeSeconds: math.Max(0, end.Sub(c.Start).Seconds())}
		tc.OutPerSec, tc.InPerSec = r.rates(c.Start, c.End, [2]uint64{c.BytesOut, c.BytesIn}, [2]uint64{p.BytesOut, p.BytesIn})
		tc.BytesPerSec = tc.OutPerSec + tc.InPerSec
		if f, ok := flowRates[c.ID]; ok {
			tc.XDPPacketsPerSec, tc.XDPBytesPerSec = f.PacketsPerSec, f.BytesPerSec
		}
		s.Connections = append(s.Connections, tc)
		s.Summary.ByState[c.State]++
		if c.Offload != "" {
			s.Summary.ByOffload[c.Offload]++
		}
		s.Summary.BytesPerSec += tc.BytesPerSec
		if c.State == "offloaded" {
			offloadedRate += tc.BytesPerSec
		}
	}
	s.Summary.Connections = len(s.Connections)
	if s.Summary.BytesPerSec > 0 {
		s.Summary.OffloadedBytesRatio = offloadedRate / s.Summary.BytesPerSec
	}
	sortTop(&s, o.sort)
	return s
}

// sortTop orders connections and flows busiest first: by rate (then
// total bytes), by total bytes (then rate) or by age (oldest first);
// ties by id.
func sortTop(s *TopSnapshot, by string) {
	slices.SortStableFunc(s.Connections, func(a, b TopConnection) int {
		var c int
		switch by {
		case "bytes":
			c = cmpDesc(float64(a.BytesIn+a.BytesOut), float64(b.BytesIn+b.BytesOut))
			if c == 0 {
				c = cmpDesc(a.BytesPerSec, b.BytesPerSec)
			}
		case "age":
			c = cmpDesc(a.AgeSeconds, b.AgeSeconds)
		default:
			c = cmpDesc(a.BytesPerSec, b.BytesPerSec)
			if c == 0 {
				c = cmpDesc(float64(a.BytesIn+a.BytesOut), float64(b.BytesIn+b.BytesOut))
			}
		}
		if c == 0 {
			c = compareUint(a.ID, b.ID)
		}
		return c
	})
	slices.SortStableFunc(s.Flows, func(a, b TopFlow) int {
		var c int
		if by == "bytes" {
			c = cmpDesc(float64(a.Bytes), float64(b.Bytes))
		} else {
			c = cmpDesc(a.BytesPerSec, b.BytesPerSec)
			if c == 0 {
				c = cmpDesc(a.PacketsPerSec, b.PacketsPerSec)
			}
		}
		if c == 0 {
			c = compareUint(a.ConnID, b.ConnID)
		}
		return c
	})
}

func cmpDesc(a, b float64) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}

func compareUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// humanRate prints bytes per second in B/s, KiB/s, MiB/s or GiB/s.
func humanRate(v float64) string {
	if v < 0.5 {
		return "0B/s"
	}
	return humanBytes(uint64(math.Round(v))) + "/s"
}

// humanCount prints a rate of packets or requests with k/M suffixes.
func humanCount(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

// renderTop writes s as fibctl top's screen: the summary, then at most
// limit connections and limit flows (0: all).
func renderTop(w io.Writer, s TopSnapshot, limit int) {
	node := s.Node
	if node == "" {
		node = "(current network namespace)"
	}
	every := "first read"
	if s.IntervalSeconds > 0 {
		every = "rates over " + (time.Duration(s.IntervalSeconds * float64(time.Second))).Round(time.Millisecond).String()
	}
	fmt.Fprintf(w, "fibctl top: node %s, %s, %s\n", node, s.Time.Local().Format(time.TimeOnly), every)
	fmt.Fprintf(w, "connections %d: %s; offload: %s; total %s (offloaded %.0f%%)\n", s.Summary.Connections,
		counts(s.Summary.ByState), counts(s.Summary.ByOffload), humanRate(s.Summary.BytesPerSec), 100*s.Summary.OffloadedBytesRatio)
	fmt.Fprintf(w, "offloaded flows %d: XDP %s pkt/s, %s\n\n", s.Summary.OffloadedFlows,
		humanCount(s.Summary.XDPPacketsPerSec), humanRate(s.Summary.XDPBytesPerSec))
	_ = output.Write(w, output.Table, nil, func(w io.Writer) {
		fmt.Fprintln(w, "ID\tDIR\tPOD\tPEER\tSTATE\tOFFLOAD\tOUT/S\tIN/S\tTOTAL\tAGE")
		for i, c := range s.Connections {
			if limit > 0 && i == limit {
				fmt.Fprintf(w, "... %d more (--limit)\n", len(s.Connections)-limit)
				break
			}
			peer := c.PeerIdentity
			if peer == "" {
				peer = addr(c.Destination)
			}
			off := c.Offload
			if c.OffloadReason != "" {
				off += " (" + shortReason(c.OffloadReason) + ")"
			}
			if c.XDPPacketsPerSec > 0 {
				off += fmt.Sprintf(" xdp %s pkt/s", humanCount(c.XDPPacketsPerSec))
			}
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.Direction, c.Pod, peer, c.State, dash(off),
				humanRate(c.OutPerSec), humanRate(c.InPerSec), humanBytes(c.BytesOut+c.BytesIn),
				(time.Duration(c.AgeSeconds * float64(time.Second))).Round(time.Second))
		}
	})
	if len(s.Flows) == 0 {
		return
	}
	fmt.Fprintln(w)
	_ = output.Write(w, output.Table, nil, func(w io.Writer) {
		fmt.Fprintln(w, "CONN\tPOD\tTUNNEL\tSTATE\tPKT/S\tBYTES/S\tPACKETS\tBYTES")
		for i, f := range s.Flows {
			if limit > 0 && i == limit {
				fmt.Fprintf(w, "... %d more (--limit)\n", len(s.Flows)-limit)
				break
			}
			fmt.Fprintf(w, "%d\t%s\t%s <-> %s\t%s\t%s\t%s\t%d\t%s\n", f.ConnID, f.Pod, addr(f.Local), addr(f.Remote), f.State,
				humanCount(f.PacketsPerSec), humanRate(f.BytesPerSec), f.Packets, humanBytes(f.Bytes))
		}
	})
}

// shortReason is the head of an offload reason, for the table: up to
// its first explanation (" (" or ": ") and at most 40 characters; -o json
// and fibctl conns give it whole.
func shortReason(r string) string {
	if i := strings.Index(r, " ("); i > 0 {
		r = r[:i]
	}
	if i := strings.Index(r, ": "); i > 0 {
		r = r[:i]
	}
	if rs := []rune(r); len(rs) > 40 {
		r = string(rs[:39]) + "…"
	}
	return r
}

// counts prints a map of counts as "a 1, b 2" in key order, "-" when
// empty.
func counts(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// ansiClear moves the cursor home and clears the screen.
const ansiClear = "\x1b[H\x1b[2J"

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// terminalRows returns w's height in rows, 0 when unknown.
func terminalRows(w io.Writer) int {
	f, ok := w.(*os.File)
	if !ok {
		return 0
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Row)
}

// topCommand is fibctl top: it returns the exit status.
func topCommand(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runTop(ctx, args, stdout, stderr)
}

// runTop is fibctl top until ctx is done (Ctrl-C: exit 0).
func runTop(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const name = "fibctl top"
	var pod, intervalS, countS, limitS, sortBy string
	args, pod = takeFlag(args, "pod")
	args, intervalS = takeFlag(args, "interval")
	args, countS = takeFlag(args, "count")
	args, limitS = takeFlag(args, "limit")
	args, sortBy = takeFlag(args, "sort")
	all := hasFlag(args, "all")
	args = dropFlag(args, "all")
	usage := topUsage + "  -all\n    \tkeep connections closed before the previous read\n" +
		"  -count int\n    \trefresh this many times, then exit (0: until Ctrl-C)\n" +
		"  -interval duration\n    \ttime between reads (default 2s)\n" +
		"  -limit int\n    \trows per table (default: what fits the terminal, else all)\n" +
		"  -pod string\n    \tonly this pod's connections (NS/NAME)\n" +
		"  -sort string\n    \trate, bytes or age (default \"rate\")\n"
	f, code, ok := parseAdminFlags(name, usage, args, 0, stderr)
	if !ok {
		return code
	}
	interval := 2 * time.Second
	if intervalS != "" {
		d, err := time.ParseDuration(intervalS)
		if err != nil || d <= 0 {
			fmt.Fprintf(stderr, "%s: --interval %q: want a positive duration, e.g. 2s or 500ms\n", name, intervalS)
			return 2
		}
		interval = d
	}
	count, limit := 0, -1
	for _, fl := range []struct {
		name, val string
		to        *int
	}{{"count", countS, &count}, {"limit", limitS, &limit}} {
		if fl.val == "" {
			continue
		}
		var n int
		if _, err := fmt.Sscan(fl.val, &n); err != nil || n < 0 {
			fmt.Fprintf(stderr, "%s: --%s %q: want a whole number >= 0\n", name, fl.name, fl.val)
			return 2
		}
		*fl.to = n
	}
	if sortBy == "" {
		sortBy = "rate"
	}
	if !slices.Contains(topSorts, sortBy) {
		fmt.Fprintf(stderr, "%s: --sort %q: want one of %s\n", name, sortBy, strings.Join(topSorts, ", "))
		return 2
	}
	opts := topOptions{sort: sortBy, all: all}
	read := func() (topRead, error) {
		r := topRead{}
		q := url.Values{}
		if pod != "" {
			q.Set("pod", pod)
		}
		if err := adminGet(f, "/connections", q, &r.conns); err != nil {
			return r, err
		}
		if err := adminGet(f, "/offload/flows", q, &r.flows); err != nil {
			return r, err
		}
		r.at = time.Now()
		return r, nil
	}
	wait := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(interval):
			return true
		}
	}
	first, err := read()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	if f.format != output.Table {
		// One snapshot: rates need a second read.
		if !wait() {
			return 130
		}
		cur, err := read()
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return 1
		}
		s := computeTop(f.node, &first, cur, opts)
		if err := output.Write(stdout, f.format, s, nil); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return 1
		}
		return 0
	}
	term := isTerminal(stdout)
	prev := (*topRead)(nil)
	cur := first
	for n := 1; ; n++ {
		s := computeTop(f.node, prev, cur, opts)
		rows := limit
		if rows < 0 {
			rows = 0
			if h := terminalRows(stdout); term && h > 0 {
				// Two tables of equal share below the 4 summary lines
				// and their headers.
				rows = max(3, (h-9)/2)
			}
		}
		if term {
			fmt.Fprint(stdout, ansiClear)
		} else if n > 1 {
			fmt.Fprintln(stdout)
		}
		renderTop(stdout, s, rows)
		if count > 0 && n >= count {
			return 0
		}
		if !wait() {
			return 0 // Ctrl-C
		}
		next, err := read()
		if err != nil {
			if errors.Is(ctx.Err(), context.Canceled) {
				return 0
			}
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return 1
		}
		p := cur
		prev, cur = &p, next
	}
}
