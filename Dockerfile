# syntax=docker/dockerfile:1
# Multi-stage build: a static binary on a distroless base, run as non-root.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/bin/binlogsync ./cmd/binlogsync \
 && if [ -d ./cmd/reconciler ]; then CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/bin/reconciler ./cmd/reconciler; fi \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build --chown=65532:65532 /out/data /var/lib/binlogsync
COPY config.example.yaml /etc/binlogsync/config.yaml
USER 65532:65532
ENV BINLOGSYNC_HTTP_ADDR=0.0.0.0:9090 \
    BINLOGSYNC_CHECKPOINT_PATH=/var/lib/binlogsync/checkpoint
VOLUME /var/lib/binlogsync
EXPOSE 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/binlogsync", "--healthcheck", "http://127.0.0.1:9090/readyz"]
ENTRYPOINT ["/usr/local/bin/binlogsync"]
CMD ["--config", "/etc/binlogsync/config.yaml"]
