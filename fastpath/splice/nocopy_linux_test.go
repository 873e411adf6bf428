package splice

import (
	"testing"

	"github.com/fibmesh/fibmesh/internal/testenv"
)

// TestNoUserspaceCopy checks that no engine moves the payload through the
// joining process: with the endpoints in a child process, the bytes the
// joiner's read/recv and write/send syscalls carried stay near zero while
// 64 MiB go each way. The copy engine, which does read and write, is the
// control: it must show at least the bytes moved, or the measurement
// proves nothing.
func TestNoUserspaceCopy(t *testing.T) {
	testenv.NeedRoot(t)
	const n = 64 << 20
	const slack = 256 << 10 // Go runtime wakeups, /proc reads
	for _, c := range []struct {
		eng    engine
		copies bool
	}{
		{engine{name: "splice", mode: ModeSplice}, false},
		{engine{name: "sockmap", mode: ModeSockmap}, false},
		{copyEngine, true},
	} {
		t.Run(c.eng.name, func(t *testing.T) {
			noLeaks(t)
			m := transfer(t, c.eng, n, false)
			t.Logf("%s: %v", c.eng.name, m)
			if !m.SyscallCounted {
				t.Skip("no syscall byte counter on this kernel")
			}
			if got, want := m.Counters, (Counters{PlainToTLS: n, TLSToPlain: n}); got != want {
				t.Errorf("Counters() = %+v, want %+v", got, want)
			}
			if c.copies {
				if m.ReadSyscalls < 2*n || m.WriteSyscalls < 2*n {
					t.Errorf("the copy engine's syscalls carried %d bytes in and %d out, want at least %d each: the counter misses copies", m.ReadSyscalls, m.WriteSyscalls, 2*n)
				}
				return
			}
			if m.ReadSyscalls > slack || m.WriteSyscalls > slack {
				t.Errorf("%s: the joiner's syscalls carried %d bytes in and %d out while %d bytes went each way: payload went through userspace", c.eng.name, m.ReadSyscalls, m.WriteSyscalls, n)
			}
		})
	}
}
