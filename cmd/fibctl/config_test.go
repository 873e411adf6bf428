package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fibmesh/fibmesh/controller/xds"
	"github.com/fibmesh/fibmesh/internal/yamldoc"
)

// fibctlMain runs a command line that main dispatches before parsing the
// FIB flags, the way main does, without exiting.
func fibctlMain(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code, ok := dispatch(args, &out, &errOut)
	if !ok {
		return -1, "", "fibctl " + strings.Join(args, " ") + " was not dispatched: run would parse it as a FIB command"
	}
	return code, out.String(), errOut.String()
}

// TestConfigUsageErrors: a missing or unknown config subcommand, and bad
// flags or arguments of config status, are usage errors (exit 2) that
// name the mistake and what is wanted, with nothing on stdout.
func TestConfigUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string // substrings of stderr
	}{
		{"no subcommand", []string{"config"}, []string{"missing subcommand", "want status"}},
		{"unknown subcommand", []string{"config", "stats"}, []string{`unknown subcommand "stats"`, "want status"}},
		{"FIB flag before config", []string{"config", "--node", "node1", "status"}, []string{`unknown subcommand "--node"`, "want status"}},
		{"bad -o", []string{"config", "status", "-o", "xml"}, []string{`-o "xml"`, "table, json or yaml"}},
		{"unknown flag", []string{"config", "status", "--controler", "http://x"}, []string{"-controler"}},
		{"two nodes", []string{"config", "status", "node1", "node2"}, []string{"at most one NODE", `"node1" "node2"`}},
		{"two nodes around a flag", []string{"config", "status", "node1", "-o", "json", "node2"}, []string{"at most one NODE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := fibctlMain(tt.args...)
			if code != 2 {
				t.Errorf("fibctl %s: exit %d, want 2 (stderr %q)", strings.Join(tt.args, " "), code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("fibctl %s: stderr %q, want it to mention %q", strings.Join(tt.args, " "), stderr, w)
				}
			}
			if stdout != "" {
				t.Errorf("fibctl %s wrote %q to stdout, want nothing", strings.Join(tt.args, " "), stdout)
			}
		})
	}
}

// TestUsageNamesConfigStatus: fibctl --help tells of config status.
func TestUsageNamesConfigStatus(t *testing.T) {
	for _, w := range []string{"config status [--controller URL] [-o FORMAT] [NODE]", "fibctl config status --controller"} {
		if !strings.Contains(usage, w) {
			t.Errorf("fibctl usage does not mention %q", w)
		}
	}
	if code, stdout, _ := fibctlMain("config", "--help"); code != 0 || !strings.Contains(stdout, "fibctl config status") {
		t.Errorf("fibctl config --help: exit %d, stdout %q; want 0 and the usage", code, stdout)
	}
}

var connected = time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)

// syncedNode is a node with every type ACKed at the version sent.
func syncedNode(name string) xds.NodeStatus {
	ns := xds.NodeStatus{Node: name, InModel: true, Streams: 1, ConnectedSince: connected, LastConvergence: 1500 * time.Microsecond}
	for _, t := range xds.Types {
		v := xds.ShortType(t) + "-3"
		ns.Types = append(ns.Types, xds.TypeStatus{TypeURL: t, Sent: v, Acked: v})
	}
	return ns
}

// withType returns ns with its type of short name typ changed by f.
func withType(ns xds.NodeStatus, typ string, f func(*xds.TypeStatus)) xds.NodeStatus {
	ns.Types = append([]xds.TypeStatus(nil), ns.Types...)
	for i := range ns.Types {
		if xds.ShortType(ns.Types[i].TypeURL) == typ {
			f(&ns.Types[i])
		}
	}
	return ns
}

// controllerServing is a controller's monitoring endpoint serving all as
// its config status.
func controllerServing(t *testing.T, all []xds.NodeStatus) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != xds.StatusPath {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(all)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// tableRows returns the table's rows, each split into its columns, keyed
// by node.
func tableRows(t *testing.T, out string) map[string][]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if want := []string{"NODE", "STREAMS", "CDS", "EDS", "LDS", "RDS", "SDS", "FDS", "CONVERGED"}; !cmp.Equal(strings.Fields(lines[0]), want) {
		t.Fatalf("table header %q, want columns %v", lines[0], want)
	}
	rows := map[string][]string{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 9 {
			break // the NACK lines below the table
		}
		rows[f[0]] = f[1:]
	}
	return rows
}

