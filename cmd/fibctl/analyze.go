package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/fibmesh/fibmesh/controller/analyze"
	"github.com/fibmesh/fibmesh/controller/config"
	"github.com/fibmesh/fibmesh/internal/output"
)

// Exit codes of fibctl analyze.
const (
	analyzeOK       = 0 // no Error finding
	analyzeErrors   = 1 // at least one Error finding, decode errors included
	analyzeUnusable = 2 // bad flags, or input that cannot be read at all
)

const analyzeUsage = `Usage: fibctl analyze -f PATH [-f PATH ...] [-o table|json|yaml]

Checks manifests (multi-document YAML files: Istio VirtualService,
DestinationRule, ServiceEntry, PeerAuthentication, AuthorizationPolicy
and Kubernetes Service, EndpointSlice, Pod, Namespace, Node,
ServiceAccount) the way the fibmesh controller reads them, and reports
findings with stable codes: IST codes mean what istioctl analyze means by
them, FM codes are fibmesh's own. Objects of other kinds are listed as
skipped (FM0005). docs/analyze.md explains each code and how to fix it.

Everything given is analyzed together, as one cluster: a reference to an
object in none of the paths is reported as not found.

Flags:
  -f, --filename PATH  a directory (its .yaml, .yml and .json files, recursively)
                       or a file; repeat to analyze several together (required)
  -o, --output FORMAT  table (default), json or yaml

Exit status:
  0  no Error findings (Warnings and Infos may be printed)
  1  at least one Error finding, including documents that do not decode
  2  unusable input (unreadable path, a directory with no YAML file) or bad flags
`

// analyzeCommand runs `fibctl analyze` with args (the arguments after
// "analyze"), writing findings to stdout and problems to stderr, and
// returns the exit status.
func analyzeCommand(args []string, stdout, stderr io.Writer) int {
	return runAnalyze(args, stdout, stderr, analyze.LoadPath)
}

// paths is a flag that may be given several times.
type paths []string

func (p *paths) String() string     { return strings.Join(*p, ",") }
func (p *paths) Set(v string) error { *p = append(*p, v); return nil }

// runAnalyze is analyzeCommand with the loader of one path as a
// parameter, for tests.
func runAnalyze(args []string, stdout, stderr io.Writer, load func(string) (*config.Snapshot, error)) int {
	fl := flag.NewFlagSet("analyze", flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	fl.Usage = func() {}
	var in paths
	var formatName string
	fl.Var(&in, "f", "")
	fl.Var(&in, "filename", "")
	fl.StringVar(&formatName, "o", string(output.Table), "")
	fl.StringVar(&formatName, "output", string(output.Table), "")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, analyzeUsage)
			return analyzeOK
		}
		return analyzeBadUsage(stderr, err.Error())
	}
	format, ferr := output.Parse(formatName)
	switch {
	case fl.NArg() > 0:
		return analyzeBadUsage(stderr, fmt.Sprintf("unexpected argument %q", fl.Arg(0)))
	case len(in) == 0:
		return analyzeBadUsage(stderr, "-f PATH is required")
	case ferr != nil:
		return analyzeBadUsage(stderr, fmt.Sprintf("unknown output format %q (want table, json or yaml)", formatName))
	}

	findings, err := analyze.Loaded(analyze.LoadPaths(in, load))
	if err != nil {
		fmt.Fprintf(stderr, "fibctl analyze: %v\n", err)
		return analyzeUnusable
	}
	if err := analyze.Write(stdout, string(format), findings); err != nil {
		fmt.Fprintf(stderr, "fibctl analyze: %v\n", err)
		return analyzeUnusable
	}
	if analyze.HasErrors(findings) {
		return analyzeErrors
	}
	return analyzeOK
}

func analyzeBadUsage(stderr io.Writer, msg string) int {
	fmt.Fprintf(stderr, "fibctl analyze: %s\nRun 'fibctl analyze --help' for usage.\n", msg)
	return analyzeUnusable
}
