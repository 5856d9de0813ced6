package api_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/internal/meshtest"
)

func TestAuthAndRoles(t *testing.T) {
	c := meshtest.New(t, 1, nil)
	n := c.Nodes[0]
	var e meshtest.Answer
	if code := call(t, n, "", "GET", "/v1/apps", nil, &e); code != 401 || e.Code != "unauthorized" {
		t.Fatalf("no token: %d %+v", code, e)
	}
	if code := call(t, n, "abc.def", "GET", "/v1/apps", nil, &e); code != 401 {
		t.Fatalf("bad token: %d", code)
	}
	var reader api.TokenView
	if code := call(t, n, c.AdminToken, "POST", "/v1/tokens", map[string]any{"name": "ci", "role": "reader"}, &reader); code != 201 || reader.Token == "" {
		t.Fatalf("create reader token: %d %+v", code, reader)
	}
	if code := call(t, n, reader.Token, "GET", "/v1/apps", nil, nil); code != 200 {
		t.Fatalf("reader read: %d", code)
	}
	if code := call(t, n, reader.Token, "POST", "/v1/apps", map[string]any{"name": "web"}, &e); code != 403 || e.Code != "forbidden" {
		t.Fatalf("reader write: %d %+v", code, e)
	}
	if code := call(t, n, reader.Token, "GET", "/v1/tokens", nil, nil); code != 403 {
		t.Fatalf("reader lists tokens: %d", code)
	}
	// A rejected write changed nothing.
	var apps []api.AppView
	call(t, n, c.AdminToken, "GET", "/v1/apps", nil, &apps)
	if len(apps) != 0 {
		t.Fatalf("forbidden write created %v", apps)
	}
	// Revoked tokens stop working.
	if code := call(t, n, c.AdminToken, "DELETE", "/v1/tokens/"+reader.ID, nil, nil); code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	if code := call(t, n, reader.Token, "GET", "/v1/apps", nil, nil); code != 401 {
		t.Fatalf("revoked token: %d", code)
	}
	// /healthz needs no token; /metrics needs one and serves the node's metrics.
	if code := call(t, n, "", "GET", "/healthz", nil, nil); code != 200 {
		t.Fatalf("healthz: %d", code)
	}
	req, _ := http.NewRequest("GET", "http://"+n.HTTPAddr()+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"shoal_raft_state{state=\"leader\"} 1", "shoal_raft_term", "shoal_raft_applied_index",
		"shoal_raft_commit_duration_seconds", "shoal_members{status=\"alive\"} 1", `shoal_api_requests_total{code="403",route="POST /v1/apps"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestEventStream: /v1/events sends the state's index at once, then again after a change.
func TestEventStream(t *testing.T) {
	c := meshtest.New(t, 1, nil)
	n := c.Nodes[0]
	req, _ := http.NewRequest("GET", "http://"+n.HTTPAddr()+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() string {
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("stream ended")
				}
				if strings.HasPrefix(l, "data: ") {
					return l
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no event")
			}
		}
	}
	first := next()
	if code := call(t, n, c.AdminToken, "POST", "/v1/apps", map[string]any{"name": "web"}, nil); code != 201 {
		t.Fatal(code)
	}
	second := next()
	if first == second || !strings.Contains(second, fmt.Sprintf(`"index":%d`, n.FSM().Index())) {
		t.Fatalf("events %q then %q; state index %d", first, second, n.FSM().Index())
	}
}

// A client that reconnects with Last-Event-ID (as the browser's EventSource does) is not sent the index it has
// already seen: its first event is the next change.
func TestEventStreamResumes(t *testing.T) {
	c := meshtest.New(t, 1, nil)
	n := c.Nodes[0]
	seen := n.FSM().Index()
	req, _ := http.NewRequest("GET", "http://"+n.HTTPAddr()+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	req.Header.Set("Last-Event-ID", fmt.Sprint(seen))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if code := call(t, n, c.AdminToken, "POST", "/v1/apps", map[string]any{"name": "web"}, nil); code != 201 {
		t.Fatal(code)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if l, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
			var id uint64
			fmt.Sscan(l, &id)
			if id <= seen {
				t.Fatalf("first event after Last-Event-ID %d has id %d: the client had seen it", seen, id)
			}
			return
		}
	}
	t.Fatal("the stream ended without an event")
}
