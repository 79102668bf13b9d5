# The pod-identity-webhook image: one static binary in an otherwise empty (scratch) image.
#
#   docker build -t pod-identity-webhook:0.1.0 .              # compile inside the build, any machine
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     -t REGISTRY/pod-identity-webhook:0.1.0 --push .          # multi-architecture, for arm64 nodes
#   make image                                                 # compile on the host, build with docker
#                                                              # or buildah (stage `prebuilt`), write
#                                                              # target/image/pod-identity-webhook.tar
#
# The binary is at /usr/local/bin/pod-identity-webhook and, for manifests written for the
# reference webhook (`command: [/webhook, ...]`), at /webhook (a hard link: one copy). It
# carries the file capability cap_net_bind_service (permitted; the binary raises it), so the non-root user can still listen on
# the reference's default port 443 wherever privilege escalation is not forbidden; the
# chart's restricted setup listens on 8443 and needs no capability.

# --- stage `prebuilt`: what `make image` builds. Its context is target/image/context, holding
# a rootfs/ that hack/build-image.sh staged from a host build; nothing is pulled.
FROM scratch AS prebuilt
COPY rootfs/ /
USER 65532:65532
# 8443: webhook HTTPS (443 in the reference's shape), 9999: metrics and health probes.
EXPOSE 8443 9999
ENTRYPOINT ["/usr/local/bin/pod-identity-webhook"]

# --- stage `build`: compiles the static binary from this repository (the default path).
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# BuildKit cache mounts keep the crate registry and build outputs between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    hack/build-image.sh --stage-only /rootfs

# --- the default stage: the same layout as `prebuilt`, compiled above.
FROM scratch
COPY --from=build /rootfs/ /
USER 65532:65532
EXPOSE 8443 9999
ENTRYPOINT ["/usr/local/bin/pod-identity-webhook"]
