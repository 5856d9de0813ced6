package builder

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/shoal-ci/shoal/raftfsm"
)

// forgePullRequest is a pull (GitHub, Gitea) or merge (GitLab) request webhook in each forge's documented shape
// and headers, signed with secret: action is the forge's own word (opened/synchronize, synchronized, open/update).
func forgePullRequest(provider, delivery, action string, number int, head, base, sha, title, secret string) (http.Header, []byte) {
	// The push helper gives the headers and signature; only the event and the body differ.
	h, _ := forgePush(provider, delivery, base, sha, sha, title, secret)
	var body []byte
	switch provider {
	case ProviderGitHub, ProviderGitea:
		body, _ = json.Marshal(map[string]any{"action": action, "number": number,
			"pull_request": map[string]any{"number": number, "title": title, "state": "open",
				"head": map[string]any{"ref": head, "sha": sha, "repo": map[string]any{"full_name": "fork/web"}},
				"base": map[string]any{"ref": base, "sha": strings.Repeat("0", 39) + "1"}},
			"repository": map[string]any{"full_name": "octo/web"}, "sender": map[string]any{"login": "ada"}})
		for _, p := range []string{"X-GitHub-", "X-Gitea-", "X-Gogs-"} {
			if h.Get(p+"Event") != "" {
				h.Set(p+"Event", "pull_request")
			}
		}
	case ProviderGitLab:
		attrs := map[string]any{"iid": number, "title": title, "action": action, "state": "opened",
			"source_branch": head, "target_branch": base,
			"last_commit": map[string]any{"id": sha, "message": title + "\n", "title": title}}
		if action == "update" {
			attrs["oldrev"] = strings.Repeat("a", 40)
		}
		body, _ = json.Marshal(map[string]any{"object_kind": "merge_request", "event_type": "merge_request",
			"project": map[string]any{"path_with_namespace": "group/web"}, "object_attributes": attrs})
		h.Set("X-Gitlab-Event", "Merge Request Hook")
	}
	// Signed as the forge signs: the HMAC-SHA256 of this body (GitLab sends its token as it is).
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	sig := hex.EncodeToString(mac.Sum(nil))
	for _, k := range []string{"X-Gitea-Signature", "X-Gogs-Signature"} {
		if h.Get(k) != "" {
			h.Set(k, sig)
		}
	}
	if h.Get("X-Hub-Signature-256") != "" {
		h.Set("X-Hub-Signature-256", "sha256="+sig)
	}
	return h, body
}

type hookCase struct {
	name, app string
	h         http.Header
	body      []byte
	status    int
	result    string
}

func TestPullRequestWebhooksFromEachForge(t *testing.T) {
	const secret = "hook-secret"
	repo, _ := newAppRepo(t, "build:\n  build: ['echo \"pr build of $SHOAL_BRANCH at $SHOAL_COMMIT\"']\n", nil)
	repo.git("checkout", "-q", "-b", "feature")
	m := newMesh(t, 1, Options{})
	m.createApp("web", map[string]any{"repo": repo.dir, "auto_build": true, "webhook_secret": secret, "pull_requests": true})
	m.createApp("nopr", map[string]any{"repo": repo.dir, "auto_build": true, "webhook_secret": secret})

	for i, tc := range []struct{ provider, open, update string }{
		{ProviderGitHub, "opened", "synchronize"}, {ProviderGitea, "opened", "synchronized"}, {ProviderGitLab, "open", "update"},
	} {
		number := 10 + i
		for j, action := range []string{tc.open, tc.update} {
			sha := repo.commit(tc.provider+" "+action, map[string]string{"pr.txt": tc.provider + action})
			h, body := forgePullRequest(tc.provider, tc.provider+action, action, number, "feature", "main", sha, "Add a thing", secret)
			status, ans := m.hook(0, "web", h, body)
			if status != http.StatusCreated || ans.Build == nil || ans.Build.Trigger != raftfsm.TriggerPullRequest ||
				ans.Build.PullRequest != number || ans.Build.Commit != sha || ans.Build.Branch != "feature" {
				t.Fatalf("%s %s: %d %+v", tc.provider, action, status, ans)
			}
			b := m.waitFinished(ans.Build.ID)
			if b.State != raftfsm.BuildSucceeded || !strings.Contains(m.buildLog(b.ID), "pr build of feature at "+sha) {
				t.Fatalf("%s build %+v\n%s", tc.provider, b, m.buildLog(b.ID))
			}
			var rel raftfsm.Release
			if _, err := m.api(0).Get(t.Context(), "/v1/apps/web/releases/"+b.Release, &rel); err != nil {
				t.Fatal(err)
			}
			if rel.PullRequest != number || !strings.HasPrefix(rel.Version, "pr") || rel.Commit != sha {
				t.Fatalf("%s release %+v: want one marked as from pull request #%d", tc.provider, rel, number)
			}
			// The redelivery is a duplicate.
			if status, ans := m.hook(0, "web", h, body); status != http.StatusOK || ans.Status != hookDuplicate {
				t.Errorf("%s redelivery #%d: %d %+v", tc.provider, j, status, ans)
			}
		}
	}
	// The pull requests made no release of the app's own numbering.
	for _, r := range m.releases("web") {
		if r.PullRequest == 0 || r.Version == "v1" {
			t.Errorf("release %+v is not marked as from a pull request", r)
		}
	}

	head := repo.commit("more", map[string]string{"pr.txt": "more"})
	var cases []hookCase
	add := func(name, app string, status int, result string, h http.Header, b []byte) {
		cases = append(cases, hookCase{name, app, h, b, status, result})
	}
	h, b := forgePullRequest(ProviderGitHub, "closed", "closed", 10, "feature", "main", head, "x", secret)
	add("closed", "web", http.StatusAccepted, hookIgnored, h, b)
	h, b = forgePullRequest(ProviderGitLab, "labels", "update", 12, "feature", "main", head, "x", secret)
	var v map[string]any
	_ = json.Unmarshal(b, &v)
	delete(v["object_attributes"].(map[string]any), "oldrev") // a title or label change: no new commit
	b, _ = json.Marshal(v)
	h.Set("X-Gitlab-Token", secret)
	add("gitlab update without oldrev", "web", http.StatusAccepted, hookIgnored, h, b)
	h, b = forgePullRequest(ProviderGitHub, "nopr", "opened", 3, "feature", "main", head, "x", secret)
	add("app without pull requests", "nopr", http.StatusAccepted, hookIgnored, h, b)
	h, b = forgePullRequest(ProviderGitea, "bad", "opened", 4, "feature", "main", head, "x", "wrong")
	add("wrong secret", "web", http.StatusUnauthorized, "", h, b)
	h, b = forgePullRequest(ProviderGitHub, "badsha", "opened", 5, "feature", "main", "not-a-sha", "x", secret)
	add("bad head sha", "web", http.StatusBadRequest, "", h, b)
	for _, tc := range cases {
		status, ans := m.hook(0, tc.app, tc.h, tc.body)
		if status != tc.status || (tc.result != "" && ans.Status != tc.result) {
			t.Errorf("%s: %d %+v; want %d %s", tc.name, status, ans, tc.status, tc.result)
		}
	}
}
