package splice

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/fastpath/ktls"
	"github.com/fibmesh/fibmesh/internal/sysbytes"
)

// The endpoints of a measured transfer run in a child process (this test
// binary re-executed), so that the joining process's syscalls and CPU are
// the join's alone.
const endpointsEnv = "FIBMESH_SPLICE_ENDPOINTS"

func TestMain(m *testing.M) {
	if os.Getenv(endpointsEnv) != "" {
		os.Exit(endpointsMain())
	}
	os.Exit(m.Run())
}

// endpointResult is what the child reports on stdout.
type endpointResult struct {
	AppGot, FarGot int64 // bytes received at each end
	AppSum, FarSum string
	Err            string
}

// endpointsMain is the child: it connects the application's end and the
// far end, waits for "go" on stdin, sends n bytes each way (stream seeds 1
// from the application, 2 from the far end), half-closes, reads both ends
// to EOF and reports. With kTLS keys in the environment the far end is a
// kTLS socket too.
func endpointsMain() int {
	var args struct {
		App, Far string
		N        int64
		TX, RX   string // hex key||iv of the far end, empty for plain TCP
	}
	json.Unmarshal([]byte(os.Getenv(endpointsEnv)), &args)
	res := endpointResult{}
	defer func() { json.NewEncoder(os.Stdout).Encode(res) }()
	app, err := net.Dial("tcp4", args.App)
	if err != nil {
		res.Err = err.Error()
		return 1
	}
	farTCP, err := net.Dial("tcp4", args.Far)
	if err != nil {
		res.Err = err.Error()
		return 1
	}
	var far interface {
		io.ReadWriter
		CloseWrite() error
	} = farTCP.(*net.TCPConn)
	if args.TX != "" {
		kc, err := ktls.NewConn(farTCP.(*net.TCPConn), hexKeys(args.TX), hexKeys(args.RX), nil, nil)
		if err != nil {
			res.Err = err.Error()
			return 1
		}
		far = kc
	}
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		res.Err = "no go: " + err.Error()
		return 1
	}
	errc := make(chan error, 4)
	go func() { _, err := io.Copy(app, newStream(1, args.N)); app.(*net.TCPConn).CloseWrite(); errc <- err }()
	go func() { _, err := io.Copy(far, newStream(2, args.N)); far.CloseWrite(); errc <- err }()
	go func() {
		var err error
		res.AppGot, res.AppSum, err = receive(app)
		errc <- err
	}()
	go func() {
		var err error
		res.FarGot, res.FarSum, err = receive(far)
		errc <- err
	}()
	for range 4 {
		if err := <-errc; err != nil && res.Err == "" {
			res.Err = err.Error()
		}
	}
	return 0
}

func hexKeys(s string) ktls.Keys {
	b, _ := hex.DecodeString(s)
	return ktls.Keys{Version: ktls.VersionTLS13, Cipher: ktls.CipherAESGCM128, Key: b[:16], IV: b[16:28]}
}

func keysHex(k ktls.Keys) string {
	return hex.EncodeToString(append(append([]byte{}, k.Key...), k.IV...))
}

// engine is a way to join: one of the package's modes, or copyEngine,
// which moves the bytes through userspace (read and write) so the
// measurements can be seen to catch an engine that copies.
type engine struct {
	name string
	mode Mode // 0: copy through userspace
}

var copyEngine = engine{name: "copy"}

// measurement is one transfer through a join, seen from the joining
// process.
type measurement struct {
	Bytes          int64 // per direction
	Elapsed        time.Duration
	ProcCPU        time.Duration // getrusage(RUSAGE_SELF) user+sys
	SysCPU         time.Duration // /proc/stat busy time, all CPUs (kernel work queues and softirqs included)
	ReadSyscalls   uint64        // bytes returned by read/recv-family syscalls of this process
	WriteSyscalls  uint64        // bytes accepted by write/send-family syscalls
	RChar, WChar   int64         // /proc/self/io (read/write only; recvmsg and splice not counted)
	Counters       Counters
	SyscallCounted bool
}

func (m measurement) String() string {
	gbps := float64(2*m.Bytes) * 8 / m.Elapsed.Seconds() / 1e9
	perGiB := func(d time.Duration) float64 { return d.Seconds() / (float64(2*m.Bytes) / (1 << 30)) }
	return fmt.Sprintf("%d MiB each way in %v: %.2f Gbit/s both ways; CPU per GiB moved: joiner %.3f s, whole system %.3f s; payload through joiner syscalls: read %d B, write %d B (rchar %d, wchar %d)",
		m.Bytes>>20, m.Elapsed.Round(time.Millisecond), gbps, perGiB(m.ProcCPU), perGiB(m.SysCPU), m.ReadSyscalls, m.WriteSyscalls, m.RChar, m.WChar)
}

