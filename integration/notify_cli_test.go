package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/notify"
)

// TestNotifyCLI runs a real build on a real node with a webhook subscription and a GitHub forge set through
// the CLI: the receiver on loopback gets build.started and build.succeeded, signed, and the forge gets pending
// then success on the built commit; `node notify log` shows the attempts, and no secret is ever printed.
func TestNotifyCLI(t *testing.T) {
	needProcesses(t)
	type hit struct {
		path, sig, auth string
		body            []byte
	}
	var (
		mu   sync.Mutex
		hits []hit
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		hits = append(hits, hit{r.URL.Path, r.Header.Get("X-Shoal-Signature-256"), r.Header.Get("Authorization"), b})
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	got := func(prefix string) []hit {
		mu.Lock()
		defer mu.Unlock()
		var out []hit
		for _, h := range hits {
			if strings.HasPrefix(h.path, prefix) {
				out = append(out, h)
			}
		}
		return out
	}

	repo := newTestRepo(t, t.TempDir(), "web.git")
	repo.commit("works", map[string]string{"shoal.yml": "build:\n  build: ['echo built']\npackage:\n  include: [shoal.yml]\n"})
	m := startPmesh(t, 1)
	n := m.nodes[0]
	if _, err := m.client(n).Post(context.Background(), "/v1/apps", map[string]any{"name": "web", "repo": repo.dir}, nil); err != nil {
		t.Fatal(err)
	}
	cli := func(stdin string, args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(nodeBinary(t), append([]string{"--addr", n.api(), "--token", m.admin}, args...)...)
		cmd.Env = cleanEnv()
		cmd.Stdin = strings.NewReader(stdin)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		if _, ok := err.(*exec.ExitError); err != nil && !ok {
			t.Fatalf("node %v: %v", args, err)
		}
		return o.String(), e.String(), cmd.ProcessState.ExitCode()
	}
	if out, errOut, code := cli("hook-secret\n", "notify", "add", "web", srv.URL+"/hook", "--secret-stdin", "--events", "build.started,build.succeeded"); code != 0 || strings.Contains(out, "hook-secret") {
		t.Fatalf("notify add: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := cli("", "notify", "add", "web", srv.URL, "--events", "build.exploded"); code == 0 || !strings.Contains(errOut, "build.started") {
		t.Fatalf("an unknown event: exit %d %s", code, errOut)
	}
	if out, errOut, code := cli("ghp_secret\n", "forge", "set", "web", "--kind", "github", "--url", srv.URL+"/gh", "--repo", "acme/web", "--forge-token-stdin"); code != 0 || strings.Contains(out, "ghp_secret") || !strings.Contains(out, "token set:  true") {
		t.Fatalf("forge set: exit %d\n%s%s", code, out, errOut)
	}
	if out, _, code := cli("", "notify", "list", "web"); code != 0 || strings.Contains(out, "hook-secret") || !strings.Contains(out, "build.started,build.succeeded") {
		t.Fatalf("notify list: exit %d\n%s", code, out)
	}
	if out, errOut, code := cli("", "build", "web", "--wait"); code != 0 {
		t.Fatalf("build: exit %d\n%s%s", code, out, errOut)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(got("/hook")) < 2 || len(got("/gh/")) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("hooks %d, statuses %d after 30s", len(got("/hook")), len(got("/gh/")))
		}
		time.Sleep(20 * time.Millisecond)
	}
	var events []string
	for _, h := range got("/hook") {
		var w notify.Webhook
		if err := json.Unmarshal(h.body, &w); err != nil || !notify.Verify("hook-secret", h.body, h.sig) {
			t.Fatalf("webhook %s: %v, signature %q", h.body, err, h.sig)
		}
		events = append(events, w.Event)
	}
	if strings.Join(events, " ") != "build.started build.succeeded" {
		t.Fatalf("events %v", events)
	}
	var states []string
	for _, h := range got("/gh/") {
		var st struct {
			State     string `json:"state"`
			TargetURL string `json:"target_url"`
		}
		_ = json.Unmarshal(h.body, &st)
		if !strings.HasPrefix(h.path, "/gh/repos/acme/web/statuses/") || len(strings.TrimPrefix(h.path, "/gh/repos/acme/web/statuses/")) != 40 ||
			h.auth != "Bearer ghp_secret" || !strings.Contains(st.TargetURL, "/ui/#/builds/web-1") {
			t.Fatalf("status %s %q %s", h.path, h.auth, h.body)
		}
		states = append(states, st.State)
	}
	if strings.Join(states, " ") != "pending success" {
		t.Fatalf("statuses %v", states)
	}
	out, _, code := cli("", "notify", "log", "--app", "web")
	if code != 0 || strings.Count(out, "delivered") != 4 || !strings.Contains(out, "build:web-1:succeeded:forge") {
		t.Fatalf("notify log: exit %d\n%s", code, out)
	}
}
