# syntax=docker/dockerfile:1
#
# stepgate container image: a static Go binary on distroless, running as the
# distroless "nonroot" user (65532). Build:
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t ghcr.io/stepgate/stepgate:0.1.0 .
#
# The build stage runs on the builder's own platform and cross-compiles (CGO is
# off, so no C toolchain is needed), which keeps `docker buildx --platform
# linux/amd64,linux/arm64` fast.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
# CGO_ENABLED=0: a fully static binary, so the final image needs no libc.
# GOTOOLCHAIN=local: never download a different Go toolchain during the build.
ENV CGO_ENABLED=0 \
    GOTOOLCHAIN=local \
    GOFLAGS=-mod=readonly
# Module downloads get their own layer so a source change does not refetch them.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
# -trimpath drops local paths from the binary; -s -w drop symbol/DWARF tables;
# main.version is what `stepgate -version` and stepgate_build_info report.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/stepgate ./cmd/stepgate

# distroless/static carries CA certificates (needed for PingOne over HTTPS),
# tzdata and /etc/passwd entries for nonroot, and nothing else: no shell, no
# package manager, no curl.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/stepgate /stepgate
USER 65532:65532
# 8080: proxy listener (STEPGATE_LISTEN). 9090: admin listener
# (STEPGATE_ADMIN_LISTEN) serving /metrics, /healthz and /readyz.
EXPOSE 8080 9090
# Health checks: there is deliberately no HEALTHCHECK here, because the image has
# no shell or curl to run one. Kubernetes probes the admin port instead
# (livenessProbe GET :9090/healthz, readinessProbe GET :9090/readyz; see
# deploy/). With plain Docker, probe from outside: curl -f localhost:9090/readyz.
ENTRYPOINT ["/stepgate"]
