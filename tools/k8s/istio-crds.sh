#!/usr/bin/env bash
# Puts Istio's VirtualService CRD into .cache/istio/crds/ for the k8s tier's Istio router tests: the
# `virtualservices.networking.istio.io` document of kubernetes/customresourcedefinitions.gen.yaml in the
# Go module istio.io/api at the version below, read from the Go module cache (as build.sh reads the
# Gateway API CRDs). No Istio control plane or data plane: the tests need only the API server to serve it.
# Apart from build.sh, so that pinning or changing it never invalidates the control plane's build stamp.
# Idempotent: a stamp named after this script skips everything when nothing changed.
set -euo pipefail
ISTIO_API_VERSION=v1.32.0
CRD=virtualservices.networking.istio.io

here="$(cd "$(dirname "$0")" && pwd)"
out="$(cd "$here/../.." && pwd)/.cache/istio/crds"
stamp="$out/.built-$(sha1sum < "$here/istio-crds.sh" | cut -c1-16)"
[ -f "$stamp" ] && [ -f "$out/$CRD.yaml" ] && exit 0
command -v go >/dev/null || { echo "tools/k8s/istio-crds.sh: Go toolchain not found on PATH" >&2; exit 1; }

mkdir -p "$out"
rm -f "$out"/.built-* "$out"/*.yaml
module="$(cd "$out" && GOFLAGS= go mod download -json "istio.io/api@$ISTIO_API_VERSION" \
    | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
[ -n "$module" ] || { echo "tools/k8s/istio-crds.sh: cannot locate istio.io/api@$ISTIO_API_VERSION" >&2; exit 1; }
# The file is one YAML stream of every Istio CRD; keep the document whose metadata.name is the CRD's.
awk -v want="  name: $CRD" '
    /^---$/ { if (found) { printf "%s", doc; printed = 1; exit } doc = ""; next }
    { doc = doc $0 "\n" }
    $0 == want { found = 1 }
    END { if (found && !printed) printf "%s", doc }
' "$module/kubernetes/customresourcedefinitions.gen.yaml" > "$out/$CRD.yaml.tmp"
grep -q "^    kind: VirtualService$" "$out/$CRD.yaml.tmp" \
    || { echo "tools/k8s/istio-crds.sh: no $CRD in istio.io/api@$ISTIO_API_VERSION" >&2; exit 1; }
mv "$out/$CRD.yaml.tmp" "$out/$CRD.yaml"
touch "$stamp"
echo "[istio crds] $CRD from istio.io/api@$ISTIO_API_VERSION" >&2
