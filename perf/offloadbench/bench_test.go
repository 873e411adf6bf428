package offloadbench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/fibmesh/fibmesh/fastpath/ktls"
	"github.com/fibmesh/fibmesh/internal/testenv"
	"github.com/fibmesh/fibmesh/internal/vmcheck"
)

var (
	benchFlag   = flag.Bool("offload-bench", false, "run the offload benchmark (make bench-offload)")
	bytesFlag   = flag.Int64("offload-bench-bytes", 0, "bytes per transfer (0: 256 MiB on the host, 32 MiB in the VM, where the emulated lab carries ~10 Mbit/s)")
	roundsFlag  = flag.Int("offload-bench-rounds", 3, "rounds of every mode")
	revokeFlag  = flag.Int("offload-bench-revoke-rounds", 20, "revocation rounds (0: none)")
	timeoutFlag = flag.Duration("offload-bench-timeout", 3*time.Minute, "bound on the lab coming up, an agent restart, each wait")
	hostFlag    = flag.Bool("offload-bench-no-ktls-ok", false, "on a kernel without kTLS, run the userspace and direct modes and report offloaded_gbps=0 instead of failing (bench-offload --where host)")
)

// labBin holds the lab's binaries (testenv.MainWithCommands: built as
// root, or $FIBMESH_TEST_BIN in the VM).
var labBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if !*benchFlag {
		// Only the benchmark needs the binaries: no build for the unit tests.
		os.Exit(m.Run())
	}
	os.Exit(testenv.MainWithCommands(m, &labBin, "cmd/fibmesh-lab", "cmd/fibmesh-controller", "cmd/fibmesh-agent", "cmd/fibctl"))
}

// TestBenchOffload is `make bench-offload` where the kernel has kTLS (in
// the make vmtest VM where the host's has not): the run's progress, a
// table of medians, a JSON line with every sample, and last the summary
// line.
func TestBenchOffload(t *testing.T) {
	if !*benchFlag {
		t.Skip("the benchmark runs with -offload-bench (make bench-offload)")
	}
	testenv.NeedRoot(t)
	testenv.NeedBPFFS(t)
	o := Options{Bin: labBin, Bytes: *bytesFlag, Rounds: *roundsFlag, RevokeRounds: *revokeFlag, Timeout: *timeoutFlag, Where: "host", Out: os.Stdout}
	if *revokeFlag == 0 {
		o.RevokeRounds = -1
	}
	if vmcheck.InVM() {
		o.Where = "vm-tcg"
		if o.Bytes == 0 {
			o.Bytes = VMBytes
		}
	}
	caps, err := ktls.Probe()
	if err != nil {
		t.Fatal(err)
	}
	o.Kernel = caps.Kernel
	o.Offload = caps.ULP
	if !caps.ULP {
		o.OffloadSkipped = fmt.Sprintf("this kernel (%s) has no kTLS: %s", caps.Kernel, caps.ULPError)
		if !*hostFlag {
			t.Fatalf("%s: run make bench-offload, which uses the VM, or pass -offload-bench-no-ktls-ok", o.OffloadSkipped)
		}
	}
	fmt.Printf("%s; %d MiB per transfer, %d rounds per mode, %d revocation rounds, where=%s\n", caps, o.Bytes>>20, o.Rounds, max(0, o.RevokeRounds), o.Where)
	res, err := Run(context.Background(), o)
	if res != nil {
		fmt.Println()
		res.WriteTable(os.Stdout)
		js, _ := json.Marshal(res)
		fmt.Printf("offload-json: %s\n", js)
		fmt.Println(res.Line())
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range res.Errors {
		t.Error(e)
	}
}
