# fibmesh: see README.md. Every target that needs root or packages says so
# and installs what is missing (Debian/Ubuntu, apt-get).

GO      ?= go
BIN     ?= bin
PKGS    ?= ./...
TESTFLAGS ?= -race -count=1 -timeout 30m

CMDS := fibmesh-agent fibmesh-lab fibctl fibmesh-controller fibmesh-cni

.PHONY: all build kube-apiserver test unit generate check-generate demo demo-down bench bench-fib bench-fds bench-xds bench-ktls bench-splice bench-l4 bench-l7 bench-offload clean deps deps-bpf deps-proto fmt vet help vmtest

all: build

help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

deps: ## install the packages tests and the lab need (apt-get, as root)
	@hack/deps.sh runtime

deps-bpf: ## install clang/llvm/libbpf-dev/bpftool to regenerate BPF objects
	@hack/deps.sh bpf

deps-proto: ## install protoc to regenerate the FDS protobuf Go
	@hack/deps.sh proto

build: ## build the binaries into bin/
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

generate: deps-bpf deps-proto ## rebuild the bpf2go objects (clang) and the FDS protobuf Go (protoc)
	$(GO) generate ./xdp/... ./api/...

check-generate: ## fail if committed generated files differ from a fresh generate (each skipped without its tool)
	@hack/check-generate.sh

.PHONY: manifests image image-binaries

manifests: ## copy the Istio CRDs fibmesh reads from the istio.io/api module go.mod pins into deploy/crds (hack/manifests; its test fails on drift)
	$(GO) run ./hack/manifests

IMAGE ?= ghcr.io/fibmesh/fibmesh:latest

image: ## build the image as IMAGE with podman or docker, whichever engine runs: host-built static binaries FROM scratch, pulling nothing (hack/image.sh; the Dockerfile is for docker build .); fails saying why when no engine runs
	@hack/image.sh build $(IMAGE)

image-binaries: ## build the image's static binaries (CGO_ENABLED=0, the Dockerfile's ARG CMDS) into bin/static, no engine needed
	@GO=$(GO) hack/image.sh binaries $(BIN)/static

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfel.go$$')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

# The real API server and etcd of internal/kubetest's tests: make test
# hands them to the tests in FIBMESH_KUBE_APISERVER and FIBMESH_ETCD (a
# test that needs them and finds none skips, or fails under CI).
KUBE_APISERVER ?= $(abspath $(BIN))/kube-apiserver
ETCD           ?= $(shell command -v etcd || echo /usr/bin/etcd)

kube-apiserver: ## build the tests' real kube-apiserver from k8s.io/kubernetes (hack/kube-apiserver; cached per version) into bin/, install etcd-server (apt-get)
	@hack/deps.sh kube
	@hack/kube-apiserver/build.sh $(KUBE_APISERVER)

test: deps kube-apiserver fmt vet check-generate ## run every test (root: BPF, lab and integration tests; a real kube-apiserver + etcd)
	@hack/bpffs.sh
	FIBMESH_KUBE_APISERVER=$(KUBE_APISERVER) FIBMESH_ETCD=$(ETCD) $(GO) test $(TESTFLAGS) $(PKGS)

# make vmtest: packages (each PATTERN or PATTERN:REGEXP, that package's own
# -test.run), -test.run filter, more test binary flags, more hack/vmtest
# flags (-timeout, -smp, -keep, ...). Empty VMTEST_PKGS means hack/vmtest's
# default list (with ./e2e:^TestOffload: the lab in the VM).
VMTEST_PKGS  ?=
VMTEST_RUN   ?=
VMTEST_ARGS  ?=
VMTEST_FLAGS ?=

vmtest: ## kernel tests (kTLS, sockmap, the e2e offload lab) in a qemu VM on Debian's stock kernel; VMTEST_PKGS, VMTEST_RUN (installs qemu-system-x86, busybox-static)
	@hack/deps.sh vmtest
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/vmtest ./hack/vmtest
	VMTEST_PKGS='$(VMTEST_PKGS)' VMTEST_RUN='$(VMTEST_RUN)' VMTEST_ARGS='$(VMTEST_ARGS)' GO='$(GO)' $(BIN)/vmtest $(VMTEST_FLAGS)

unit: ## tests that need no root (root-only tests skip)
	$(GO) test -count=1 $(PKGS)

