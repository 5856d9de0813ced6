// Package integration holds Shoal's multi-node tests: in-process clusters, real node processes and the
// benchmark harness.
package integration
