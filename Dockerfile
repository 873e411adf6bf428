# The fibmesh image: fibmesh-agent, fibmesh-controller, fibmesh-cni and
# fibctl in /usr/local/bin, static (CGO_ENABLED=0), on distroless static.
# From the repository root, on a machine that can pull golang and
# distroless:
#
#   docker build -t ghcr.io/fibmesh/fibmesh:latest .
#
# `make image` does not use this file: it builds the same binaries on the
# host and an image FROM scratch with what distroless adds (nonroot
# passwd entry, /tmp, the host's CA bundle), pulling nothing, so it works
# offline (hack/image.sh; docs/install.md#the-image).
#
# No binary runs another program (no exec of nft, ip or a shell: nftables,
# XDP and netlink are spoken directly), so the image needs no tools. The
# base is distroless static rather than scratch for what it adds at ~2 MB:
# /etc/passwd with nonroot (65532, the default user here), a CA bundle
# and tzdata, and /tmp; it has no shell either. The agent's DaemonSet runs
# it as root with six capabilities (deploy/base/agent.yaml).
# `make image-binaries` builds the same binaries without an engine.
# make image's image ran on a real node (hack/cluster); this file was not
# built there (no registry to pull its bases from).
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
