#!/usr/bin/env bash
# Builds the pinned helm into the project-local bin dir (.cache/bin) from its Go module.
# Idempotent: does nothing when the pinned version is already there. Built at the lowest priority
# because the build machine's cores are shared.
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-v3.21.4}"
cd "$(dirname "$0")/.."
bin_dir="$PWD/.cache/bin"
helm="$bin_dir/helm"

if [ -x "$helm" ] && "$helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
    exit 0
fi
command -v go >/dev/null || { echo "install-helm: Go toolchain not found on PATH (needed to build helm)" >&2; exit 1; }
mkdir -p "$bin_dir"
echo "building helm $HELM_VERSION into $bin_dir (first run only; a few minutes)" >&2
start=$(date +%s)
# The version stamp makes `helm version` report the pin (go install leaves it empty otherwise).
GOBIN="$bin_dir" nice -n 19 go install \
    -ldflags "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
echo "helm $HELM_VERSION built in $(( $(date +%s) - start ))s" >&2
