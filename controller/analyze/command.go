package analyze

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"

	"github.com/fibmesh/fibmesh/controller/config"
)

// Exit codes of Command.
const (
	ExitOK       = 0 // no Error finding
	ExitErrors   = 1 // at least one Error finding, decode errors included
	ExitUnusable = 2 // bad flags, or input that cannot be read at all
)

const usage = `Usage: fibctl analyze -f DIR [-o table|json|yaml]

Checks the manifests in DIR (multi-document YAML files: Istio
VirtualService, DestinationRule, ServiceEntry, PeerAuthentication,
AuthorizationPolicy and Kubernetes Service, EndpointSlice, Pod, Namespace,
Node, ServiceAccount) the way the fibmesh controller reads them, and
reports findings with stable codes: IST codes mean what istioctl analyze
means by them, FM codes are fibmesh's own. docs/analyze.md explains each
code and how to fix it.

Flags:
  -f, --filename DIR   directory to analyze (required)
  -o, --output FORMAT  table (default), json or yaml

Exit status:
  0  no Error findings (Warnings and Infos may be printed)
  1  at least one Error finding, including documents that do not decode
  2  unusable input (unreadable path, nothing that is YAML) or bad flags
`

// Command runs `fibctl analyze` with args (the arguments after
// "analyze"), writing findings to stdout and problems to stderr, and
// returns the exit code (ExitOK, ExitErrors or ExitUnusable).
func Command(args []string, stdout, stderr io.Writer) int {
	return run(args, stdout, stderr, config.LoadDir)
}

// run is Command with the directory loader as a parameter, for tests.
func run(args []string, stdout, stderr io.Writer, load func(string) (*config.Snapshot, error)) int {
	fl := flag.NewFlagSet("analyze", flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	fl.Usage = func() {}
	var dir, format string
	fl.StringVar(&dir, "f", "", "")
	fl.StringVar(&dir, "filename", "", "")
	fl.StringVar(&format, "o", "table", "")
	fl.StringVar(&format, "output", "table", "")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return ExitOK
		}
		return badUsage(stderr, err.Error())
	}
	switch {
	case fl.NArg() > 0:
		return badUsage(stderr, fmt.Sprintf("unexpected argument %q", fl.Arg(0)))
	case dir == "":
		return badUsage(stderr, "-f DIR is required")
	case !slices.Contains(Formats, format):
		return badUsage(stderr, fmt.Sprintf("unknown output format %q (want table, json or yaml)", format))
	}

	snap, err := load(dir)
	if errors.Is(err, config.ErrUnusable) {
		fmt.Fprintf(stderr, "fibctl analyze: %v\n", err)
		return ExitUnusable
	}
	findings := FromDecodeErrors(err)
	if err != nil && len(findings) == 0 {
		// Not a decode error: we cannot tell what was read.
		fmt.Fprintf(stderr, "fibctl analyze: %v\n", err)
		return ExitUnusable
	}
	findings = sortFindings(append(findings, Analyze(snap)...))
	if err := Write(stdout, format, findings); err != nil {
		fmt.Fprintf(stderr, "fibctl analyze: %v\n", err)
		return ExitUnusable
	}
	if HasErrors(findings) {
		return ExitErrors
	}
	return ExitOK
}

func badUsage(stderr io.Writer, msg string) int {
	fmt.Fprintf(stderr, "fibctl analyze: %s\nRun 'fibctl analyze --help' for usage.\n", msg)
	return ExitUnusable
}
