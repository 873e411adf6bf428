// Package splice holds splice_verdict, the sockmap program that moves the
// payload between a plaintext socket and a kTLS socket in the kernel (see
// prog.c), and its bpf2go binding. The generated splice_bpfel.go and
// splice_bpfel.o are committed so that `go build` needs no clang;
// `make generate` rebuilds them.
//
// Only fastpath/splice uses this package: it loads the program, attaches it
// to the sockhash and joins socket pairs through its maps.
package splice

//go:generate go tool bpf2go -tags linux -target bpfel -type peer -type sock_stats -type splice_stat -type stat_reason -type peer_flags Splice prog.c -- -I../headers -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror
