package offloadbench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/fibmesh/fibmesh/internal/quantile"
)

// Mode is one way of carrying the stream.
type Mode string

// The modes, in the order the table lists them.
const (
	// ModeOffloaded: through both agents, which offload the connection
	// once it is established (kTLS record crypto, the kernel byte path,
	// XDP flow entries); agents run with --offload=auto.
	ModeOffloaded Mode = "offloaded"
	// ModeUserspace: through the same agents with --offload=off:
	// crypto/tls and the proxy's copy loop.
	ModeUserspace Mode = "userspace"
	// ModeDirect: pod to pod, outside the mesh.
	ModeDirect Mode = "direct"
)

// AllModes lists the modes in table order.
var AllModes = []Mode{ModeOffloaded, ModeUserspace, ModeDirect}

// Sample is one transfer.
type Sample struct {
	Mode  Mode `json:"mode"`
	Round int  `json:"round"`
	// Agents is the agents' --offload while it ran.
	Agents AgentMode `json:"agents"`
	// Bytes moved and the seconds from the first byte's arrival to the
	// last's.
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	// MachineCPU is the machine's busy CPU seconds over the transfer (all
	// CPUs, /proc/stat), AgentCPU both agents' (/proc/PID/stat).
	MachineCPU float64 `json:"machineCPUSeconds"`
	AgentCPU   float64 `json:"agentCPUSeconds"`
	// Path is how the agents said they carried it.
	Path string `json:"path,omitempty"`
}

// Gbps is the throughput in 10^9 bits per second.
func (s Sample) Gbps() float64 { return float64(s.Bytes) * 8 / s.Seconds / 1e9 }

// MachineCPUPerGB is the machine's CPU seconds per 10^9 bytes moved.
func (s Sample) MachineCPUPerGB() float64 { return s.MachineCPU / (float64(s.Bytes) / 1e9) }

// AgentCPUPerGB is the agents' CPU seconds per 10^9 bytes moved.
func (s Sample) AgentCPUPerGB() float64 { return s.AgentCPU / (float64(s.Bytes) / 1e9) }

// Revocation is one revocation round: a paced stream through the
// agents, then an AuthorizationPolicy that denies it.
type Revocation struct {
	Round int `json:"round"`
	// Offloaded says both agents had offloaded the connection when the
	// policy was applied.
	Offloaded bool `json:"offloaded"`
	// DeathMs is the bench's own figure: from writing the policy into
	// the lab's manifest directory to the stream's first error at
	// either end. It includes the lab's and the controller's debounces
	// and the push.
	DeathMs float64 `json:"deathMs"`
	// AgentMs is the agents' figure: from the controller's push reaching
	// the agent to the first packet its drop entry counted (the largest
	// over the agents that measured one; 0: none did); AgentErrorMs its
	// uncertainty (0: exact); AgentSource where it was read.
	AgentMs      float64 `json:"agentMs,omitempty"`
	AgentErrorMs float64 `json:"agentErrorMs,omitempty"`
	AgentSource  string  `json:"agentSource,omitempty"`
	// AgentNote says why there is no AgentMs.
	AgentNote string `json:"agentNote,omitempty"`
	// ClientErr and ServerErr are how the stream ended at each end.
	ClientErr string `json:"clientError,omitempty"`
	ServerErr string `json:"serverError,omitempty"`
}

// Result is a run.
type Result struct {
	// Where the bench ran: "host" or "vm-tcg" (qemu software emulation).
	Where  string `json:"where"`
	Kernel string `json:"kernel,omitempty"`
	// Bytes per transfer; Rounds of every mode; RevokeRounds asked for.
	Bytes        int64 `json:"bytes"`
	Rounds       int   `json:"rounds"`
	RevokeRounds int   `json:"revokeRounds"`
	// OffloadSkipped says why the offloaded mode did not run.
	OffloadSkipped string       `json:"offloadSkipped,omitempty"`
	Samples        []Sample     `json:"samples"`
	Revocations    []Revocation `json:"revocations"`
	// Errors are the modes and rounds that failed.
	Errors []string `json:"errors,omitempty"`
	// CPUs and the 1-minute load average before and after.
	CPUs      int     `json:"cpus"`
	LoadStart float64 `json:"loadStart"`
	LoadEnd   float64 `json:"loadEnd"`
}

