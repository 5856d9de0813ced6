// Package builder turns a git check-in into a versioned release: triggers, the manifest, build steps and
// packaging. It runs on the Raft leader only and fences every result by the leader term it started under.
package builder
