// Command bench-offload measures the offload of established mesh
// connections in the lab: an opaque TCP stream across two nodes' agents,
// offloaded (kTLS + the kernel byte path + XDP flow entries) vs the same
// agents in userspace (--offload=off) vs plaintext direct, and the
// revocation latency of an offloaded connection (package
// perf/offloadbench). Where this kernel has no kTLS it runs the bench in
// the make vmtest VM. Its last line is the contract:
//
//	offload: offloaded_gbps=<n> userspace_gbps=<n> direct_gbps=<n> cpu_ratio=<offloaded/userspace> revoke_p99_ms=<n> where=<host|vm-tcg>
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fibmesh/fibmesh/fastpath/ktls"
	"github.com/fibmesh/fibmesh/perf/offloadbench"
)

const usage = `bench-offload: offloaded vs userspace mTLS vs direct, and revocation latency, in the lab.

Brings up a 2-node lab with the controller and an agent per node (prefix
fm-ob-): a client pod on node1 and a server pod on node2 in the mesh
(STRICT mTLS, a Service in front of the server, opaque TCP), and a pair
outside the mesh. The bench itself opens both ends of the stream in the
pods' network namespaces. Each of --rounds rounds: the agents restarted
with --offload=auto for an offloaded transfer (--mib), checked offloaded
on both agents, and with --offload=off for a userspace one, each beside a
direct transfer; then --revoke-rounds rounds of a paced stream revoked by
an AuthorizationPolicy that denies the client, agents on auto. Reports
throughput, CPU seconds per GB for the whole machine (/proc/stat) and for
the agents (/proc/PID/stat), and the revocation latency p50/p99: the
agents' own figure (the controller's push to the first packet the XDP
drop entry counted) where they report it, else the bench's (policy
written to the stream's death), labelled.

--where: auto runs here when this kernel has kTLS, else in the make vmtest
VM (Debian's kernel under qemu TCG: where=vm-tcg, compare ratios, not
absolute figures); host runs here regardless (without kTLS: no offloaded
mode, offloaded_gbps=0 and cpu_ratio=0, and the revocation rounds revoke
userspace connections); vm always uses the VM. Needs root, and here the
binaries of make build (--bin); the VM run builds its own.

Exit status: 0 every mode and round measured, 1 something failed, 2 bad
usage.

Flags:
`

