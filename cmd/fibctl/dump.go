package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fibmesh/fibmesh/agent/admin"
	"github.com/fibmesh/fibmesh/internal/netns"
	"github.com/fibmesh/fibmesh/internal/output"
)

const configDumpUsage = `fibctl config dump: the xDS config a node's agent accepted, read from
its admin API (/config_dump).

Usage:
  fibctl config dump [--node NETNS] [--admin ADDR] [-o table|json|yaml] [TYPE]

TYPE is CDS, EDS, LDS, RDS, SDS or FDS (or a type URL). The table lists,
per type, the version accepted, the number of resources, when, and the
last refusal (NACK) if it came after; with TYPE, the resources by name.
-o json|yaml gives everything, resources as protojson.

--node is the node's network namespace (e.g. fm-node1): fibctl connects
to the admin API from inside it. Without --node, it connects in the
current namespace.

Flags:
`

const certsUsage = `fibctl certs: the SVIDs of the pods enrolled on a node's agent, read from
its admin API (/pods).

Usage:
  fibctl certs [--node NETNS] [--admin ADDR] [-o table|json|yaml]

For each enrolled pod: its SPIFFE ID, the certificate's serial, expiry
and time left, and why it has none where that is the case.

Flags:
`

// adminFlags are the flags of the commands that read an agent's admin
// API.
type adminFlags struct {
	node, addr string
	format     output.Format
	args       []string
}

// parseAdminFlags parses args (flags may follow the positional
// arguments); ok false means exit with code.
func parseAdminFlags(name, usage string, args []string, maxArgs int, stderr io.Writer) (f adminFlags, code int, ok bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	fs.StringVar(&f.node, "node", "", "the node's network namespace (/run/netns/NETNS); default: the current one")
	fs.StringVar(&f.addr, "admin", admin.DefaultListen, "the agent's admin API address (its --admin-listen)")
	formatName := fs.String("o", string(output.Table), output.FlagUsage)
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return f, 0, false
			}
			return f, 2, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			f.args = append(f.args, rest...)
			break
		}
		f.args, args = append(f.args, rest[0]), rest[1:]
	}
	var err error
	if f.format, err = output.Parse(*formatName); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return f, 2, false
	}
	if len(f.args) > maxArgs {
		fmt.Fprintf(stderr, "%s: too many arguments %q (see --help)\n", name, f.args)
		return f, 2, false
	}
	if f.node != "" && strings.ContainsRune(f.node, '/') {
		fmt.Fprintf(stderr, "%s: --node %q: want a network namespace name as in /run/netns (e.g. fm-node1)\n", name, f.node)
		return f, 2, false
	}
	return f, 0, true
}

