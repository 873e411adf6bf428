package main

import (
	"bytes"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/fibmesh/fibmesh/agent/admin"
)

func TestOffloadFlows(t *testing.T) {
	srv := httptest.NewServer(admin.Handler(fakeAgent{}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	for _, tt := range []struct {
		name        string
		args        []string
		code        int
		contains    []string
		notContains []string
	}{
		{"table", []string{"--offload", "--admin", u.Host}, 0, []string{
			"CONN  POD          TUNNEL",
			"1     bank/teller  10.200.1.11:40000 <-> 10.200.2.11:15008  forward  drop     50000    70.0MiB",
			"spiffe://cluster.local/ns/bank/sa/teller (3)", "spiffe://cluster.local/ns/bank/sa/vault (4)", "revoked", "1.234ms",
			"3     bank/vault   10.200.1.12:15008 <-> 10.200.2.12:41000  forward  forward  10", "- (0)",
		}, nil},
		{"by pod", []string{"--admin", u.Host, "--pod", "bank/vault", "--offload"}, 0, []string{"bank/vault"}, []string{"bank/teller"}},
		{"by conn, json", []string{"--offload", "--conn=1", "--admin", u.Host, "-o", "json"}, 0, []string{
			`"connID": 1`, `"localIdentityID": 3`, `"action": "drop"`, `"firstDropMs": 1.234`, `"direction": "in"`,
		}, []string{`"connID": 3`}},
		{"yaml", []string{"--offload", "--admin", u.Host, "-o", "yaml"}, 0, []string{"connID: 3", "state: offloaded"}, nil},
		{"bad conn", []string{"--offload", "--conn", "x", "--admin", u.Host}, 2, []string{`--conn "x": want a connection id`}, nil},
		{"takes no args", []string{"--offload", "--admin", u.Host, "x"}, 2, []string{"too many arguments"}, nil},
		{"no agent", []string{"--offload", "--admin", "127.0.0.1:1"}, 1, []string{"agent admin API at 127.0.0.1:1", "is fibmesh-agent running there"}, nil},
		{"help", []string{"--offload", "--help"}, 0, []string{"fibctl flows --offload: the XDP flow entries", "-admin string"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkRun(t, append([]string{"flows"}, tt.args...), tt.code, tt.contains, tt.notContains)
		})
	}
}

// fibctl flows without --offload is the flow map's listing: run's, not
// dispatch's; the global flags move after "flows" only with --offload.
func TestFlowsDispatch(t *testing.T) {
	var out, errb bytes.Buffer
	if _, ok := dispatch([]string{"--node", "fm-node1", "flows"}, &out, &errb); ok {
		t.Error("dispatch took fibctl --node N flows (the flow map's listing)")
	}
	if _, ok := dispatch([]string{"flows"}, &out, &errb); ok {
		t.Error("dispatch took fibctl flows (the flow map's listing)")
	}
	for _, tt := range []struct{ in, want []string }{
		{[]string{"--node", "fm-node1", "flows", "--offload"}, []string{"flows", "--node", "fm-node1", "--offload"}},
		{[]string{"--node", "fm-node1", "-o", "json", "flows", "-offload", "--pod", "a/b"}, []string{"flows", "--node", "fm-node1", "-o", "json", "-offload", "--pod", "a/b"}},
		{[]string{"--node", "fm-node1", "-o", "json", "flows"}, []string{"--node", "fm-node1", "-o", "json", "flows"}},
	} {
		if got := globalFlagsLast(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("globalFlagsLast(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// checkRun runs fibctl with args through dispatch and checks its exit
// code and that its output (stdout and stderr) holds every string of
// contains and none of notContains.
func checkRun(t *testing.T, args []string, code int, contains, notContains []string) {
	t.Helper()
	var out, errb bytes.Buffer
	got, ok := dispatch(args, &out, &errb)
	if !ok {
		t.Fatalf("dispatch did not take fibctl %s", strings.Join(args, " "))
	}
	text := out.String() + errb.String()
	if got != code {
		t.Fatalf("exit %d, want %d\n%s", got, code, text)
	}
	for _, s := range contains {
		if !strings.Contains(text, s) {
			t.Errorf("output lacks %q:\n%s", s, text)
		}
	}
	for _, s := range notContains {
		if strings.Contains(text, s) {
			t.Errorf("output has %q:\n%s", s, text)
		}
	}
}
