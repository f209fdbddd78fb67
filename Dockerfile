# The cxop image for builders that have a Docker daemon (`make docker-build`).
# `make image` builds the same layout without one: both pack the static
# binary with hack/image, so the files, the user and the entrypoint agree.
ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=0.1.0
ARG IMG=ghcr.io/cxop-dev/cxop:${VERSION}
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -buildvcs=false -tags nodev \
      -ldflags "-s -w -X github.com/cxop-dev/cxop/internal/version.Version=${VERSION} -X github.com/cxop-dev/cxop/internal/version.imageRef=${IMG}" \
      -o /cxop-bin . \
 && go run ./hack/image -binary /cxop-bin -entrypoint /cxop -write-rootfs /rootfs

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.source=https://github.com/cxop-dev/cxop \
      org.opencontainers.image.version=${VERSION} \
      org.opencontainers.image.revision=${REVISION}
COPY --from=build /rootfs/ /
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/cxop"]
