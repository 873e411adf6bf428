package fibbench

import (
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseBusy(t *testing.T) {
	for _, tc := range []struct {
		line    string
		want    time.Duration
		wantErr bool
	}{
		// user nice system idle iowait irq softirq steal guest guest_nice
		{line: "cpu  100 2 30 9000 50 4 60 5 7 0", want: 2010 * time.Millisecond},
		{line: "cpu 1 0 0 0 0 0 0 0", want: 10 * time.Millisecond},
		{line: "cpu0 1 0 0 0 0 0 0 0", wantErr: true},
		{line: "cpu 1 2 3", wantErr: true},
		{line: "cpu 1 x 0 0 0 0 0 0", wantErr: true},
	} {
		got, err := parseBusy(tc.line, 100)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseBusy(%q) = %v, %v; want %v, error %v", tc.line, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestParseSchedstat(t *testing.T) {
	if got, err := parseSchedstat("123456789 5000 42\n"); err != nil || got != 123456789*time.Nanosecond {
		t.Errorf("parseSchedstat = %v, %v; want 123.456789ms", got, err)
	}
	for _, bad := range []string{"", "x 1 2"} {
		if _, err := parseSchedstat(bad); err == nil {
			t.Errorf("parseSchedstat(%q): no error", bad)
		}
	}
}

func TestAttributedTime(t *testing.T) {
	pids, err := ksoftirqdPIDs()
	if err != nil {
		t.Skip("no ksoftirqd visible:", err)
	}
	t0, err := attributedTime(pids)
	if err != nil {
		t.Fatal(err)
	}
	// Spin until this thread has run 50 ms (its own CPU clock, whatever
	// else the machine runs): the attributed time grows by as much.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	threadCPU := func() time.Duration {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ts.Nano())
	}
	for start := threadCPU(); threadCPU()-start < 50*time.Millisecond; {
	}
	t1, err := attributedTime(pids)
	if err != nil {
		t.Fatal(err)
	}
	if d := t1 - t0; d < 49*time.Millisecond {
		t.Errorf("50 ms of spinning: attributed time grew by %v", d)
	}
}

func TestParseSEPPackets(t *testing.T) {
	listing := `Chain KUBE-SVC-ABC (1 references)
    pkts      bytes target     prot opt in     out     source               destination
       0        0 KUBE-MARK-MASQ  udp  --  *      *      !10.200.0.0/16        10.96.0.10           /* x cluster IP */ udp dpt:53
   50123  1503690 KUBE-SEP-AAAAAAAAAAAAAAAA  all  --  *      *       0.0.0.0/0            0.0.0.0/0            statistic mode random probability 0.50000000000
   49877  1496310 KUBE-SEP-BBBBBBBBBBBBBBBB  all  --  *      *       0.0.0.0/0            0.0.0.0/0
`
	if got, err := parseSEPPackets(listing); err != nil || got != 100000 {
		t.Errorf("parseSEPPackets = %d, %v; want 100000", got, err)
	}
}
