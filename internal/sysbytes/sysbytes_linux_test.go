package sysbytes

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fibmesh/fibmesh/internal/testenv"
)

const (
	chunk  = 32 << 10 // fits a pipe's and a socketpair's buffer
	chunks = 32
	total  = chunk * chunks
	// slack allows for the test process's own other reads and writes
	// (the Go runtime, the testing package) while the counter runs.
	slack = 256 << 10
)

func TestCounter(t *testing.T) {
	testenv.NeedRoot(t)
	if runtime.GOARCH != "amd64" {
		t.Skipf("the counter knows x86-64 syscall numbers only, this is %s", runtime.GOARCH)
	}
	for _, tc := range []struct {
		name string
		// pid is the process to count; nil counts the test's own.
		pid func(t *testing.T) int
		// move passes total bytes through the kernel with the syscalls
		// the case is about.
		move func(t *testing.T)
		// wantRead and wantWritten are the bytes the counter must see.
		wantRead, wantWritten uint64
	}{
		{"write and read on a pipe", nil, func(t *testing.T) {
			w, r := pipe(t)
			buf := make([]byte, chunk)
			for range chunks {
				mustN(t, "write")(unix.Write(w, buf))
				mustN(t, "read")(unix.Read(r, buf))
			}
		}, total, total},
		{"writev and readv on a pipe", nil, func(t *testing.T) {
			w, r := pipe(t)
			a, b := make([]byte, chunk/2), make([]byte, chunk/2)
			for range chunks {
				mustN(t, "writev")(unix.Writev(w, [][]byte{a, b}))
				mustN(t, "readv")(unix.Readv(r, [][]byte{a, b}))
			}
		}, total, total},
		{"sendmsg and recvmsg on a socketpair", nil, func(t *testing.T) {
			w, r := socketpair(t)
			buf := make([]byte, chunk)
			for range chunks {
				mustN(t, "sendmsg")(unix.SendmsgN(w, buf, nil, nil, 0))
				n, _, _, _, err := unix.Recvmsg(r, buf, nil, unix.MSG_WAITALL)
				mustN(t, "recvmsg")(n, err)
			}
		}, total, total},
		{"vmsplice and splice are not counted", nil, func(t *testing.T) {
			w, r := pipe(t)
			null, err := unix.Open("/dev/null", unix.O_WRONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Close(null) })
			buf := make([]byte, chunk)
			for range chunks {
				mustN(t, "vmsplice")(unix.Vmsplice(w, []unix.Iovec{{Base: &buf[0], Len: chunk}}, 0))
				n, err := unix.Splice(r, nil, null, nil, chunk, 0)
				mustN(t, "splice")(int(n), err)
			}
		}, 0, 0},
		{"another process's bytes are not counted", func(t *testing.T) int {
			cmd := exec.Command("sleep", "60")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			// Counting starts once sleep sleeps: before that its dynamic
			// loader reads libraries, and those reads would count.
			sysfile := fmt.Sprintf("/proc/%d/syscall", cmd.Process.Pid)
			testenv.Until(t, 10*time.Second, "sleep(1) in clock_nanosleep or nanosleep", func() bool {
				b, err := os.ReadFile(sysfile)
				nr, _, _ := strings.Cut(string(b), " ")
				return err == nil && (nr == strconv.Itoa(unix.SYS_CLOCK_NANOSLEEP) || nr == strconv.Itoa(unix.SYS_NANOSLEEP))
			})
			return cmd.Process.Pid
		}, func(t *testing.T) {
			w, r := pipe(t)
			buf := make([]byte, chunk)
			for range chunks {
				mustN(t, "write")(unix.Write(w, buf))
				mustN(t, "read")(unix.Read(r, buf))
			}
		}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pid, pidSlack := os.Getpid(), uint64(slack)
			if tc.pid != nil {
				pid, pidSlack = tc.pid(t), 0
			}
			c, err := New(pid)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := c.Close(); err != nil {
					t.Error(err)
				}
			}()
			tc.move(t)
			reads, writes, err := c.Read()
			if err != nil {
				t.Fatal(err)
			}
			for _, got := range []struct {
				what      string
				n, wanted uint64
			}{{"read", reads, tc.wantRead}, {"written", writes, tc.wantWritten}} {
				if got.n < got.wanted || got.n > got.wanted+pidSlack {
					t.Errorf("pid %d: %d B %s counted, want %d (up to %d more for the process's other syscalls)", pid, got.n, got.what, got.wanted, pidSlack)
				}
			}
		})
	}
}

func mustN(t *testing.T, call string) func(n int, err error) {
	t.Helper()
	return func(n int, err error) {
		t.Helper()
		if err != nil || n != chunk {
			t.Fatalf("%s: %d B of %d, %v", call, n, chunk, err)
		}
	}
}

func pipe(t *testing.T) (w, r int) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[1], p[0]
}

func socketpair(t *testing.T) (w, r int) {
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0], p[1]
}