func TestConfigStatus(t *testing.T) {
	nacked := withType(syncedNode("node2"), "RDS", func(ts *xds.TypeStatus) {
		ts.Sent = "RDS-4"
		ts.NACK = &xds.NACK{Version: "RDS-4", Reason: "weight 50 refused by policy", At: connected.Add(time.Minute)}
		ts.NACKs = 1
	})
	stale := withType(syncedNode("node2"), "FDS", func(ts *xds.TypeStatus) { ts.Sent = "FDS-4" })
	gone := stale
	gone.Streams = 0 // disconnected: not counted in the exit status
	gone.ConnectedSince = time.Time{}

	t.Run("synced table", func(t *testing.T) {
		url := controllerServing(t, []xds.NodeStatus{syncedNode("node1"), syncedNode("node2")})
		code, stdout, stderr := fibctlMain("config", "status", "--controller", url)
		if code != 0 {
			t.Fatalf("exit %d, want 0; stderr %q", code, stderr)
		}
		rows := tableRows(t, stdout)
		want := []string{"1", "SYNCED", "SYNCED", "SYNCED", "SYNCED", "SYNCED", "SYNCED", "1.5ms"}
		for _, n := range []string{"node1", "node2"} {
			if d := cmp.Diff(want, rows[n]); d != "" {
				t.Errorf("row of %s (-want +got):\n%s\ntable:\n%s", n, d, stdout)
			}
		}
	})

	t.Run("json and yaml", func(t *testing.T) {
		all := []xds.NodeStatus{syncedNode("node1"), nacked}
		url := controllerServing(t, all)
		for _, format := range []string{"json", "yaml"} {
			// The flag after NODE is taken too.
			code, stdout, stderr := fibctlMain("config", "status", "--controller", url+"/", "node2", "-o", format)
			if code != 1 {
				t.Errorf("-o %s: exit %d, want 1 (node2 NACKed); stderr %q", format, code, stderr)
			}
			var got []xds.NodeStatus
			var err error
			if format == "json" {
				err = json.Unmarshal([]byte(stdout), &got)
			} else {
				err = yamldoc.UnmarshalStrict([]byte(stdout), &got)
			}
			if err != nil {
				t.Fatalf("-o %s: %v in\n%s", format, err, stdout)
			}
			if d := cmp.Diff([]xds.NodeStatus{nacked}, got); d != "" {
				t.Errorf("-o %s node2 (-want +got):\n%s", format, d)
			}
		}
	})

	t.Run("NACK", func(t *testing.T) {
		url := controllerServing(t, []xds.NodeStatus{syncedNode("node1"), nacked})
		code, stdout, stderr := fibctlMain("config", "status", "--controller", url)
		if code != 1 {
			t.Errorf("exit %d, want 1; stderr %q", code, stderr)
		}
		rows := tableRows(t, stdout)
		if got := rows["node2"][4]; got != "NACKED" {
			t.Errorf("node2 RDS = %s, want NACKED\n%s", got, stdout)
		}
		if got := rows["node1"][4]; got != "SYNCED" {
			t.Errorf("node1 RDS = %s, want SYNCED\n%s", got, stdout)
		}
		want := "node2 RDS: version RDS-4 NACKed at 2026-05-04T10:01:00Z: weight 50 refused by policy"
		if !strings.Contains(stdout, want+"\n") {
			t.Errorf("output lacks the NACK line %q:\n%s", want, stdout)
		}
	})

	tests := []struct {
		name     string
		all      []xds.NodeStatus
		args     []string
		wantCode int
		want     string // in stdout
		wantErr  string // in stderr
	}{
		{"stale", []xds.NodeStatus{syncedNode("node1"), stale}, nil, 1, "STALE", ""},
		{"stale node filtered out", []xds.NodeStatus{syncedNode("node1"), stale}, []string{"node1"}, 0, "node1", ""},
		{"stale node filtered in", []xds.NodeStatus{syncedNode("node1"), stale}, []string{"node2"}, 1, "STALE", ""},
		{"disconnected node not counted", []xds.NodeStatus{syncedNode("node1"), gone}, nil, 0, "node2", ""},
		{"no nodes", nil, []string{"-o", "json"}, 0, "[]", ""},
		{"unknown node", []xds.NodeStatus{syncedNode("node1")}, []string{"node9"}, 1, "", `node "node9" has never connected`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := controllerServing(t, tt.all)
			code, stdout, stderr := fibctlMain(append([]string{"config", "status", "--controller", url}, tt.args...)...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; stdout %q stderr %q", code, tt.wantCode, stdout, stderr)
			}
			if !strings.Contains(stdout, tt.want) {
				t.Errorf("stdout %q, want %q in it", stdout, tt.want)
			}
			if !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("stderr %q, want %q in it", stderr, tt.wantErr)
			}
		})
	}
}

// TestConfigStatusUnreachable: a controller that cannot be reached, or
// does not serve the status, is exit status 2 with a message saying so.
func TestConfigStatusUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now

	notFound := httptest.NewServer(http.NotFoundHandler())
	defer notFound.Close()
	garbage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>")) }))
	defer garbage.Close()

	for _, tt := range []struct {
		name, url string
		want      []string
	}{
		{"nothing listening", closed, []string{"connection refused", "is fibmesh-controller running?", "--monitoring-listen"}},
		{"not a controller", notFound.URL, []string{xds.StatusPath, "404"}},
		{"not JSON", garbage.URL, []string{"decoding the status"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := fibctlMain("config", "status", "--controller", tt.url)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr %q", code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q, want it to mention %q", stderr, w)
				}
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
		})
	}
}
