//go:build tools

// Package traefikbuild pins the Traefik command for `go build`.
package traefikbuild

import _ "github.com/traefik/traefik/v3/cmd/traefik"
