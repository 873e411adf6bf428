package analyze

import (
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"istio.io/api/networking/v1alpha3"

	"github.com/fibmesh/fibmesh/controller/config"
)

// TestLoaded: decode errors become findings beside the analyzers' own;
// input that cannot be analyzed is an error, with no findings.
func TestLoaded(t *testing.T) {
	badWeights := vs("default", "r", &v1alpha3.VirtualService{Hosts: []string{"reviews"}, Http: []*v1alpha3.HTTPRoute{{
		Route: []*v1alpha3.HTTPRouteDestination{dest("reviews", "", 60), dest("reviews", "", 60)},
	}}})
	decodeErr := &config.DecodeError{Source: config.Source{File: "x.yaml", Doc: 1}, Err: errors.New("broken")}
	unusable := errors.Join(&config.DecodeError{Source: config.Source{File: "/nope"}, Err: fmt.Errorf("open /nope: %w", config.ErrUnusable)})
	boom := errors.New("boom")
	for _, tc := range []struct {
		name      string
		snap      *config.Snapshot
		err       error
		wantCodes []string
		wantErr   error
	}{
		{name: "clean", snap: snap(reviews)},
		{name: "error finding", snap: snap(reviews, badWeights), wantCodes: []string{"FM0001"}},
		{name: "decode error and a finding", snap: snap(reviews, badWeights), err: errors.Join(decodeErr), wantCodes: []string{"IST0106", "FM0001"}},
		{name: "unusable", err: unusable, wantErr: config.ErrUnusable},
		{name: "not a decode error", err: boom, wantErr: boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := Loaded(tc.snap, tc.err)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Loaded error = %v, want %v", err, tc.wantErr)
			}
			var codes []string
			for _, f := range fs {
				codes = append(codes, f.Code)
			}
			if d := cmp.Diff(tc.wantCodes, codes); d != "" {
				t.Errorf("Loaded finding codes (-want +got):\n%s\n%v", d, fs)
			}
		})
	}
}
