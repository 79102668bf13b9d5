#!/usr/bin/env bash
# Builds the webhook's container image from the project's own Dockerfile, with whichever of
# docker (a reachable engine) or buildah is on the machine, and writes it as a docker-archive:
#
#   target/image/pod-identity-webhook.tar    tagged pod-identity-webhook:<chart appVersion>
#
# load it with `docker load -i`, `kind load image-archive`, `ctr -n k8s.io images import`
# or `hack/node.sh load-image`. The binary is compiled on this machine (static, glibc
# crt-static), staged with hack/build-image.sh's layout into target/image/context/rootfs,
# and the Dockerfile's `prebuilt` stage copies it into a scratch image: nothing is pulled.
#
# Usage:
#   hack/build-image.sh                    build the image and the archive (`make image`)
#   hack/build-image.sh --stage-only DIR   only compile and stage the root filesystem into DIR
#                                          (the Dockerfile's own build stage runs this)
# Environment:
#   IMAGE         name:tag to give the image (default pod-identity-webhook:<appVersion>)
#   IMAGE_BUILDER docker or buildah (default: docker when its engine answers, else buildah)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[build-image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then command -v sudo >/dev/null 2>&1 && SUDO="sudo"; fi

apt_install() {
  log "installing Debian packages: $*"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# stage_rootfs DIR: compile the static binary and lay out the image's files under DIR.
stage_rootfs() {
  local dir="$1" triple bin
  triple="$(uname -m)-unknown-linux-gnu"
  command -v setcap >/dev/null 2>&1 || apt_install libcap2-bin
  log "compiling a static release binary for $triple"
  # --target keeps crt-static away from build scripts and proc macros.
  (cd "$ROOT" && RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --locked --target "$triple" --bin pod-identity-webhook)
  bin="$ROOT/target/$triple/release/pod-identity-webhook"
  file -b "$bin" 2>/dev/null | grep -q 'static' ||
    { ldd "$bin" 2>&1 | grep -q 'not a dynamic' || die "$bin is not statically linked"; }
  rm -rf "$dir"
  mkdir -p "$dir/usr/local/bin"
  install -m 0755 "$bin" "$dir/usr/local/bin/pod-identity-webhook"
  # Lets the non-root user bind port 443, as the reference's root user can: permitted only,
  # the binary makes it effective itself (src/server/low_port.rs), so exec never fails where
  # the capability is dropped.
  setcap cap_net_bind_service=+p "$dir/usr/local/bin/pod-identity-webhook"
  # The reference's path: manifests written for it run `/webhook`.
  ln "$dir/usr/local/bin/pod-identity-webhook" "$dir/webhook"
}

if [ "${1:-}" = "--stage-only" ]; then
  [ -n "${2:-}" ] || die "--stage-only needs a directory"
  stage_rootfs "$2"
  exit 0
fi
[ "$#" -eq 0 ] || die "unknown argument: $1 (usage: hack/build-image.sh [--stage-only DIR])"

app_version="$(awk '$1 == "appVersion:" { gsub(/"/, "", $2); print $2 }' "$ROOT/charts/pod-identity-webhook/Chart.yaml")"
IMAGE="${IMAGE:-pod-identity-webhook:$app_version}"
OUT_DIR="$ROOT/target/image"
ARCHIVE="$OUT_DIR/pod-identity-webhook.tar"
CONTEXT="$OUT_DIR/context"
start=$SECONDS

builder="${IMAGE_BUILDER:-}"
if [ -z "$builder" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then builder=docker
  else builder=buildah; fi
fi

mkdir -p "$CONTEXT"
stage_rootfs "$CONTEXT/rootfs"
rm -f "$ARCHIVE"
case "$builder" in
  docker)
    docker build --target prebuilt -f "$ROOT/Dockerfile" -t "$IMAGE" "$CONTEXT"
    docker save -o "$ARCHIVE" "$IMAGE"
    ;;
  buildah)
    command -v buildah >/dev/null 2>&1 || apt_install buildah
    # A throw-away storage of our own: no daemon, no state left behind.
    store="$(mktemp -d "${TMPDIR:-/tmp}/piw-buildah.XXXXXX")"
    trap 'buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs rm --all >/dev/null 2>&1 || true; rm -rf "$store"' EXIT
    bah=(buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs)
    "${bah[@]}" bud --quiet --isolation chroot --target prebuilt -f "$ROOT/Dockerfile" \
      -t "$IMAGE" "$CONTEXT" >/dev/null
    "${bah[@]}" push --quiet "$IMAGE" "docker-archive:$ARCHIVE:$IMAGE"
    ;;
  *) die "IMAGE_BUILDER must be docker or buildah, not '$builder'" ;;
esac
size_kib=$(( $(stat -c %s "$ARCHIVE") / 1024 ))
log "built $IMAGE with $builder in $((SECONDS - start)) s: $ARCHIVE (${size_kib} KiB)"
echo "$ARCHIVE"
