package sysbytes

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Counter counts one process's syscall payload bytes from New until Close.
type Counter struct {
	counts *ebpf.Map
	prog   *ebpf.Program
	link   link.Link
}

// New loads the counting program for the process pid (its thread group
// id) and attaches it to the sys_exit raw tracepoint; it counts from then
// on. The caller closes the Counter.
func New(pid int) (*Counter, error) {
	if runtime.GOARCH != "amd64" {
		return nil, fmt.Errorf("sysbytes: syscall numbers are x86-64 only, this is %s", runtime.GOARCH)
	}
	counts, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2})
	if err != nil {
		return nil, fmt.Errorf("sysbytes: creating the counters map: %w", err)
	}
	const origAX = 15 * 8 // offsetof(struct pt_regs, orig_ax)
	reads := []int32{unix.SYS_READ, unix.SYS_PREAD64, unix.SYS_READV, unix.SYS_RECVFROM, unix.SYS_RECVMSG, unix.SYS_PREADV, unix.SYS_PREADV2}
	writes := []int32{unix.SYS_WRITE, unix.SYS_PWRITE64, unix.SYS_WRITEV, unix.SYS_SENDTO, unix.SYS_SENDMSG, unix.SYS_PWRITEV, unix.SYS_PWRITEV2}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.FnGetCurrentPidTgid.Call(),
		asm.RSh.Imm(asm.R0, 32),
		asm.JNE.Imm(asm.R0, int32(pid), "out"),
		asm.LoadMem(asm.R7, asm.R6, 8, asm.DWord), // args[1]: the return value
		asm.JSLE.Imm(asm.R7, 0, "out"),
		asm.Mov.Reg(asm.R1, asm.R10),
		asm.Add.Imm(asm.R1, -8),
		asm.Mov.Imm(asm.R2, 8),
		asm.LoadMem(asm.R3, asm.R6, 0, asm.DWord), // args[0]: struct pt_regs *
		asm.Add.Imm(asm.R3, origAX),
		asm.FnProbeReadKernel.Call(),
		asm.JNE.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R1, asm.R10, -8, asm.DWord), // the syscall number
		asm.Mov.Imm(asm.R2, 0),
	}
	for _, nr := range reads {
		insns = append(insns, asm.JEq.Imm(asm.R1, nr, "count"))
	}
	insns = append(insns, asm.Mov.Imm(asm.R2, 1))
	for _, nr := range writes {
		insns = append(insns, asm.JEq.Imm(asm.R1, nr, "count"))
	}
	insns = append(insns,
		asm.Ja.Label("out"),
		asm.StoreMem(asm.R10, -16, asm.R2, asm.Word).WithSymbol("count"),
		asm.LoadMapPtr(asm.R1, counts.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -16),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.StoreXAdd(asm.R0, asm.R7, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.RawTracepoint, Instructions: insns, License: "GPL"})
	if err != nil {
		counts.Close()
		return nil, fmt.Errorf("sysbytes: loading the sys_exit program: %w", err)
	}
	l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_exit", Program: prog})
	if err != nil {
		prog.Close()
		counts.Close()
		return nil, fmt.Errorf("sysbytes: attaching to the sys_exit raw tracepoint: %w", err)
	}
	return &Counter{counts: counts, prog: prog, link: l}, nil
}

// Read returns the bytes counted so far: what the process's read-side
// syscalls returned to it and what its write-side syscalls took from it.
func (c *Counter) Read() (reads, writes uint64, err error) {
	if err := c.counts.Lookup(uint32(0), &reads); err != nil {
		return 0, 0, fmt.Errorf("sysbytes: reading the read-side counter: %w", err)
	}
	if err := c.counts.Lookup(uint32(1), &writes); err != nil {
		return 0, 0, fmt.Errorf("sysbytes: reading the write-side counter: %w", err)
	}
	return reads, writes, nil
}

// Close detaches the program and frees it and its map.
func (c *Counter) Close() error {
	return errors.Join(c.link.Close(), c.prog.Close(), c.counts.Close())
}
