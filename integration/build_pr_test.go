package integration

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/builder"
	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/deployer"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/raftfsm"
)

// githubPullRequest is a GitHub pull_request webhook (action opened), signed with secret.
func githubPullRequest(delivery string, number int, head, sha, secret string) (http.Header, []byte) {
	body, _ := json.Marshal(map[string]any{"action": "opened", "number": number,
		"pull_request": map[string]any{"number": number, "title": "Try a thing", "state": "open",
			"head": map[string]any{"ref": head, "sha": sha, "repo": map[string]any{"full_name": "fork/web"}},
			"base": map[string]any{"ref": "main"}},
		"repository": map[string]any{"full_name": "acme/web"}, "sender": map[string]any{"login": "ada"}})
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	h := http.Header{"Content-Type": {"application/json"}, "User-Agent": {"GitHub-Hookshot/044aadd"},
		"X-Github-Event": {"pull_request"}, "X-Github-Delivery": {delivery},
		"X-Hub-Signature-256": {"sha256=" + hex.EncodeToString(mac.Sum(nil))}}
	return h, body
}

// TestPullRequestBuild runs one node process with the real webhook route, builder, notifier and deployer. A
// GitHub pull_request webhook (from a fork's main, the case that would look like a release of the app's
// branch) builds the request's head; GitHub receives its commit statuses (pending, success) for that commit;
// the release is marked with the request; a deploy by hand to an environment that does not allow pull
// requests is refused, to one that does is accepted; auto deploy picks the next push's release, never it.
func TestPullRequestBuild(t *testing.T) {
	needProcesses(t)
	const secret = "pr-secret"
	repo := newTestRepo(t, t.TempDir(), "web.git")
	base := repo.commit("web", map[string]string{"shoal.yml": "build:\n  build: ['echo \"building $SHOAL_BRANCH\"']\npackage:\n  include: [shoal.yml]\n"})
	// The request's head: a commit the forge serves (here, on a branch of the same repository).
	repo.git("checkout", "-q", "-b", "pr-head")
	head := repo.commit("pull request change", map[string]string{"pr.txt": "pr"})
	repo.git("checkout", "-q", "main")

	var (
		mu       sync.Mutex
		statuses []string
	)
	forge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var st struct{ State string }
		_ = json.Unmarshal(body, &st)
		mu.Lock()
		statuses = append(statuses, r.Method+" "+r.URL.EscapedPath()+" "+st.State)
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(forge.Close)

	m := startPmesh(t, 1)
	n := m.nodes[0]
	api := m.client(n)
	ctx := context.Background()
	if _, err := api.Post(ctx, "/v1/apps", map[string]any{"name": "web", "repo": repo.dir, "auto_build": true,
		"webhook_secret": secret, "pull_requests": true}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := api.Do(ctx, http.MethodPut, "/v1/apps/web/forge", map[string]any{"kind": "github", "url": forge.URL, "repo": "acme/web", "token": "ghp_x"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, env := range []map[string]any{
		{"name": "prod", "app": "web", "servers": []string{n.name}, "auto_deploy": true},
		{"name": "review", "app": "web", "servers": []string{n.name}, "allow_pull_requests": true},
	} {
		if _, err := api.Post(ctx, "/v1/envs", env, nil); err != nil {
			t.Fatal(err)
		}
	}

	hc := &http.Client{Timeout: 10 * time.Second}
	h, body := githubPullRequest("pr-1", 7, "main", head, secret)
	status, ans := sendHook(t, hc, n.api(), "web", h, body)
	if status != http.StatusCreated || ans.Build == nil || ans.Build.PullRequest != 7 || ans.Build.Commit != head {
		t.Fatalf("pull_request webhook: %d %+v", status, ans)
	}
	b := waitBuildVia(t, api, ans.Build.ID, "finished", 60*time.Second, func(b raftfsm.Build) bool { return b.Finished() })
	if b.State != raftfsm.BuildSucceeded || b.Release != "pr7-1" {
		t.Fatalf("pull request build %+v", b)
	}
	var rel raftfsm.Release
	if _, err := api.Get(ctx, "/v1/apps/web/releases/pr7-1", &rel); err != nil || rel.PullRequest != 7 || rel.Commit != head {
		t.Fatalf("release %+v %v", rel, err)
	}
	want := []string{"POST /repos/acme/web/statuses/" + head + " pending", "POST /repos/acme/web/statuses/" + head + " success"}
	testutil.Eventually(t, 30*time.Second, "GitHub to receive the pull request's statuses", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Sprint(statuses) == fmt.Sprint(want), fmt.Sprint(statuses)
	})

	_, err := api.Post(ctx, "/v1/envs/prod/deployments", deployer.CreateRequest{Release: "pr7-1"}, nil)
	if err == nil || !strings.Contains(err.Error(), "does not allow pull request releases") {
		t.Fatalf("deploy of a pull request release to prod: %v", err)
	}
	var dep deployer.CreateResult
	if _, err := api.Post(ctx, "/v1/envs/review/deployments", deployer.CreateRequest{Release: "pr7-1"}, &dep); err != nil || dep.Deployment == nil {
		t.Fatalf("deploy to review: %+v %v", dep, err)
	}
	waitDeployment(t, func() []*client.Client { return []*client.Client{api} }, dep.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)

	// A push to main: its release (v1) is what auto deploy sends to prod; the pull request's never went there.
	ph, pbody := forgePush(builder.ProviderGitHub, "push-1", "main", base, base, "web", secret)
	if status, ans := sendHook(t, hc, n.api(), "web", ph, pbody); status != http.StatusCreated {
		t.Fatalf("push: %d %+v", status, ans)
	}
	testutil.Eventually(t, 60*time.Second, "auto deploy of v1 to prod", func() (bool, string) {
		var deps []raftfsm.Deployment
		if _, err := api.Get(ctx, "/v1/envs/prod/deployments", &deps); err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, d := range deps {
			if d.Release != "v1" {
				t.Fatalf("prod got deployment %s of %s", d.ID, d.Release)
			}
			seen = append(seen, d.Release+":"+d.State)
		}
		return len(deps) == 1 && deps[0].State == raftfsm.DeploySucceeded, fmt.Sprint(seen)
	})
}
