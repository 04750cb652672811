#!/usr/bin/env bash
# Copies the traefik.io CRDs (TraefikService and the nine others Traefik's CRD provider waits for) from
# the Traefik module tools/traefik/go.mod pins into .cache/traefik/crds/. Idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(cd "$here/../.." && pwd)/.cache/traefik/crds"
command -v go >/dev/null || { echo "tools/traefik/crds.sh: Go toolchain not found on PATH" >&2; exit 1; }
cd "$here"
export GOFLAGS="-mod=readonly"
version="$(go list -m -f '{{.Version}}' github.com/traefik/traefik/v3)"
[ -f "$out/traefik.io-$version.yaml" ] && exit 0
go mod download github.com/traefik/traefik/v3
dir="$(go list -m -f '{{.Dir}}' github.com/traefik/traefik/v3)"
mkdir -p "$out"
rm -f "$out"/traefik.io-*.yaml
cp "$dir/docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml" "$out/traefik.io-$version.yaml"
chmod u+w "$out/traefik.io-$version.yaml"
