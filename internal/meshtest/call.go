package meshtest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/shoal-ci/shoal/node"
)

// Call makes an API request to node n and decodes the JSON answer into out (if not nil); it returns the status.
func Call(t testing.TB, n *node.Node, token, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+n.HTTPAddr()+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, data, err)
		}
	}
	return resp.StatusCode
}

// Answer is an error answer of the API, as Call decodes it: {"code": ..., "error": ..., "request_id": ...}.
type Answer struct {
	Code    string `json:"code"`
	Message string `json:"error"`
	// RequestID is set on 5xx answers: the node logged the error under it.
	RequestID string `json:"request_id,omitempty"`
}
