// Package sysbytes counts the payload bytes that one process's syscalls
// move between the kernel and userspace, for tests that check a data path
// keeps bytes out of userspace (splice, kTLS offload).
//
// A Counter is a raw tracepoint BPF program on sys_exit, assembled in Go
// (no C, no cgo, no BTF needed): for the process with the given PID it
// adds the return value of read, pread64, readv, preadv, preadv2,
// recvfrom and recvmsg to one counter, and of their write/send twins to
// the other. splice(2) returns a byte count too, but moves nothing through
// userspace, so it is not counted. The syscall numbers are x86-64's; New
// fails on other architectures and on other systems than Linux. It needs
// root (CAP_BPF and CAP_PERFMON) and a kernel with raw tracepoints.
package sysbytes
