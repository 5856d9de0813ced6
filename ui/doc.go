// Package ui serves the web dashboard at /ui/: static files, embedded in the binary, that read and act through
// the node's HTTP API with the token the user signs in with.
package ui
