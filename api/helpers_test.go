package api_test

import (
	"testing"

	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/node"
)

// call makes an API request to node n and decodes the JSON answer into out (if not nil); it returns the status.
func call(t *testing.T, n *node.Node, token, method, path string, body any, out any) int {
	t.Helper()
	return meshtest.Call(t, n, token, method, path, body, out)
}
