package cav1

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

func TestRoundTrip(t *testing.T) {
	for _, in := range []proto.Message{
		&CertificateRequest{Namespace: "production", Pod: "reviews-v1-x", Csr: []byte{0x30, 0x82}, TtlSeconds: 3600},
		&CertificateResponse{CertChain: [][]byte{{0x30, 1}, {0x30, 2}}, TrustBundle: [][]byte{{0x30, 3}}, NotAfterUnix: 1_900_000_000},
	} {
		b, err := proto.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		out := in.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(b, out); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(in, out, protocmp.Transform()); d != "" {
			t.Errorf("round trip (-in +out):\n%s", d)
		}
	}
	if got := CertificateService_CreateCertificate_FullMethodName; got != "/fibmesh.ca.v1.CertificateService/CreateCertificate" {
		t.Errorf("method %s", got)
	}
}
