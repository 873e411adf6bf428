# The fibmesh image: fibmesh-agent, fibmesh-controller, fibmesh-cni and
# fibctl in /usr/local/bin, static (CGO_ENABLED=0), on distroless static.
# From the repository root:
#
#   make image                        # podman or docker, whichever runs
#   docker build -t ghcr.io/fibmesh/fibmesh:latest .
#
# No binary runs another program (no exec of nft, ip or a shell: nftables,
# XDP and netlink are spoken directly), so the image needs no tools. The
# base is distroless static rather than scratch for what it adds at ~2 MB:
# /etc/passwd with nonroot (65532, the default user here), a CA bundle
# and tzdata, and /tmp; it has no shell either. The agent's DaemonSet runs
# it as root with four capabilities (deploy/base/agent.yaml).
# `make image-binaries` builds the same binaries without an engine.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The commands the image holds; hack/image.sh reads this line.
ARG CMDS="fibmesh-agent fibmesh-controller fibmesh-cni fibctl"
RUN mkdir -p /out && for c in $CMDS; do \
      CGO_ENABLED=0 go build -trimpath -ldflags=-s -o /out/$c ./cmd/$c || exit 1; \
    done

FROM gcr.io/distroless/static-debian12
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/fibmesh-controller"]
