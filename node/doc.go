// Package node runs one member of a Shoal mesh: data dir, Raft, gossip membership, write forwarding, the HTTP
// API and the metrics registry.
package node
