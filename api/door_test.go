package api_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// Bad input is refused at the door with a status that says what is wrong, and nothing is committed.
func TestInputRefusedAtTheDoor(t *testing.T) {
	c := meshtest.New(t, 1, nil)
	n := c.Nodes[0]
	base := "http://" + n.HTTPAddr()
	if status, body := httpBody("POST", base+"/v1/apps", c.AdminToken, `{"name":"web","repo":"/srv/git/web.git"}`); status != http.StatusCreated {
		t.Fatalf("create web: %d %s", status, body)
	}
	before := n.FSM().Index()
	cases := []struct {
		what, method, path, body string
		status                   int
	}{
		{"manifest path leaving the repository", "POST", "/v1/apps", `{"name":"a1","repo":"/r","manifest":"../../etc/passwd"}`, 400},
		{"absolute manifest path", "POST", "/v1/apps", `{"name":"a1","repo":"/r","manifest":"/etc/passwd"}`, 400},
		{"manifest path changed to leave the repository", "PUT", "/v1/apps/web", `{"manifest":"ci/../../x.yml"}`, 400},
		{"NUL in a repository URL", "POST", "/v1/apps", `{"name":"a1","repo":"/srv/git/a\u0000b"}`, 400},
		{"git remote helper", "POST", "/v1/apps", `{"name":"a1","repo":"ext::sh -c id"}`, 400},
		{"unknown URL scheme", "POST", "/v1/apps", `{"name":"a1","repo":"gopher://x/y"}`, 400},
		{"repository changed to a NUL", "PUT", "/v1/apps/web", `{"repo":"/srv\u0000"}`, 400},
		{"poll interval below the floor", "POST", "/v1/apps", `{"name":"a1","repo":"/r","poll_interval":"10ms"}`, 400},
		{"app name with a slash", "POST", "/v1/apps", `{"name":"../evil","repo":"/r"}`, 400},
		{"app name of 100 characters", "POST", "/v1/apps", `{"name":"` + strings.Repeat("a", 100) + `","repo":"/r"}`, 400},
		{"environment name with a slash", "POST", "/v1/envs", `{"name":"../prod","app":"web"}`, 400},
		{"token name with a slash", "POST", "/v1/tokens", `{"name":"../evil","role":"reader"}`, 400},
		{"negative join token ttl", "POST", "/v1/tokens/join", `{"ttl":"-1h"}`, 400},
		{"zero join token ttl", "POST", "/v1/tokens/join", `{"ttl":"0s"}`, 400},
		{"join token ttl over the most", "POST", "/v1/tokens/join", `{"ttl":"100000h"}`, 400},
		{"trailing JSON", "POST", "/v1/apps", `{"name":"a1","repo":"/r"} {"name":"a2"}`, 400},
		{"trailing garbage", "POST", "/v1/apps", `{"name":"a1","repo":"/r"}x`, 400},
		{"duplicate keys", "POST", "/v1/apps", `{"name":"a1","repo":"/r","repo":"ext::sh"}`, 400},
		{"nested duplicate keys", "POST", "/v1/apps", `{"name":"a1","repo":"/r","build_vars":{"A":{"value":"1"},"A":{"value":"2"}}}`, 400},
		{"body over the limit", "POST", "/v1/apps", `{"name":"a1","repo":"/r","manifest":"` + strings.Repeat("x", 2<<20) + `"}`, 413},
	}
	for _, tc := range cases {
		status, body := httpBody(tc.method, base+tc.path, c.AdminToken, tc.body)
		if status != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.what, status, body, tc.status)
			continue
		}
		if !strings.Contains(body, `"error"`) {
			t.Errorf("%s: meshtest.Answer %q is not a JSON error", tc.what, body)
		}
	}
	if got := n.FSM().Index(); got != before {
		t.Fatalf("refused requests moved the state from index %d to %d", before, got)
	}
	// The same rules let good input through.
	if status, body := httpBody("POST", base+"/v1/apps", c.AdminToken, `{"name":"api","repo":"git@example.com:team/api.git","manifest":"deploy/shoal.yml","poll_interval":"1m"}`); status != http.StatusCreated {
		t.Fatalf("a valid app: %d %s", status, body)
	}
	if status, body := httpBody("POST", base+"/v1/tokens/join", c.AdminToken, `{"ttl":"2h"}`); status != http.StatusCreated {
		t.Fatalf("a valid join token: %d %s", status, body)
	}
}

// A 5xx meshtest.Answer carries a request id that the node's log has, with the error; an internal error's own message
// (which may name files and addresses) stays in the log.
func TestInternalErrorsCarryARequestID(t *testing.T) {
	logs := &lockedBuffer{}
	c := meshtest.New(t, 1, func(cfg *node.Config) { cfg.Logger = slog.New(slog.NewTextHandler(logs, nil)) })
	n := c.Nodes[0]
	c.APIs[0].Handle("GET /v1/test-broken", raftfsm.RoleReader, func(w http.ResponseWriter, r *http.Request) error {
		return errors.New("open /var/lib/shoal/secret.key: input/output error")
	})
	req, _ := http.NewRequest("GET", "http://"+n.HTTPAddr()+"/v1/test-broken", nil)
	req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ae meshtest.Answer
	if err := json.NewDecoder(resp.Body).Decode(&ae); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 500 || ae.RequestID == "" || resp.Header.Get("X-Request-Id") != ae.RequestID {
		t.Fatalf("meshtest.Answer %d %+v (X-Request-Id %q), want a 500 with a request id", resp.StatusCode, ae, resp.Header.Get("X-Request-Id"))
	}
	if strings.Contains(ae.Message, "secret.key") || !strings.Contains(ae.Message, ae.RequestID) {
		t.Fatalf("message %q: want the request id and not the internal error", ae.Message)
	}
	var logged string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "request_id="+ae.RequestID) {
			logged = line
		}
	}
	if !strings.Contains(logged, "secret.key") || !strings.Contains(logged, "/v1/test-broken") {
		t.Fatalf("no log line with request id %s, the error and the path; log:\n%s", ae.RequestID, logs.String())
	}
}

// lockedBuffer is a log sink that tests read while the node writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
