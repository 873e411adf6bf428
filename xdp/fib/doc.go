// Package fib holds the fibmesh XDP FIB program (prog.c) and its bpf2go
// binding. The generated fib_bpfel.go and fib_bpfel.o are committed so that
// `go build` needs no clang; `make generate` rebuilds them.
//
// Only fastpath/fib uses this package: it loads the program, pins the maps
// and offers a typed API over them.
package fib

//go:generate go tool bpf2go -tags linux -target bpfel -type route_key -type nexthop -type flow_key -type flow_val -type policy_key -type policy_val -type stat_val -type svc_key -type flow_nat -type policy_flags -type stat_reason -type flow_action -type mtls_mode -type nexthop_flags -type nic_profile -type nic_flags Fib prog.c -- -I../headers -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror
