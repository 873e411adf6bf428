// Package ktlsbench measures what handing mTLS record crypto to the kernel
// buys: one bulk transfer between two Go peers in two network namespaces
// over a veth, carried three ways in the same run:
//
//   - ktls: each side's agent terminates mTLS with crypto/tls, hands the
//     record layer to the kernel (fastpath/ktls) and joins the application
//     socket to the kTLS socket with the kernel byte path (fastpath/splice):
//     the payload never enters userspace;
//   - userspace: the same agents keep crypto/tls and relay with io.Copy,
//     as a userspace mesh proxy does;
//   - plain: the application peers connect directly, no mesh (the
//     baseline).
//
// The application ends are the same in every mode: a writer that sends N
// bytes of random data and a reader that counts them. Each round reports
// throughput and the whole machine's CPU time per GB moved (/proc/stat),
// so crypto done in softirq or by another thread is counted too.
package ktlsbench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fibmesh/fibmesh/fastpath/ktls"
	"github.com/fibmesh/fibmesh/fastpath/splice"
)

// Mode is one way of carrying the transfer.
type Mode string

// The modes. KTLSSockmap is the kTLS mode with the sockmap engine instead
// of the default one.
const (
	Plain       Mode = "plain"
	Userspace   Mode = "userspace"
	KTLS        Mode = "ktls"
	KTLSSockmap Mode = "ktls-sockmap"
)

// Netns runs fn on a thread in a network namespace; sockets fn creates
// stay there.
type Netns func(fn func() error) error

// Config is one benchmark setup.
type Config struct {
	// A is the client side's namespace, B the server side's, with B's
	// address on the veth between them.
	A, B  Netns
	AddrB netip.Addr
	// Bytes per round (one direction, client to server).
	Bytes int64
	// Client and Server are the agents' mTLS configs.
	Client, Server *tls.Config
	// Sockmap is a loaded sockmap whose SelfTest passed, for KTLSSockmap.
	Sockmap *splice.Sockmap
}