func main() {
	fs := flag.NewFlagSet("bench-offload", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	where := fs.String("where", "auto", "auto, host or vm (see above)")
	bin := fs.String("bin", "bin", "directory holding fibmesh-lab, fibmesh-controller, fibmesh-agent, fibctl (--where host)")
	mib := fs.Int("mib", 0, "MiB per transfer (0: 256 here, 32 in the VM, whose emulated lab carries ~10 Mbit/s)")
	rounds := fs.Int("rounds", 3, "rounds of every mode (medians are reported)")
	revoke := fs.Int("revoke-rounds", 20, "revocation rounds (0: none)")
	timeout := fs.Duration("timeout", 3*time.Minute, "longest wait for the lab, an agent restart, a connection's state, a revocation")
	vmTimeout := fs.Duration("vm-timeout", 60*time.Minute, "the whole VM run (--where vm)")
	out := fs.String("json", "perf/out/bench-offload.json", "where to write the result as JSON (empty: nowhere)")
	fs.Parse(os.Args[1:])
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench-offload: unexpected argument %q (see --help)\n", fs.Arg(0))
		os.Exit(2)
	}
	if *mib < 0 || *rounds <= 0 || *revoke < 0 {
		fmt.Fprintln(os.Stderr, "bench-offload: --mib must not be negative, --rounds positive, --revoke-rounds not negative")
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench-offload: needs root (network namespaces, BPF; the VM run too, for its kernel's modules)")
		os.Exit(2)
	}
	caps, err := ktls.Probe()
	if err != nil {
		log.Error("bench-offload: kTLS probe", "err", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch *where {
	case "auto":
		if !caps.ULP {
			fmt.Printf("bench-offload: this kernel (%s) has no kTLS (%s): running in the make vmtest VM (where=vm-tcg)\n", caps.Kernel, caps.ULPError)
			os.Exit(inVM(ctx, log, *mib, *rounds, *revoke, *timeout, *vmTimeout, *out))
		}
	case "vm":
		os.Exit(inVM(ctx, log, *mib, *rounds, *revoke, *timeout, *vmTimeout, *out))
	case "host":
	default:
		fmt.Fprintf(os.Stderr, "bench-offload: --where %q: want auto, host or vm\n", *where)
		os.Exit(2)
	}

	if *mib == 0 {
		*mib = 256
	}
	o := offloadbench.Options{Bin: *bin, Bytes: int64(*mib) << 20, Rounds: *rounds, RevokeRounds: *revoke, Timeout: *timeout,
		Where: "host", Kernel: caps.Kernel, Offload: caps.ULP, Out: os.Stdout}
	if *revoke == 0 {
		o.RevokeRounds = -1
	}
	if !caps.ULP {
		o.OffloadSkipped = fmt.Sprintf("this kernel (%s) has no kTLS (%s) and --where host was given: every connection stays in userspace", caps.Kernel, caps.ULPError)
	}
	fmt.Printf("%s; %d MiB per transfer, %d rounds per mode, %d revocation rounds, where=host\n", caps, *mib, *rounds, *revoke)
	res, err := offloadbench.Run(ctx, o)
	if res != nil {
		fmt.Println()
		res.WriteTable(os.Stdout)
		if *out != "" {
			if werr := res.WriteJSON(*out); werr != nil {
				log.Error("bench-offload: result", "file", *out, "err", werr)
			}
		}
	}
	if err != nil {
		log.Error("bench-offload failed", "err", err)
	}
	if res != nil {
		fmt.Println(res.Line())
	}
	if err != nil || res == nil || len(res.Errors) > 0 {
		os.Exit(1)
	}
}

// inVM runs the bench in the make vmtest VM (TestBenchOffload of
// perf/offloadbench), passes its output through, writes its JSON line to
// jsonOut and prints its offload line last. It returns the exit status.
func inVM(ctx context.Context, log *slog.Logger, mib, rounds, revoke int, timeout, vmTimeout time.Duration, jsonOut string) int {
	if _, err := os.Stat("hack/vmtest"); err != nil {
		log.Error("bench-offload: run it from the repository's root (make bench-offload): the VM run uses make vmtest", "err", err)
		return 2
	}
	if mib == 0 {
		mib = offloadbench.VMBytes >> 20
	}
	args := strings.Join([]string{"-offload-bench",
		"-offload-bench-bytes=" + strconv.FormatInt(int64(mib)<<20, 10),
		"-offload-bench-rounds=" + strconv.Itoa(rounds),
		"-offload-bench-revoke-rounds=" + strconv.Itoa(revoke),
		"-offload-bench-timeout=" + timeout.String()}, " ")
	flags := fmt.Sprintf("-timeout %s -test-timeout %s", vmTimeout, vmTimeout-2*time.Minute)
	cmd := exec.CommandContext(ctx, "make", "--no-print-directory", "vmtest",
		"VMTEST_PKGS=./perf/offloadbench", "VMTEST_RUN=^TestBenchOffload$", "VMTEST_ARGS="+args, "VMTEST_FLAGS="+flags)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		log.Error("bench-offload: make vmtest", "err", err)
		return 1
	}
	fmt.Printf("bench-offload: make vmtest VMTEST_PKGS=./perf/offloadbench VMTEST_RUN='^TestBenchOffload$' VMTEST_ARGS='%s' VMTEST_FLAGS='%s'\n", args, flags)
	if err := cmd.Start(); err != nil {
		log.Error("bench-offload: make vmtest", "err", err)
		return 1
	}
	line, js := scan(stdout, os.Stdout)
	err = cmd.Wait()
	if js != "" && jsonOut != "" {
		if werr := writeJSON(jsonOut, js); werr != nil {
			log.Error("bench-offload: result", "file", jsonOut, "err", werr)
		}
	}
	if line == "" {
		log.Error("bench-offload: the VM run printed no offload line", "err", err)
		return 1
	}
	fmt.Println(line)
	if err != nil {
		log.Error("bench-offload: the VM run failed (its output above says what)", "err", err)
		return 1
	}
	return 0
}

// scan copies r to w and returns the last "offload: " line and the last
// "offload-json: " line's JSON.
func scan(r io.Reader, w io.Writer) (line, js string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		l := sc.Text()
		fmt.Fprintln(w, l)
		switch {
		case strings.HasPrefix(l, "offload: "):
			line = l
		case strings.HasPrefix(l, "offload-json: "):
			js = strings.TrimPrefix(l, "offload-json: ")
		}
	}
	return line, js
}

// writeJSON writes the VM's result, indented, to path.
func writeJSON(path, js string) error {
	var res offloadbench.Result
	if err := json.Unmarshal([]byte(js), &res); err != nil {
		return fmt.Errorf("the VM's offload-json line: %w", err)
	}
	return res.WriteJSON(path)
}
