package fibv1

import (
	"fmt"

	"google.golang.org/protobuf/types/known/structpb"
)

// NodeMetadataNICTLS is the key, in the xDS node metadata an agent sends
// on its stream's first request, of a bool: whether the node's NIC
// offloads kTLS record crypto (mainline device offload: TLS 1.2
// AES-128-GCM), as detected from its NIC profile or forced by the
// agent's --nic-ktls-offload. The controller copies it to
// Route.nic_tls_offload of every route to that node. Absent means false.
const NodeMetadataNICTLS = "fibmesh.nic_ktls_offload"

// NICTLSMetadata returns the node metadata that reports offload.
func NICTLSMetadata(offload bool) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{NodeMetadataNICTLS: structpb.NewBoolValue(offload)}}
}

// NICTLSFromMetadata reads the NodeMetadataNICTLS key of an xDS node's
// metadata: reported is false when the key is absent (an agent that says
// nothing: no offload). A value that is not a bool is an error naming
// the key.
func NICTLSFromMetadata(md *structpb.Struct) (offload, reported bool, err error) {
	v, ok := md.GetFields()[NodeMetadataNICTLS]
	if !ok {
		return false, false, nil
	}
	b, ok := v.GetKind().(*structpb.Value_BoolValue)
	if !ok {
		return false, false, fmt.Errorf("node metadata %s: %v is not a bool: want true or false", NodeMetadataNICTLS, v.AsInterface())
	}
	return b.BoolValue, true, nil
}
