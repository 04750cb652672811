#!/usr/bin/env bash
# Builds the local Kubernetes control plane and node for the k8s test tier into .cache/k8s/:
#   bin/  kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet (k8s.io/kubernetes, go.mod
#         here), etcd (go.etcd.io/etcd/server/v3 at the version Kubernetes pins), kwok and
#         kube-state-metrics (their own modules, pinned below)
#   crds/ Gateway API standard CRDs (sigs.k8s.io/gateway-api) and the ServiceMonitor/PodMonitor CRDs
#         (github.com/prometheus-operator/prometheus-operator), read from the Go module cache
# Idempotent: a stamp named after this script, go.mod and go.sum skips everything when nothing changed.
# Built at the lowest priority (set GOMAXPROCS=1 to leave a shared machine a core); the cold
# build time is printed and kept in .cache/k8s/build-seconds.
set -euo pipefail
KWOK_VERSION=v0.7.0
KUBE_STATE_METRICS_VERSION=v2.20.0
GATEWAY_API_VERSION=v1.6.1  # the version Traefik (tools/traefik) is built against: it watches v1 TLSRoute
PROMETHEUS_OPERATOR_VERSION=v0.85.0

here="$(cd "$(dirname "$0")" && pwd)"
out="$(cd "$here/../.." && pwd)/.cache/k8s"
stamp="$out/bin/.built-$(cat "$here/build.sh" "$here/go.mod" "$here/go.sum" | sha1sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0
command -v go >/dev/null || { echo "tools/k8s/build.sh: Go toolchain not found on PATH" >&2; exit 1; }

cd "$here"
# go.mod and go.sum are complete (go mod tidy); readonly turns any drift into an error, not an edit.
export GOMAXPROCS="${GOMAXPROCS:-$(nproc)}" GOFLAGS="-mod=readonly"
mkdir -p "$out/bin" "$out/crds"
rm -f "$out"/bin/.built-*
start=$(date +%s)
step() { echo "[k8s build $(( $(date +%s) - start ))s] $*" >&2; }

k8s_version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
minor="$(echo "$k8s_version" | cut -d. -f2)"
ldflags="-s -w"
# Without these the binaries report v0.0.0, and helm refuses charts whose kubeVersion needs more.
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet; do
    step "building $cmd $k8s_version"
    nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$out/bin/$cmd" "k8s.io/kubernetes/cmd/$cmd"
done
step "building etcd $(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
nice -n 19 go build -trimpath -ldflags "-s -w" -o "$out/bin/etcd" go.etcd.io/etcd/server/v3
step "building kwok $KWOK_VERSION"
(cd "$out" && GOFLAGS= GOBIN="$out/bin" nice -n 19 go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
step "building kube-state-metrics $KUBE_STATE_METRICS_VERSION"
(cd "$out" && GOFLAGS= GOBIN="$out/bin" nice -n 19 go install -trimpath -ldflags "-s -w" \
    "k8s.io/kube-state-metrics/v2@$KUBE_STATE_METRICS_VERSION")

step "collecting CRDs"
module_dir() { (cd "$out" && GOFLAGS= go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'); }
gateway="$(module_dir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")"
operator="$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")"
rm -f "$out"/crds/*.yaml
cp "$gateway"/config/crd/standard/*.yaml "$out/crds/"
cp "$operator"/example/prometheus-operator-crd/monitoring.coreos.com_{servicemonitors,podmonitors}.yaml "$out/crds/"
chmod u+w "$out"/crds/*.yaml

seconds=$(( $(date +%s) - start ))
echo "$seconds" > "$out/build-seconds"
touch "$stamp"
step "control plane built in ${seconds}s (GOMAXPROCS=$GOMAXPROCS)"
