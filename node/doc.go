// Package node runs one member of a Shoal mesh: data dir, Raft, gossip membership, write forwarding, consistent
// reads, certificates and the metrics registry. Its HTTP API is package api.
package node
