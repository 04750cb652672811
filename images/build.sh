#!/usr/bin/env bash
# Builds the baseline and candidate images where a Docker engine answers; where none does, says why in one
# line and exits 1. Image names: BASELINE_IMAGE, CANDIDATE_IMAGE; base: SGLANG_IMAGE.
set -euo pipefail
cd "$(dirname "$0")/.."

SGLANG_IMAGE="${SGLANG_IMAGE:-lmsysorg/sglang:v0.5.23}"
BASELINE_IMAGE="${BASELINE_IMAGE:-sglang-vlm-canary/baseline:0.5.23}"
CANDIDATE_IMAGE="${CANDIDATE_IMAGE:-sglang-vlm-canary/candidate:0.5.23}"
DOCKER="${DOCKER:-docker}"

if ! command -v "$DOCKER" >/dev/null 2>&1; then
  echo "make images: cannot build: no '$DOCKER' command on this machine (install Docker to build images)" >&2
  exit 1
fi
if ! info_err="$("$DOCKER" info 2>&1 >/dev/null)"; then
  echo "make images: cannot build: no Docker engine answers ($(echo "$info_err" | grep -m1 -v '^$' | cut -c1-160))" >&2
  exit 1
fi

# The candidate's context holds only what the image installs (no virtualenv, caches or reports).
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp images/candidate/pyproject.toml "$context/pyproject.toml"
cp -r sglang_plugin mminputs "$context/"
find "$context" -name '__pycache__' -type d -prune -exec rm -rf {} +

echo "building $BASELINE_IMAGE from $SGLANG_IMAGE"
"$DOCKER" build --build-arg "SGLANG_IMAGE=$SGLANG_IMAGE" -t "$BASELINE_IMAGE" -f images/baseline/Dockerfile images/baseline
echo "building $CANDIDATE_IMAGE from $BASELINE_IMAGE"
"$DOCKER" build --build-arg "BASELINE_IMAGE=$BASELINE_IMAGE" -t "$CANDIDATE_IMAGE" -f images/candidate/Dockerfile "$context"
echo "built $BASELINE_IMAGE and $CANDIDATE_IMAGE"