demo: deps build ## run examples/ in the lab with the controller and an agent per node; show FIB routes, an edit reaching them, traffic crossing nodes in XDP
	@hack/bpffs.sh
	$(BIN)/fibmesh-lab demo -f examples --bin $(BIN)

demo-down: ## stop everything the demo runs (kubelet, pods, controller, agents) and remove the lab
	@if [ -x $(BIN)/fibmesh-lab ]; then $(BIN)/fibmesh-lab down; else $(GO) run ./cmd/fibmesh-lab down; fi

bench-fib: deps build ## cross-node 64-byte UDP packet rate: XDP FIB vs kernel forwarding
	@hack/bpffs.sh
	$(GO) run ./perf/cmd/bench-fib --bin $(BIN)

bench-fds: deps build ## FDS propagation in the lab: a Pod written to the manifest dir -> its route in the remote node's XDP FIB, p50/p99 over 50 rounds
	@hack/bpffs.sh
	$(GO) run ./perf/cmd/bench-fds --bin $(BIN) $(BENCH_FDS_FLAGS)

# 5,000 agents first (how cost grows), then 1,000: the last line is the gate's.
BENCH_XDS_FLAGS ?= --agents 5000,1000 --timeout 10m

bench-xds: ## VirtualService edits and endpoint churn reaching 5,000 then 1,000 simulated agents (1,000 services, 10,000 pods): convergence p50/p99, RSS, bytes per edit
	$(GO) build -o $(BIN)/bench-xds ./perf/cmd/bench-xds
	$(BIN)/bench-xds $(BENCH_XDS_FLAGS)

bench-ktls: ## bulk transfer over veth: kTLS + kernel byte path vs crypto/tls relayed in userspace vs plaintext (in the VM where this kernel lacks kTLS)
	@hack/bench-ktls.sh

bench-splice: ## byte path engines side by side (splice, sockmap, userspace copy): throughput and CPU per GiB; kTLS rows in the VM
	@hack/bpffs.sh
	$(GO) test -run '^$$' -bench Engines -benchtime 1024x ./fastpath/splice/
	$(MAKE) --no-print-directory vmtest VMTEST_PKGS=./fastpath/splice VMTEST_RUN='^$$' VMTEST_ARGS='-test.bench=Engines/ktls -test.benchtime=64x'

bench-l4: deps build ## L4 throughput, conn/s and proxy CPU per GB across nodes: direct vs fibmesh mTLS vs an haproxy mTLS pair (installs iperf3, haproxy)
	@hack/deps.sh bench-l4
	@hack/bpffs.sh
	$(GO) build -o $(BIN)/bench-l4 ./perf/cmd/bench-l4
	$(BIN)/bench-l4 --bin $(BIN) $(BENCH_L4_FLAGS)

bench-l7: deps build ## L7 (HTTP/1.1, 1 KB answers) across nodes: added latency at 1,000 req/s (open loop), req/s at full load, proxy CPU per 1k requests: direct vs fibmesh vs an haproxy mTLS pair in HTTP mode (installs haproxy)
	@hack/deps.sh bench-l4
	@hack/bpffs.sh
	$(GO) build -o $(BIN)/bench-l7 ./perf/cmd/bench-l7
	$(BIN)/bench-l7 --bin $(BIN) $(BENCH_L7_FLAGS)

bench-offload: deps build ## the lab's opaque TCP stream across two agents: offloaded (kTLS, kernel byte path, XDP flows) vs userspace mTLS vs direct, CPU per GB, revocation p50/p99 over 20 rounds (in the VM where this kernel lacks kTLS)
	@hack/bpffs.sh
	$(GO) build -o $(BIN)/bench-offload ./perf/cmd/bench-offload
	$(BIN)/bench-offload --bin $(BIN) $(BENCH_OFFLOAD_FLAGS)

bench: deps build ## every benchmark in sequence (fib fds l4 l7 offload xds ktls), one line per step; perf/out/report.json + report.html (charts, aims, machine, what could not run); summary lines last. BENCH_FLAGS=--only fds,xds, --from-logs
	$(GO) run ./perf/cmd/bench-all $(BENCH_FLAGS)

clean: ## remove build output (not the lab: see demo-down)
	rm -rf $(BIN) perf/out
