// Package ext holds the extension points Traefik's dynamic configuration embeds (empty in this build).
package ext

// HTTP extends the dynamic HTTP configuration.
type HTTP struct{}

// Router extends an HTTP router's configuration.
type Router struct{}
