// A stand-in for Traefik's nested module github.com/traefik/traefik/dynamic/ext, which Traefik's go.mod
// replaces with a directory of its own repository and no registry serves. Traefik's open-source build
// only embeds these two types in its dynamic configuration as extension points.
module github.com/traefik/traefik/dynamic/ext

go 1.26.0
