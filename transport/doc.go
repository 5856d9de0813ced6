// Package transport is a node's one QUIC endpoint: mesh TLS identities, ALPN routing, Raft's stream layer and
// the small framed protocols that travel between nodes.
package transport
