// The Traefik release the k8s tier's Gateway API data plane is built from (tools/traefik/build.sh).
// v3.7.x is the first v3 that applies per-backendRef filters (the chart's `x-canary-arm` header).
// Two parts of its module graph are not served by the Go module proxy, and are resolved here:
//   - the nested module github.com/traefik/traefik/dynamic/ext, which Traefik replaces with a directory
//     of its own repository: ./ext is a stand-in of ours with the two (empty) types Traefik embeds;
//   - the containous fork of go-http-auth at the pseudo-version Traefik pins: the fork's earlier,
//     served version (the one Traefik v3.6 pins) is used instead.
// lego's DNS-01 providers need about 13 SDK modules the proxy does not serve; the build leaves them out
// with lego's own `lego_dnslight` build tag (DNS-01 challenges are not used here), which lego has from
// v5.6.0 on: lego is raised from the v5.4.1 Traefik pins to v5.6.0. The other replace and exclude lines
// are Traefik's own (its go.mod), which `go install` cannot apply.
module sglang-vlm-canary/tools/traefik

go 1.26.0

require (
	github.com/go-acme/lego/v5 v5.6.0
	github.com/traefik/traefik/v3 v3.7.13
)

replace github.com/traefik/traefik/dynamic/ext => ./ext

replace (
	github.com/abbot/go-http-auth => github.com/containous/go-http-auth v0.4.1-0.20200324110947-a37a7636d23e
	github.com/gorilla/mux => github.com/containous/mux v0.0.0-20250523120546-41b6ec3aed59
)

exclude github.com/tencentcloud/tencentcloud-sdk-go v3.0.83+incompatible