// samples returns the samples of mode m.
func (r *Result) samples(m Mode) []Sample {
	var out []Sample
	for _, s := range r.Samples {
		if s.Mode == m {
			out = append(out, s)
		}
	}
	return out
}

// Median returns the median of f over mode m's samples, 0 without any.
func (r *Result) Median(m Mode, f func(Sample) float64) float64 {
	ss := r.samples(m)
	if len(ss) == 0 {
		return 0
	}
	xs := make([]float64, len(ss))
	for i, s := range ss {
		xs[i] = f(s)
	}
	return quantile.Median(xs)
}

// CPURatio is the offloaded mode's median machine CPU per GB over the
// userspace mode's; 0 when either is missing.
func (r *Result) CPURatio() float64 {
	off, user := r.Median(ModeOffloaded, Sample.MachineCPUPerGB), r.Median(ModeUserspace, Sample.MachineCPUPerGB)
	if off == 0 || user == 0 {
		return 0
	}
	return off / user
}

// AgentCPURatio is the same ratio for the agents' own CPU.
func (r *Result) AgentCPURatio() float64 {
	off, user := r.Median(ModeOffloaded, Sample.AgentCPUPerGB), r.Median(ModeUserspace, Sample.AgentCPUPerGB)
	if off == 0 || user == 0 {
		return 0
	}
	return off / user
}

// AgentRounds returns the agents' figures of the rounds that have one.
func (r *Result) AgentRounds() []float64 {
	var xs []float64
	for _, v := range r.Revocations {
		if v.AgentSource != "" {
			xs = append(xs, v.AgentMs)
		}
	}
	return xs
}

// RevokeQuantile returns the q-quantile of the revocation latency, in
// ms, and which figure it is: the agents' (push to first dropped packet)
// over the rounds that have one, when at least half of them do (a round
// can have none: the peer stopped sending before a packet reached the
// drop entry); else the bench's own over every round (policy written to
// the stream's death). ok is false without rounds.
func (r *Result) RevokeQuantile(q float64) (ms float64, source string, ok bool) {
	if len(r.Revocations) == 0 {
		return 0, "", false
	}
	if xs := r.AgentRounds(); len(xs) > 0 && 2*len(xs) >= len(r.Revocations) {
		return quantile.Of(xs, q), "agent", true
	}
	xs := make([]float64, len(r.Revocations))
	for i, v := range r.Revocations {
		xs[i] = v.DeathMs
	}
	return quantile.Of(xs, q), "death", true
}

// Line returns the contract line,
//
//	offload: offloaded_gbps=<n> userspace_gbps=<n> direct_gbps=<n> cpu_ratio=<offloaded/userspace> revoke_p99_ms=<n> where=<host|vm-tcg>
//
// from the medians: cpu_ratio is the machine's CPU per GB, offloaded
// over userspace; revoke_p99_ms the agents' figure where at least half
// the rounds have one, else the bench's (see RevokeQuantile). A figure that was not
// measured is 0 (OffloadSkipped and WriteTable say why).
func (r *Result) Line() string {
	gbps := Sample.Gbps
	p99, _, _ := r.RevokeQuantile(0.99)
	return fmt.Sprintf("offload: offloaded_gbps=%.3f userspace_gbps=%.3f direct_gbps=%.3f cpu_ratio=%.2f revoke_p99_ms=%.1f where=%s",
		r.Median(ModeOffloaded, gbps), r.Median(ModeUserspace, gbps), r.Median(ModeDirect, gbps), r.CPURatio(), p99, r.Where)
}

// Aims of the issue: offloaded CPU per GB at most half of userspace's,
// revocation p99 at most 10 ms.
const (
	AimCPURatio    = 0.5
	AimRevokeP99Ms = 10
)

