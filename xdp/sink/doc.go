// Package sink holds xdp_sink, a benchmark helper that counts and drops
// UDP packets to one port (see prog.c), and its bpf2go binding.
package sink

//go:generate go tool bpf2go -tags linux -target bpfel Sink prog.c -- -I../headers -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror
