#!/usr/bin/env bash
# Builds Traefik (the k8s tier's Gateway API data plane) from its Go module into .cache/traefik/bin/,
# with the module set go.mod and go.sum here pin (Traefik's own replace lines copied; go.mod says what
# else had to be resolved and how) and lego's `lego_dnslight` tag (no DNS-01 providers). Idempotent: a
# stamp named after this script, go.mod, go.sum and ext/ skips everything when nothing changed. Built at
# the lowest priority; the cold build time is printed and kept in .cache/traefik/build-seconds.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(cd "$here/../.." && pwd)/.cache/traefik"
stamp="$out/bin/.built-$(cat "$here"/build.sh "$here"/go.mod "$here"/go.sum "$here"/ext/* | sha1sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0
command -v go >/dev/null || { echo "tools/traefik/build.sh: Go toolchain not found on PATH" >&2; exit 1; }
cd "$here"
export GOFLAGS="-mod=readonly" GOMAXPROCS="${GOMAXPROCS:-$(nproc)}"
version="$(go list -m -f '{{.Version}}' github.com/traefik/traefik/v3)"
mkdir -p "$out/bin"
rm -f "$out"/bin/.built-*
start=$(date +%s)
echo "[traefik build] building traefik $version (first run only; about 10 minutes on 2 cores)" >&2
pkg=github.com/traefik/traefik/v3/pkg/version
nice -n 19 go build -tags lego_dnslight -trimpath -ldflags "-s -w -X $pkg.Version=$version -X $pkg.BuildDate=1970-01-01T00:00:00Z" \
    -o "$out/bin/traefik" github.com/traefik/traefik/v3/cmd/traefik
seconds=$(( $(date +%s) - start ))
echo "$seconds" > "$out/build-seconds"
touch "$stamp"
echo "[traefik build] traefik $version built in ${seconds}s (GOMAXPROCS=$GOMAXPROCS)" >&2
