package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestAgentArgs(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		want    agentArgs
		wantErr string
	}{
		{name: "one node", in: []string{"node1:--nic-ktls-offload=on"}, want: agentArgs{"node1": {"--nic-ktls-offload=on"}}},
		{name: "every node, then one", in: []string{"--nic-ktls-offload=on", "node2:--nic-ktls-offload=off", "node2:--log-level=debug"},
			want: agentArgs{"*": {"--nic-ktls-offload=on"}, "node2": {"--nic-ktls-offload=off", "--log-level=debug"}}},
		{name: "no argument", in: []string{"node1"}, wantErr: `"node1": want [NODE:]ARG`},
		{name: "not a flag", in: []string{"node1:on"}, wantErr: `the argument "on" is no flag`},
		{name: "empty node", in: []string{":--x"}, wantErr: `want [NODE:]ARG`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a agentArgs
			var err error
			for _, v := range tt.in {
				if err = a.Set(v); err != nil {
					break
				}
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v; want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, a); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}
