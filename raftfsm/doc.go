// Package raftfsm is Shoal's replicated data model: typed commands in a versioned envelope, a deterministic
// Apply, snapshots, and blocking reads on the state's index.
package raftfsm
