# Container image for pod-identity-webhook.
#
#   docker build -t pod-identity-webhook:dev .
#
# Build stage: compile the release binary with the locked dependency set.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and build outputs between builds
# (BuildKit); the binary is copied out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin pod-identity-webhook \
 && install -D -m 0755 target/release/pod-identity-webhook /out/pod-identity-webhook

# Runtime stage: a slim Debian with CA certificates, running as non-root.
FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/pod-identity-webhook /usr/local/bin/pod-identity-webhook
# Same uid/gid the Helm chart's securityContext uses.
USER 65532:65532
# 8443: webhook HTTPS, 9999: metrics and health probes.
EXPOSE 8443 9999
ENTRYPOINT ["/usr/local/bin/pod-identity-webhook"]
