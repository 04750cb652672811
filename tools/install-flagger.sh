#!/usr/bin/env bash
# Builds the pinned Flagger into .cache/flagger/ for the k8s tier's controller tests:
#   bin/flagger    from its Go module (plain `go install`: the module has no replace directives)
#   crds/crd.yaml  Canary, MetricTemplate and AlertProvider CRDs from the same module zip
# Idempotent: a stamp named after this script skips everything when nothing changed. Built at the lowest
# priority because the build machine's cores are shared; the build time is kept in .cache/flagger/build-seconds.
set -euo pipefail
FLAGGER_VERSION="${FLAGGER_VERSION:-v1.44.0}"
cd "$(dirname "$0")/.."
out="$PWD/.cache/flagger"
stamp="$out/.built-$( (cat tools/install-flagger.sh; echo "$FLAGGER_VERSION") | sha1sum | cut -c1-16)"
[ -f "$stamp" ] && [ -x "$out/bin/flagger" ] && exit 0
command -v go >/dev/null || { echo "install-flagger: Go toolchain not found on PATH" >&2; exit 1; }

export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
mkdir -p "$out/bin" "$out/crds"
rm -f "$out"/.built-*
echo "building Flagger $FLAGGER_VERSION into $out (first run only; a few minutes)" >&2
start=$(date +%s)
pkg=github.com/fluxcd/flagger
GOBIN="$out/bin" CGO_ENABLED=0 GOFLAGS= nice -n 19 go install -trimpath \
    -ldflags "-s -w -X $pkg/pkg/version.REVISION=$FLAGGER_VERSION" "$pkg/cmd/flagger@$FLAGGER_VERSION"
module_dir="$(cd "$out" && GOFLAGS= go mod download -json "$pkg@$FLAGGER_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
[ -n "$module_dir" ] || { echo "install-flagger: cannot locate the $pkg@$FLAGGER_VERSION module" >&2; exit 1; }
cp "$module_dir/artifacts/flagger/crd.yaml" "$out/crds/crd.yaml"
chmod u+w "$out/crds/crd.yaml"
seconds=$(( $(date +%s) - start ))
echo "$seconds" > "$out/build-seconds"
touch "$stamp"
echo "Flagger $FLAGGER_VERSION built in ${seconds}s" >&2
