// Package cav1 holds the CA's CSR service (fibmesh.ca.v1.CertificateService)
// the controller serves node agents on its xDS gRPC port: ca.proto and its
// generated Go, committed so that `go build` needs no protoc. `make
// generate` rebuilds it. The service is implemented by controller/ca.
package cav1

//go:generate sh -c "protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --plugin=protoc-gen-go-grpc=$(go tool -n protoc-gen-go-grpc) --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative ca.proto"
