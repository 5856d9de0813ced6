package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// The list commands send --limit and --cursor as the API's ?limit and ?cursor, keep stdout the list, and say on
// stderr how to get the next page.
func TestListCommandsPage(t *testing.T) {
	path := isolate(t)
	var (
		mu      sync.Mutex
		queries []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		queries = append(queries, r.URL.Path+"?"+r.URL.RawQuery)
		mu.Unlock()
		if r.URL.Query().Get("cursor") == "" {
			w.Header().Set("X-Shoal-Next-Cursor", "b")
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`[{"name":"a"},{"name":"b"}]`))
	}))
	t.Cleanup(srv.Close)
	if err := saveCLIConfig(path, cliConfig{Addr: strings.TrimPrefix(srv.URL, "http://"), Token: "t"}); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		c := &cli{in: strings.NewReader(""), out: &out, errOut: &errOut}
		root := c.root()
		root.SetArgs(args)
		root.SetOut(&out)
		root.SetErr(&errOut)
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, errOut.String())
		}
		return out.String(), errOut.String()
	}
	out, hint := run("app", "list", "--limit", "2", "--json")
	if !strings.HasPrefix(strings.TrimSpace(out), "[") || !strings.Contains(hint, "more: rerun with --cursor b") {
		t.Fatalf("first page: stdout %q, stderr %q", out, hint)
	}
	if _, hint = run("env", "list", "--app", "web", "--limit", "2", "--cursor", "b"); hint != "" {
		t.Fatalf("last page: stderr %q", hint)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(queries) != 2 || queries[0] != "/v1/apps?limit=2" || queries[1] != "/v1/envs?app=web&cursor=b&limit=2" {
		t.Fatalf("queries %v", queries)
	}
}
