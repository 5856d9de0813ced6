// Package builder turns a git check-in into a versioned release: triggers, the manifest, build steps and
// packaging. It runs on the Raft leader, or on build servers the leader assigns builds to under a lease, and
// fences every result by the leader term (and the lease) it started under.
package builder
