package notify

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/raftfsm"
)

// forgeAPI is what each forge documents for creating a commit status: the path, the headers that authenticate
// and negotiate, the body fields and the state names it accepts.
type forgeAPI struct {
	kind, repo, token string
	path              string // with %s for the sha, as the request's escaped path
	headers           map[string]string
	fields            []string
	states            []string
}

var forgeAPIs = []forgeAPI{
	{kind: "github", repo: "acme/web", token: "ghp_tok", path: "/repos/acme/web/statuses/%s",
		headers: map[string]string{"Authorization": "Bearer ghp_tok", "Accept": "application/vnd.github+json",
			"X-GitHub-Api-Version": "2022-11-28", "Content-Type": "application/json"},
		fields: []string{"context", "description", "state", "target_url"},
		states: []string{"error", "failure", "pending", "success"}},
	{kind: "gitea", repo: "acme/web", token: "gitea_tok", path: "/api/v1/repos/acme/web/statuses/%s",
		headers: map[string]string{"Authorization": "token gitea_tok", "Content-Type": "application/json"},
		fields:  []string{"context", "description", "state", "target_url"},
		states:  []string{"error", "failure", "pending", "success", "warning"}},
	{kind: "gitlab", repo: "group/sub/web", token: "glpat_tok", path: "/api/v4/projects/group%%2Fsub%%2Fweb/statuses/%s",
		headers: map[string]string{"PRIVATE-TOKEN": "glpat_tok", "Content-Type": "application/json"},
		fields:  []string{"description", "name", "ref", "state", "target_url"},
		states:  []string{"canceled", "failed", "pending", "running", "success"}},
}

// check says what is wrong with a request against the forge's documented shape ("" when nothing is).
func (f forgeAPI) check(r received, sha string) string {
	if r.Method != http.MethodPost {
		return "method " + r.Method
	}
	if want := fmt.Sprintf(f.path, sha); r.Path != want {
		return fmt.Sprintf("path %s, want %s", r.Path, want)
	}
	for k, v := range f.headers {
		if got := r.Header.Get(k); got != v {
			return fmt.Sprintf("header %s: %q, want %q", k, got, v)
		}
	}
	var body map[string]any
	if err := json.Unmarshal(r.Body, &body); err != nil {
		return "body: " + err.Error()
	}
	var fields []string
	for k := range body {
		fields = append(fields, k)
	}
	sort.Strings(fields)
	if !slices.Equal(fields, f.fields) {
		return fmt.Sprintf("body fields %v, want %v", fields, f.fields)
	}
	if !slices.Contains(f.states, body["state"].(string)) {
		return fmt.Sprintf("state %v is not one of %v", body["state"], f.states)
	}
	return ""
}

// Each build reports its commit status to GitHub, Gitea and GitLab in each one's documented shape, with a link
// to the build in the dashboard: pending (GitLab: running) when it starts, then its outcome.
func TestForgeCommitStatuses(t *testing.T) {
	m := newMesh(t, 1, testOptions())
	outcomes := map[string]string{"github": raftfsm.BuildSucceeded, "gitea": raftfsm.BuildFailed, "gitlab": raftfsm.BuildSucceeded}
	want := map[string][]string{"github": {"pending", "success"}, "gitea": {"pending", "failure"}, "gitlab": {"running", "success"}}
	for _, f := range forgeAPIs {
		t.Run(f.kind, func(t *testing.T) {
			m.t = t
			app := "web-" + f.kind
			m.app(app)
			srv := newReceiver(t, func(r *http.Request, _ int) int { return http.StatusCreated })
			in := map[string]any{"kind": f.kind, "url": srv.URL, "repo": f.repo}
			if status, body := m.api("PUT", "/v1/apps/"+app+"/forge", in); status != http.StatusBadRequest || !strings.Contains(string(body), "token") {
				t.Fatalf("a forge without a token: %d %s", status, body)
			}
			in["token"] = f.token
			if f.kind == "gitea" {
				in["dashboard_url"] = "https://ci.example.com/ui/"
			}
			status, body := m.api("PUT", "/v1/apps/"+app+"/forge", in)
			if status != http.StatusOK || strings.Contains(string(body), f.token) || !strings.Contains(string(body), `"token_set": true`) {
				t.Fatalf("set forge: %d %s", status, body)
			}
			sha := fmt.Sprintf("%040x", len(f.kind))
			id := m.startBuild(app, sha)
			m.finishBuild(id, outcomes[f.kind])
			testutil.Until(t, 20*time.Second, "two statuses", func() bool { return len(srv.requests()) >= 2 })
			var states []string
			for _, r := range srv.requests() {
				if problem := f.check(r, sha); problem != "" {
					t.Fatalf("%s: %s\n%s", f.kind, problem, r.Body)
				}
				var body statusBody
				_ = json.Unmarshal(r.Body, &body)
				states = append(states, body.State)
				dash := "http://dash.test/ui/#/builds/" + id
				if f.kind == "gitea" {
					dash = "https://ci.example.com/ui/#/builds/" + id
				}
				if body.TargetURL != dash || body.Description == "" {
					t.Fatalf("%s: target_url %q (want %q), description %q", f.kind, body.TargetURL, dash, body.Description)
				}
				if f.kind == "gitlab" && (body.Name != "shoal" || body.Ref != "main") || f.kind != "gitlab" && body.Context != "shoal" {
					t.Fatalf("%s: context/name/ref: %s", f.kind, r.Body)
				}
			}
			if !slices.Equal(states, want[f.kind]) {
				t.Fatalf("%s: states %v, want %v", f.kind, states, want[f.kind])
			}
		})
	}
	m.t = t
	// Removing the forge stops the reports.
	if status, body := m.api("DELETE", "/v1/apps/web-github/forge", nil); status != http.StatusNoContent {
		t.Fatalf("delete forge: %d %s", status, body)
	}
	if status, _ := m.api("GET", "/v1/apps/web-github/forge", nil); status != http.StatusNotFound {
		t.Fatalf("a deleted forge answers %d", status)
	}
}
