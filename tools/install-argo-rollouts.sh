#!/usr/bin/env bash
# Builds the pinned Argo Rollouts controller into .cache/argo-rollouts/ for the k8s tier's controller tests:
#   bin/rollouts-controller  from github.com/argoproj/argo-rollouts (wrapper go.mod in tools/argo-rollouts)
#   crds/*.yaml              the Rollout, AnalysisTemplate, AnalysisRun, ... CRDs from the same module zip
# Idempotent: a stamp named after this script, go.mod and go.sum skips everything when nothing changed.
# Built at the lowest priority because the build machine's cores are shared; the build time is printed
# and kept in .cache/argo-rollouts/build-seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
here="$PWD/tools/argo-rollouts"
out="$PWD/.cache/argo-rollouts"
stamp="$out/.built-$(cat tools/install-argo-rollouts.sh "$here/go.mod" "$here/go.sum" | sha1sum | cut -c1-16)"
[ -f "$stamp" ] && [ -x "$out/bin/rollouts-controller" ] && exit 0
command -v go >/dev/null || { echo "install-argo-rollouts: Go toolchain not found on PATH" >&2; exit 1; }

cd "$here"
export GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
version="$(go list -m -f '{{.Version}}' github.com/argoproj/argo-rollouts)"
mkdir -p "$out/bin" "$out/crds"
rm -f "$out"/.built-*
echo "building Argo Rollouts $version into $out (first run only; several minutes)" >&2
start=$(date +%s)
pkg=github.com/argoproj/argo-rollouts
ldflags="-s -w -X $pkg/utils/version.version=$version -X $pkg/utils/version.gitTreeState=clean"
ldflags+=" -X $pkg/utils/version.buildDate=1970-01-01T00:00:00Z"
CGO_ENABLED=0 nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$out/bin/rollouts-controller" \
    "$pkg/cmd/rollouts-controller"
module_dir="$(go list -m -f '{{.Dir}}' "$pkg")"
rm -f "$out"/crds/*.yaml
cp "$module_dir"/manifests/crds/*-crd.yaml "$out/crds/"
chmod u+w "$out"/crds/*.yaml
seconds=$(( $(date +%s) - start ))
echo "$seconds" > "$out/build-seconds"
touch "$stamp"
echo "Argo Rollouts $version built in ${seconds}s" >&2