// adminGet GETs path (with query) from the agent's admin API, from
// inside f.node's network namespace when it is set, and decodes the JSON
// answer into v.
func adminGet(f adminFlags, path string, query url.Values, v any) error {
	dial := (&net.Dialer{Timeout: 5 * time.Second}).DialContext
	where := "the current network namespace"
	if f.node != "" {
		nsPath := filepath.Join("/run/netns", f.node)
		where = "network namespace " + f.node
		if _, err := os.Stat(nsPath); err != nil {
			return fmt.Errorf("--node %s: %w (list them with ip netns)", f.node, err)
		}
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			// The socket is made on a thread inside the namespace and
			// stays there; the thread is switched back afterwards.
			err := netns.DoPath(nsPath, func() (err error) {
				c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dial}}
	u := url.URL{Scheme: "http", Host: f.addr, Path: path, RawQuery: query.Encode()}
	resp, err := client.Get(u.String())
	if err != nil {
		return fmt.Errorf("agent admin API at %s in %s: %w (is fibmesh-agent running there, with --admin-listen %s?)", f.addr, where, err, f.addr)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("agent admin API %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("agent admin API %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("agent admin API %s: %w", path, err)
	}
	return nil
}

// configDump is fibctl config dump: it returns the exit status.
func configDump(args []string, stdout, stderr io.Writer) int {
	f, code, ok := parseAdminFlags("fibctl config dump", configDumpUsage, args, 1, stderr)
	if !ok {
		return code
	}
	q := url.Values{}
	if len(f.args) == 1 {
		q.Set("type", f.args[0])
	}
	var d admin.ConfigDump
	if err := adminGet(f, "/config_dump", q, &d); err != nil {
		fmt.Fprintf(stderr, "fibctl config dump: %v\n", err)
		return 1
	}
	if d.Configs == nil {
		d.Configs = []admin.TypeConfig{}
	}
	var err error
	if len(f.args) == 1 && f.format == output.Table {
		err = output.Write(stdout, f.format, d, func(w io.Writer) { resourceTable(w, d) })
	} else {
		err = output.Write(stdout, f.format, d, func(w io.Writer) { typeTable(w, d) })
	}
	if err != nil {
		fmt.Fprintf(stderr, "fibctl config dump: %v\n", err)
		return 1
	}
	return 0
}

func typeTable(w io.Writer, d admin.ConfigDump) {
	fmt.Fprintln(w, "TYPE\tVERSION\tRESOURCES\tUPDATED\tNACK")
	var nacks []string
	for _, c := range d.Configs {
		updated, nack := "-", "-"
		if c.LastUpdated != nil {
			updated = c.LastUpdated.Local().Format(time.TimeOnly)
		}
		if c.ErrorState != nil {
			nack = c.ErrorState.VersionInfo
			nacks = append(nacks, fmt.Sprintf("%s %s refused: %s", c.Type, c.ErrorState.VersionInfo, c.ErrorState.Details))
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", c.Type, dash(c.VersionInfo), len(c.Resources), updated, nack)
	}
	for _, n := range nacks {
		fmt.Fprintln(w, n)
	}
}

func resourceTable(w io.Writer, d admin.ConfigDump) {
	fmt.Fprintln(w, "TYPE\tVERSION\tNAME")
	var nacks []string
	for _, c := range d.Configs {
		for _, r := range c.Resources {
			fmt.Fprintf(w, "%s\t%s\t%s\n", c.Type, dash(c.VersionInfo), r.Name)
		}
		if len(c.Resources) == 0 {
			fmt.Fprintf(w, "%s\t%s\t%s\n", c.Type, dash(c.VersionInfo), "(none)")
		}
		if c.ErrorState != nil {
			nacks = append(nacks, fmt.Sprintf("%s %s refused: %s", c.Type, c.ErrorState.VersionInfo, c.ErrorState.Details))
		}
	}
	for _, n := range nacks {
		fmt.Fprintln(w, n)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// certsCommand is fibctl certs: it returns the exit status.
func certsCommand(args []string, stdout, stderr io.Writer) int {
	f, code, ok := parseAdminFlags("fibctl certs", certsUsage, args, 0, stderr)
	if !ok {
		return code
	}
	var pods []admin.PodInfo
	if err := adminGet(f, "/pods", nil, &pods); err != nil {
		fmt.Fprintf(stderr, "fibctl certs: %v\n", err)
		return 1
	}
	if pods == nil {
		pods = []admin.PodInfo{}
	}
	now := time.Now()
	err := output.Write(stdout, f.format, pods, func(w io.Writer) {
		fmt.Fprintln(w, "POD\tIDENTITY\tSERIAL\tNOT AFTER\tEXPIRES IN\tSTATUS")
		for _, p := range pods {
			serial, notAfter, left, st := "-", "-", "-", "ok"
			if p.SVID != nil {
				serial, notAfter = p.SVID.Serial, p.SVID.NotAfter.Local().Format(time.DateTime)
				left = p.SVID.NotAfter.Sub(now).Round(time.Second).String()
				if !now.Before(p.SVID.NotAfter) {
					st = "EXPIRED"
				}
			} else {
				st = "no SVID"
			}
			if p.Error != "" {
				st += ": " + p.Error
			}
			fmt.Fprintf(w, "%s/%s\t%s\t%s\t%s\t%s\t%s\n", p.Namespace, p.Name, dash(p.Identity), serial, notAfter, left, st)
		}
	})
	if err != nil {
		fmt.Fprintf(stderr, "fibctl certs: %v\n", err)
		return 1
	}
	return 0
}
