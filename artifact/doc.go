// Package artifact is a node's content-addressed store of release archives and their verified pieces.
package artifact
