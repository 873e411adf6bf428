package capture

import (
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fibmesh/fibmesh/slowpath"
)

func TestConfigDefaults(t *testing.T) {
	got, err := Config{DNS: true}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Mark: slowpath.Mark, DNS: true,
		OutboundPort: slowpath.OutboundPort, InboundPlaintextPort: slowpath.InboundPlaintextPort,
		TunnelPort: slowpath.TunnelPort, DNSPort: slowpath.DNSPort,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("defaults (-want +got):\n%s", d)
	}
}

func TestConfigErrors(t *testing.T) {
	many := make([]uint16, MaxExcludedPorts+1)
	for i := range many {
		many[i] = uint16(i + 1)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"same ports", Config{OutboundPort: 15006}, "OutboundPort and InboundPlaintextPort are both 15006"},
		{"dns port 53", Config{DNS: true, DNSPort: 53}, "DNSPort is 53"},
		{"zero excluded", Config{ExcludeInboundPorts: []uint16{80, 0}}, "ExcludeInboundPorts[1] is 0"},
		{"too many", Config{ExcludeOutboundPorts: many}, "ExcludeOutboundPorts has 257 ports"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cfg.withDefaults()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("withDefaults = %v, want an error containing %q", err, tc.want)
			}
			if runtime.GOOS != "linux" {
				return // Install is Linux only
			}
			if err := Install(-1, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Install = %v, want the config error %q", err, tc.want)
			}
		})
	}
}