// WriteTable prints the medians, one row per mode with each round's
// figures, the revocation rounds' quantiles and the aims.
func (r *Result) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "mode\tGbit/s\tmachine CPU-s/GB\tagents CPU-s/GB\tGbit/s by round\tmachine CPU-s/GB by round\tpath\n")
	for _, m := range AllModes {
		ss := r.samples(m)
		if len(ss) == 0 {
			why := "not run"
			if m == ModeOffloaded && r.OffloadSkipped != "" {
				why = "not run: " + r.OffloadSkipped
			}
			fmt.Fprintf(tw, "%s\t-\t-\t-\t\t\t%s\n", m, why)
			continue
		}
		var gs, cs []string
		for _, s := range ss {
			gs = append(gs, fmt.Sprintf("%.3f", s.Gbps()))
			cs = append(cs, fmt.Sprintf("%.2f", s.MachineCPUPerGB()))
		}
		agents := fmt.Sprintf("%.2f", r.Median(m, Sample.AgentCPUPerGB))
		if m == ModeDirect {
			agents = "-"
		}
		fmt.Fprintf(tw, "%s\t%.3f\t%.2f\t%s\t%s\t%s\t%s\n", m, r.Median(m, Sample.Gbps), r.Median(m, Sample.MachineCPUPerGB), agents,
			strings.Join(gs, " "), strings.Join(cs, " "), ss[len(ss)-1].Path)
	}
	tw.Flush()
	fmt.Fprintf(w, "where=%s, %d MiB per transfer, %d rounds per mode; machine: %d CPUs, load average %.2f before, %.2f after\n",
		r.Where, r.Bytes>>20, r.Rounds, r.CPUs, r.LoadStart, r.LoadEnd)
	if r.OffloadSkipped != "" {
		fmt.Fprintf(w, "offloaded mode not run: %s (offloaded_gbps=0 and cpu_ratio=0 on the last line)\n", r.OffloadSkipped)
	}
	if ratio := r.CPURatio(); ratio > 0 {
		verdict := "met"
		if ratio > AimCPURatio {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "CPU per GB, offloaded / userspace: machine %.2f, agents %.2f (aim <= %.1f on the machine's: %s); throughput offloaded / userspace %.2fx\n",
			ratio, r.AgentCPURatio(), AimCPURatio, verdict, r.Median(ModeOffloaded, Sample.Gbps)/r.Median(ModeUserspace, Sample.Gbps))
	}
	if p50, src, ok := r.RevokeQuantile(0.5); ok {
		p99, _, _ := r.RevokeQuantile(0.99)
		offloaded := 0
		for _, v := range r.Revocations {
			if v.Offloaded {
				offloaded++
			}
		}
		what := fmt.Sprintf("the agents' figure, over the %d rounds that have one: the controller's push reaching the agent to the first packet its XDP drop entry counted", len(r.AgentRounds()))
		if src == "death" {
			what = "the bench's figure, NOT the agents': the policy file written into the lab's directory to the stream's death (includes the lab's and controller's debounces and the push); fewer than half the rounds have the agents' push-to-drop figure"
		}
		verdict := "met"
		if p99 > AimRevokeP99Ms {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "revocation, %d rounds (%d offloaded when revoked): p50 %.1f ms, p99 %.1f ms (aim p99 <= %d ms: %s); %s\n",
			len(r.Revocations), offloaded, p50, p99, AimRevokeP99Ms, verdict, what)
		var deaths, agents []float64
		for _, v := range r.Revocations {
			deaths = append(deaths, v.DeathMs)
			if v.AgentSource != "" {
				agents = append(agents, v.AgentMs)
			}
		}
		fmt.Fprintf(w, "  policy written -> stream dead: p50 %.1f ms, p99 %.1f ms", quantile.Of(deaths, 0.5), quantile.Of(deaths, 0.99))
		if len(agents) > 0 {
			fmt.Fprintf(w, "; agents' push -> first drop (%d rounds): p50 %.2f ms, p99 %.2f ms", len(agents), quantile.Of(agents, 0.5), quantile.Of(agents, 0.99))
		}
		fmt.Fprintln(w)
	} else if r.RevokeRounds > 0 {
		fmt.Fprintln(w, "revocation: no round completed (revoke_p99_ms=0 on the last line)")
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "FAILED: %s\n", e)
	}
}

// WriteJSON writes the result to path (its directory created).
func (r *Result) WriteJSON(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
