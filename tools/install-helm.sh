#!/usr/bin/env bash
# Builds the pinned helm into the project-local bin dir (.cache/bin) from its Go module, stamped like a
# released helm (helm's own Makefile): version, the release tag's commit, a clean tree, and the
# Kubernetes version its client-go targets, which `helm template` assumes when no cluster is given
# (unstamped it says v1.20, and charts requiring newer Kubernetes fail to render).
# Idempotent: does nothing when the pinned, stamped build is already there. Built at the lowest
# priority because the build machine's cores are shared.
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-v3.21.4}"
HELM_COMMIT="${HELM_COMMIT:-813176c51bb5c181dbbd7901298ddcc104cd3417}"  # the v3.21.4 tag
cd "$(dirname "$0")/.."
bin_dir="$PWD/.cache/bin"
helm="$bin_dir/helm"

if [ -x "$helm" ] && "$helm" version --template '{{.Version}} {{.GitCommit}}' 2>/dev/null |
        grep -qx "$HELM_VERSION $HELM_COMMIT"; then
    exit 0
fi
command -v go >/dev/null || { echo "install-helm: Go toolchain not found on PATH (needed to build helm)" >&2; exit 1; }
mkdir -p "$bin_dir"
echo "building helm $HELM_VERSION into $bin_dir (first run only; a few minutes)" >&2
start=$(date +%s)
# Kubernetes major.minor as helm's Makefile derives it: client-go v0.X.Y -> 1.X.
gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
client_go=$(awk '$1 == "k8s.io/client-go" {print $2}' "$gomod")
[[ $client_go =~ ^v0\.([0-9]+)\. ]] || { echo "install-helm: cannot read client-go's version from $gomod" >&2; exit 1; }
k8s_minor=${BASH_REMATCH[1]}
ldflags="-w -s"
ldflags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitCommit=$HELM_COMMIT"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
GOBIN="$bin_dir" CGO_ENABLED=0 nice -n 19 go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
echo "helm $HELM_VERSION built in $(( $(date +%s) - start ))s (Kubernetes 1.$k8s_minor by default)" >&2
