//go:build tools

// Package tools pins the Traefik release this project builds (tools/traefik/build.sh); nothing here
// is compiled into anything.
package tools

import _ "github.com/traefik/traefik/v3/cmd/traefik"