// Sample is one round's result.
type Sample struct {
	Mode    Mode    `json:"mode"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	// CPUSeconds is the machine's busy CPU time during the round (all
	// CPUs, user+nice+system+irq+softirq), ProcessCPU this process's
	// (getrusage).
	CPUSeconds float64 `json:"cpu_seconds"`
	ProcessCPU float64 `json:"process_cpu_seconds"`
}

// Gbps is the round's throughput in gigabits per second.
func (s Sample) Gbps() float64 { return float64(s.Bytes) * 8 / s.Seconds / 1e9 }

// CPUPerGB is the machine's busy CPU seconds per gigabyte moved.
func (s Sample) CPUPerGB() float64 { return s.CPUSeconds / (float64(s.Bytes) / 1e9) }

// ProcessCPUPerGB is this process's CPU seconds per gigabyte moved. Under
// TCG the guest's tick-based /proc/stat undercounts, so both are shown.
func (s Sample) ProcessCPUPerGB() float64 { return s.ProcessCPU / (float64(s.Bytes) / 1e9) }

const (
	appPort   = 9000  // the server application
	agentPort = 15008 // the server agent's mTLS port
	entryPort = 15001 // the client agent's capture port
)

// Round runs one transfer in mode m.
func Round(ctx context.Context, cfg Config, m Mode) (Sample, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	s := Sample{Mode: m, Bytes: cfg.Bytes}

	// The server application: in B, on the veth address for plain, on
	// loopback behind the agent otherwise.
	appAddr := netip.AddrPortFrom(cfg.AddrB, appPort)
	if m != Plain {
		appAddr = netip.MustParseAddrPort("127.0.0.1:" + strconv.Itoa(appPort))
	}
	appLn, err := listenIn(cfg.B, appAddr)
	if err != nil {
		return s, err
	}
	defer appLn.Close()

	var agents sync.WaitGroup
	agentErr := make(chan error, 4)
	ready := make(chan struct{}, 2) // each agent, once its path carries bytes
	target := appAddr
	if m != Plain {
		agentLn, err := listenIn(cfg.B, netip.AddrPortFrom(cfg.AddrB, agentPort))
		if err != nil {
			return s, err
		}
		defer agentLn.Close()
		entry := netip.MustParseAddrPort("127.0.0.1:" + strconv.Itoa(entryPort))
		entryLn, err := listenIn(cfg.A, entry)
		if err != nil {
			return s, err
		}
		defer entryLn.Close()
		agents.Add(2)
		go func() {
			defer agents.Done()
			agentErr <- serverAgent(ctx, cfg, m, agentLn, appAddr, ready)
		}()
		go func() {
			defer agents.Done()
			agentErr <- clientAgent(ctx, cfg, m, entryLn, netip.AddrPortFrom(cfg.AddrB, agentPort), ready)
		}()
		target = entry
	}

	// The application ends.
	got := make(chan error, 1)
	var received int64
	go func() {
		c, err := appLn.Accept()
		if err != nil {
			got <- err
			return
		}
		defer c.Close()
		received, err = io.CopyBuffer(io.Discard, c, make([]byte, 256<<10))
		got <- err
	}()
	conn, err := dialIn(cfg.A, target)
	if err != nil {
		return s, err
	}
	defer conn.Close()
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	// The clock starts once both agents have handshaken and joined (or
	// started relaying): what is measured is the bulk, not the set-up,
	// which only the mesh modes pay.
	if m != Plain {
		for range 2 {
			select {
			case <-ready:
			case err := <-agentErr:
				return s, fmt.Errorf("%s: an agent failed before the transfer: %w", m, err)
			case <-ctx.Done():
				return s, fmt.Errorf("%s: agents not ready: %w", m, ctx.Err())
			}
		}
	}

	cpu0, err := busyCPU()
	if err != nil {
		return s, err
	}
	proc0 := processCPU()
	start := time.Now()
	for left := cfg.Bytes; left > 0; {
		n := min(left, int64(len(buf)))
		if _, err := conn.Write(buf[:n]); err != nil {
			return s, fmt.Errorf("%s: client write: %w", m, err)
		}
		left -= n
	}
	if err := conn.CloseWrite(); err != nil {
		return s, fmt.Errorf("%s: client close: %w", m, err)
	}
	select {
	case err = <-got:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.Seconds = time.Since(start).Seconds()
	cpu1, cerr := busyCPU()
	s.CPUSeconds = cpu1 - cpu0
	s.ProcessCPU = processCPU() - proc0
	if err = errors.Join(err, cerr); err != nil {
		return s, fmt.Errorf("%s: server read: %w", m, err)
	}
	if received != cfg.Bytes {
		return s, fmt.Errorf("%s: server received %d bytes, want %d", m, received, cfg.Bytes)
	}
	// The reverse direction ends too: the server app closed, so the
	// client app sees EOF once the agents have passed it on.
	if _, err := io.Copy(io.Discard, conn); err != nil {
		return s, fmt.Errorf("%s: client read to EOF: %w", m, err)
	}
	agents.Wait()
	close(agentErr)
	for err := range agentErr {
		if err != nil {
			return s, err
		}
	}
	return s, nil
}

// serverAgent terminates one mTLS connection and carries it to the app.
func serverAgent(ctx context.Context, cfg Config, m Mode, ln net.Listener, app netip.AddrPort, ready chan<- struct{}) error {
	raw, err := ln.Accept()
	if err != nil {
		return fmt.Errorf("%s: server agent accept: %w", m, err)
	}
	up, err := dialIn(cfg.B, app)
	if err != nil {
		raw.Close()
		return err
	}
	return carry(ctx, cfg, m, raw.(*net.TCPConn), up, false, ready)
}

// clientAgent takes one captured connection and carries it over mTLS.
func clientAgent(ctx context.Context, cfg Config, m Mode, ln net.Listener, peer netip.AddrPort, ready chan<- struct{}) error {
	c, err := ln.Accept()
	if err != nil {
		return fmt.Errorf("%s: client agent accept: %w", m, err)
	}
	raw, err := dialIn(cfg.A, peer)
	if err != nil {
		c.Close()
		return err
	}
	return carry(ctx, cfg, m, raw, c.(*net.TCPConn), true, ready)
}

// carry handshakes on raw and moves bytes between it and plain until both
// directions end; it signals ready once the bytes can flow.
func carry(ctx context.Context, cfg Config, m Mode, raw, plain *net.TCPConn, client bool, ready chan<- struct{}) error {
	side := "server"
	if client {
		side = "client"
	}
	var (
		tc  *ktls.TLSConn
		err error
	)
	if client {
		tc, err = ktls.Client(ctx, raw, cfg.Client)
	} else {
		tc, err = ktls.Server(ctx, raw, cfg.Server)
	}
	if err != nil {
		raw.Close()
		plain.Close()
		return fmt.Errorf("%s: %s agent handshake: %w", m, side, err)
	}
	switch m {
	case Userspace:
		ready <- struct{}{}
		return relay(tc, plain)
	case KTLS, KTLSSockmap:
		opts := splice.Options{} // the default engine
		if m == KTLSSockmap {
			if cfg.Sockmap == nil {
				return fmt.Errorf("%s: no proven sockmap", m)
			}
			pr, err := cfg.Sockmap.Prepare(raw)
			if err != nil {
				return fmt.Errorf("%s: %s agent: sockmap prepare: %w", m, side, err)
			}
			opts = splice.Options{Mode: splice.ModeSockmap, Prepared: pr}
		}
		kc, err := tc.Offload()
		if err != nil {
			if opts.Prepared != nil {
				opts.Prepared.Abort()
			}
			return fmt.Errorf("%s: %s agent offload: %w", m, side, err)
		}
		pair, err := splice.Join(plain, kc, opts)
		if err != nil {
			return fmt.Errorf("%s: %s agent join: %w", m, side, err)
		}
		ready <- struct{}{}
		if err := pair.Wait(); err != nil {
			return fmt.Errorf("%s: %s agent byte path: %w", m, side, err)
		}
		return nil
	}
	return fmt.Errorf("mode %q has no agent", m)
}

// relay is a userspace proxy's copy loop, both ways, half-closes passed on.
func relay(tc *ktls.TLSConn, plain *net.TCPConn) error {
	errc := make(chan error, 2)
	go func() {
		_, err := io.CopyBuffer(tc, plain, make([]byte, 32<<10))
		errc <- errors.Join(err, tc.CloseWrite())
	}()
	go func() {
		_, err := io.CopyBuffer(plain, tc, make([]byte, 32<<10))
		errc <- errors.Join(err, plain.CloseWrite())
	}()
	err := errors.Join(<-errc, <-errc)
	tc.Close()
	plain.Close()
	return err
}

func listenIn(ns Netns, at netip.AddrPort) (net.Listener, error) {
	var ln net.Listener
	err := ns(func() (err error) {
		ln, err = net.Listen("tcp", at.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %v: %w", at, err)
	}
	return ln, nil
}

func dialIn(ns Netns, to netip.AddrPort) (*net.TCPConn, error) {
	var c net.Conn
	err := ns(func() (err error) {
		c, err = net.DialTimeout("tcp", to.String(), 10*time.Second)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %v: %w", to, err)
	}
	return c.(*net.TCPConn), nil
}

// busyCPU is the machine's busy CPU seconds so far (/proc/stat, all CPUs:
// user, nice, system, irq, softirq; not idle, iowait or steal).
func busyCPU() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var busy uint64
	for i, v := range f[1:8] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += n
	}
	return float64(busy) / clockTicks, nil
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100