// transfer moves n bytes each way between child-process endpoints through
// a join made by eng, and measures it. With withKTLS both sockets of the
// wire connection run kTLS.
func transfer(tb testing.TB, eng engine, n int64, withKTLS bool) measurement {
	tb.Helper()
	appLn, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	defer appLn.Close()
	farLn, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	defer farLn.Close()
	var tx, rx ktls.Keys
	args := map[string]any{"App": appLn.Addr().String(), "Far": farLn.Addr().String(), "N": n}
	if withKTLS {
		tx, rx = randomKeys(), randomKeys()
		args["TX"], args["RX"] = keysHex(rx), keysHex(tx)
	}
	env, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), endpointsEnv+"="+string(env))
	stdin, _ := cmd.StdinPipe()
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	defer cmd.Process.Kill()
	plain, err := appLn.AcceptTCP()
	if err != nil {
		tb.Fatal(err)
	}
	farEnd, err := farLn.AcceptTCP()
	if err != nil {
		tb.Fatal(err)
	}
	opts := Options{Mode: eng.mode}
	if eng.mode == ModeSockmap {
		pr, err := sharedSockmap(tb).Prepare(farEnd)
		if err != nil {
			tb.Fatal(err)
		}
		opts.Prepared = pr
	}
	var side Offloaded = &standIn{TCPConn: farEnd}
	if withKTLS {
		kc, err := ktls.NewConn(farEnd, tx, rx, nil, nil)
		if err != nil {
			tb.Fatal(err)
		}
		side = kc
	}

	counter, cerr := sysbytes.New(os.Getpid())
	if cerr != nil {
		tb.Logf("syscall byte counter unavailable (%v): relying on /proc/self/io", cerr)
	} else {
		defer counter.Close()
	}
	r0, w0 := procIO(tb)
	u0 := rusage()
	s0 := procStatBusy(tb)
	start := time.Now()

	var wait func() error
	var counters func() Counters
	if eng.mode == 0 {
		wait, counters = copyJoin(plain, side)
	} else {
		pair, err := Join(plain, side, opts)
		if err != nil {
			tb.Fatalf("Join(%v): %v", eng.mode, err)
		}
		wait, counters = pair.Wait, pair.Counters
	}
	io.WriteString(stdin, "go\n")
	werr := wait()
	m := measurement{Bytes: n, Elapsed: time.Since(start), Counters: counters()}
	m.ProcCPU = rusage() - u0
	m.SysCPU = procStatBusy(tb) - s0
	r1, w1 := procIO(tb)
	m.RChar, m.WChar = r1-r0, w1-w0
	if counter != nil {
		var err error
		if m.ReadSyscalls, m.WriteSyscalls, err = counter.Read(); err != nil {
			tb.Fatal(err)
		}
		m.SyscallCounted = true
	}
	if werr != nil {
		tb.Fatalf("%s: Wait: %v", eng.name, werr)
	}
	if err := cmd.Wait(); err != nil {
		tb.Fatalf("endpoints: %v (%s)", err, out.String())
	}
	var res endpointResult
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		tb.Fatalf("endpoints said %q: %v", out.String(), err)
	}
	if res.Err != "" || res.FarGot != n || res.AppGot != n || res.FarSum != sum(1, n) || res.AppSum != sum(2, n) {
		tb.Fatalf("%s: endpoints got %+v, want %d bytes each way with sums %.12s/%.12s", eng.name, res, n, sum(1, n), sum(2, n))
	}
	return m
}

// copyJoin is the userspace engine: read and write, both ways.
func copyJoin(plain *net.TCPConn, tls Offloaded) (wait func() error, counters func() Counters) {
	var c [2]int64
	errc := make(chan error, 2)
	go func() {
		n, err := io.CopyBuffer(struct{ io.Writer }{tls}, struct{ io.Reader }{plain}, make([]byte, 256<<10))
		c[PlainToTLS] = n
		if err == nil {
			err = tls.CloseWrite()
		}
		errc <- err
	}()
	go func() {
		n, err := io.CopyBuffer(struct{ io.Writer }{plain}, struct{ io.Reader }{tls}, make([]byte, 256<<10))
		c[TLSToPlain] = n
		if err == nil {
			err = plain.CloseWrite()
		}
		errc <- err
	}()
	return func() error {
			err1, err2 := <-errc, <-errc
			plain.Close()
			tls.Close()
			if err1 != nil {
				return err1
			}
			return err2
		}, func() Counters {
			return Counters{PlainToTLS: uint64(c[PlainToTLS]), TLSToPlain: uint64(c[TLSToPlain])}
		}
}

func rusage() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procStatBusy is the time all CPUs spent not idle, from /proc/stat.
func procStatBusy(tb testing.TB) time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is in user already
			continue
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / 100 // USER_HZ
}

func procIO(tb testing.TB) (rchar, wchar int64) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "rchar":
			rchar = n
		case "wchar":
			wchar = n
		}
	}
	return
}
