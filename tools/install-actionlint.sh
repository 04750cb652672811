#!/usr/bin/env bash
# Builds the pinned actionlint into the project-local bin dir (.cache/bin) from its Go module; the CI
# gate tests lint ci-templates/ with it. Idempotent: does nothing when the pinned version is there.
# Built at the lowest priority because the build machine's cores are shared.
set -euo pipefail
ACTIONLINT_VERSION="${ACTIONLINT_VERSION:-v1.7.12}"
cd "$(dirname "$0")/.."
bin_dir="$PWD/.cache/bin"
actionlint="$bin_dir/actionlint"

if [ -x "$actionlint" ] && "$actionlint" -version 2>/dev/null | head -1 | grep -qx "${ACTIONLINT_VERSION}"; then
    exit 0
fi
command -v go >/dev/null || { echo "install-actionlint: Go toolchain not found on PATH (needed to build actionlint)" >&2; exit 1; }
mkdir -p "$bin_dir"
echo "building actionlint $ACTIONLINT_VERSION into $bin_dir (first run only; about a minute)" >&2
start=$(date +%s)
# The version stamp makes `actionlint -version` report the pin.
GOBIN="$bin_dir" nice -n 19 go install \
    -ldflags "-X github.com/rhysd/actionlint.version=$ACTIONLINT_VERSION" \
    "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
echo "actionlint $ACTIONLINT_VERSION built in $(( $(date +%s) - start ))s" >&2
