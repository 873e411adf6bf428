package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/fibmesh/fibmesh/lab/echo"
)

const udpEchoUsage = `fibmesh-lab app udp-echo [--port P] [--addr IP] [--name SERVICE] [--version V]

udp-echo answers every UDP datagram it gets on port P with one datagram
of JSON: service, version, pod, namespace, node (as app echo takes them:
flags, SERVICE_NAME, SERVICE_VERSION, POD_NAME, POD_NAMESPACE,
NODE_NAME), the sender's address as the app saw it (peer), the payload
(data, base64, its first 768 bytes) and its length (bytes). A client
behind a service VIP sees which backend answered, and the backend sees
the client's own address. Needs no root.

Example (a container of a Pod):
  command: ["fibmesh-lab", "app", "udp-echo", "--port", "5353"]
From a pod: bash -c 'exec 3<>/dev/udp/10.96.0.10/53; echo hi >&3; timeout 2 head -c 80 <&3'`

// runUDPEcho is fibmesh-lab app udp-echo (args after "udp-echo").
func runUDPEcho(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	listen, info, err := parseUDPEcho(args, stdout)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		return fmt.Errorf("app udp-echo: %w", err)
	}
	log.Info("udp echo listening", "addr", pc.LocalAddr().String(), "service", info.Service, "version", info.Version,
		"pod", info.Pod, "namespace", info.Namespace, "node", info.Node)
	return echo.ServeUDP(ctx, pc, info)
}

// parseUDPEcho parses app udp-echo's flags; on --help it prints its
// usage to stdout and returns flag.ErrHelp.
func parseUDPEcho(args []string, stdout io.Writer) (listen string, info echo.Info, err error) {
	fs := flag.NewFlagSet("fibmesh-lab app udp-echo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var af appFlags
	af.register(fs, "UDP", 5353)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "fibmesh-lab app udp-echo: a UDP echo that says who answered.\n\nUsage:\n  %s\n\nFlags:\n", udpEchoUsage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return "", info, err
		}
		return "", info, usageError{fmt.Errorf("app udp-echo: %w", err)}
	}
	if fs.NArg() > 0 {
		return "", info, usageError{fmt.Errorf("app udp-echo: unexpected arguments %q", fs.Args())}
	}
	return af.listen("app udp-echo")
}
