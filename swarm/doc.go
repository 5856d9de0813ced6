// Package swarm exchanges artifact pieces between peers over QUIC (ALPN shoal-blob/1): a server for what a node
// holds and a fetcher that downloads from many peers at once, rarest piece first.
package swarm
