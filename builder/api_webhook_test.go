package builder

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/shoal-ci/shoal/raftfsm"
)

// forgePush is a push webhook as GitHub, Gitea or GitLab sends it: the payload shape, the event and delivery
// headers, and the signature (HMAC-SHA256 of the body) or token, made with secret.
func forgePush(provider, delivery, branch, before, after, message, secret string) (http.Header, []byte) {
	ref := "refs/heads/" + branch
	commit := map[string]any{"id": after, "message": message, "timestamp": "2024-05-01T12:00:00Z",
		"author": map[string]any{"name": "Ada", "email": "ada@example.com"}}
	mac := func(body []byte) string {
		m := hmac.New(sha256.New, []byte(secret))
		m.Write(body)
		return hex.EncodeToString(m.Sum(nil))
	}
	h := http.Header{"Content-Type": {"application/json"}}
	var body []byte
	switch provider {
	case ProviderGitHub:
		body, _ = json.Marshal(map[string]any{"ref": ref, "before": before, "after": after, "created": false,
			"deleted": false, "forced": false, "head_commit": commit, "commits": []any{commit},
			"repository": map[string]any{"full_name": "octo/web", "clone_url": "https://github.com/octo/web.git"},
			"pusher":     map[string]any{"name": "octo"}})
		h.Set("User-Agent", "GitHub-Hookshot/044aadd")
		h.Set("X-GitHub-Event", "push")
		h.Set("X-GitHub-Delivery", delivery)
		h.Set("X-Hub-Signature-256", "sha256="+mac(body))
	case ProviderGitea:
		body, _ = json.Marshal(map[string]any{"ref": ref, "before": before, "after": after,
			"head_commit": commit, "commits": []any{commit},
			"repository": map[string]any{"full_name": "gitea/web"}, "pusher": map[string]any{"login": "gitea"}})
		// Gitea sends GitHub's and Gogs's headers beside its own.
		for _, p := range []string{"X-Gitea-", "X-Gogs-", "X-GitHub-"} {
			h.Set(p+"Event", "push")
			h.Set(p+"Delivery", delivery)
		}
		h.Set("X-Gitea-Signature", mac(body))
		h.Set("X-Gogs-Signature", mac(body))
		h.Set("X-Hub-Signature-256", "sha256="+mac(body))
	case ProviderGitLab:
		body, _ = json.Marshal(map[string]any{"object_kind": "push", "event_name": "push", "before": before,
			"after": after, "ref": ref, "checkout_sha": after, "commits": []any{commit}, "total_commits_count": 1,
			"project": map[string]any{"path_with_namespace": "group/web"}})
		h.Set("User-Agent", "GitLab/17.0.0")
		h.Set("X-Gitlab-Event", "Push Hook")
		h.Set("Idempotency-Key", delivery)
		h.Set("X-Gitlab-Event-UUID", delivery)
		h.Set("X-Gitlab-Token", secret)
	}
	return h, body
}

// hook posts a webhook to node i and returns the status and answer.
func (m *mesh) hook(i int, app string, h http.Header, body []byte) (int, HookResponse) {
	m.t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+m.c.Nodes[i].HTTPAddr()+"/v1/hooks/"+app, bytes.NewReader(body))
	if err != nil {
		m.t.Fatal(err)
	}
	req.Header = h
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		m.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out HookResponse
	_ = json.Unmarshal(data, &out)
	if out.Status == "" {
		out.Message = string(data)
	}
	return resp.StatusCode, out
}

func TestWebhooksFromEachForge(t *testing.T) {
	const secret = "hook-secret"
	repo, c1 := newAppRepo(t, "build:\n  build: ['echo \"built $SHOAL_COMMIT: $SHOAL_COMMIT_MESSAGE\"']\n", nil)
	m := newMesh(t, 1, Options{})
	m.createApp("web", map[string]any{"repo": repo.dir, "auto_build": true, "webhook_secret": secret})
	m.createApp("manual", map[string]any{"repo": repo.dir, "auto_build": false, "webhook_secret": secret})

	// Each forge pushes a new commit to main: each queues a build that runs.
	before := c1
	for i, provider := range []string{ProviderGitHub, ProviderGitLab, ProviderGitea} {
		sha := repo.commit(fmt.Sprintf("change %d from %s $(touch pwned)", i, provider), map[string]string{"n.txt": provider})
		h, body := forgePush(provider, "delivery-"+provider, "main", before, sha, "change from "+provider, secret)
		status, ans := m.hook(0, "web", h, body)
		if status != http.StatusCreated || ans.Status != hookQueued || ans.Build == nil || ans.Build.Commit != sha ||
			ans.Build.Trigger != "push" || ans.Build.Branch != "main" {
			t.Fatalf("%s push: %d %+v", provider, status, ans)
		}
		b := m.waitFinished(ans.Build.ID)
		if b.State != raftfsm.BuildSucceeded {
			t.Fatalf("%s build %+v\n%s", provider, b, m.buildLog(b.ID))
		}
		// The repeated delivery is ignored.
		if status, ans := m.hook(0, "web", h, body); status != http.StatusOK || ans.Status != hookDuplicate ||
			ans.Message != "duplicate delivery, ignored" {
			t.Errorf("%s redelivery: %d %+v", provider, status, ans)
		}
		before = sha
	}
	if rels := m.releases("web"); len(rels) != 3 {
		t.Errorf("releases %+v", rels)
	}

	head := before
	for _, tc := range []struct {
		name   string
		app    string
		header func() (http.Header, []byte)
		status int
		result string
	}{
		{"other branch", "web", func() (http.Header, []byte) {
			return forgePush(ProviderGitea, "d-other", "feature", head, head, "x", secret)
		}, http.StatusAccepted, hookIgnored},
		{"same commit, new delivery", "web", func() (http.Header, []byte) {
			return forgePush(ProviderGitHub, "d-again", "main", head, head, "x", secret)
		}, http.StatusOK, hookDuplicate},
		{"auto build off", "manual", func() (http.Header, []byte) {
			return forgePush(ProviderGitHub, "d-manual", "main", head, head, "x", secret)
		}, http.StatusAccepted, hookIgnored},
		{"wrong secret", "web", func() (http.Header, []byte) {
			return forgePush(ProviderGitHub, "d-bad", "main", head, head, "x", "not the secret")
		}, http.StatusUnauthorized, ""},
		{"wrong gitlab token", "web", func() (http.Header, []byte) {
			return forgePush(ProviderGitLab, "d-bad2", "main", head, head, "x", "not the secret")
		}, http.StatusUnauthorized, ""},
		{"tampered body", "web", func() (http.Header, []byte) {
			h, body := forgePush(ProviderGitea, "d-tamper", "main", head, head, "x", secret)
			return h, bytes.Replace(body, []byte(`"message":"x"`), []byte(`"message":"y"`), 1)
		}, http.StatusUnauthorized, ""},
		{"ping", "web", func() (http.Header, []byte) {
			h, body := forgePush(ProviderGitHub, "d-ping", "main", head, head, "x", secret)
			h.Set("X-GitHub-Event", "ping")
			return h, body
		}, http.StatusAccepted, hookIgnored},
		{"unknown provider", "web", func() (http.Header, []byte) {
			return http.Header{"Content-Type": {"application/json"}}, []byte(`{"ref":"refs/heads/main"}`)
		}, http.StatusBadRequest, ""},
		{"unknown app", "nope", func() (http.Header, []byte) {
			return forgePush(ProviderGitHub, "d-nope", "main", head, head, "x", secret)
		}, http.StatusUnauthorized, ""},
		{"too large", "web", func() (http.Header, []byte) {
			return forgePush(ProviderGitHub, "d-big", "main", head, head, strings.Repeat("x", 6<<20), secret)
		}, http.StatusRequestEntityTooLarge, ""},
	} {
		h, body := tc.header()
		status, ans := m.hook(0, tc.app, h, body)
		if status != tc.status || (tc.result != "" && ans.Status != tc.result) {
			t.Errorf("%s: %d %+v; want %d %s", tc.name, status, ans, tc.status, tc.result)
		}
	}
	// A webhook for an app that does not exist answers exactly as one without the right secret for an app that
	// does: the URL does not tell a stranger which apps exist.
	for _, p := range []string{ProviderGitHub, ProviderGitLab, ProviderGitea} {
		for _, key := range []string{"", "guess"} {
			h, body := forgePush(p, "d-probe", "main", head, head, "x", secret)
			if key == "" {
				for _, k := range []string{"X-Hub-Signature-256", "X-Gitlab-Token", "X-Gitea-Signature"} {
					h.Del(k)
				}
			} else {
				h, body = forgePush(p, "d-probe", "main", head, head, "x", key)
			}
			s1, a1 := m.hook(0, "web", h.Clone(), body)
			s2, a2 := m.hook(0, "no-such-app", h.Clone(), body)
			if s1 != s2 || a1 != a2 || s1 != http.StatusUnauthorized {
				t.Errorf("%s, secret %q: known app %d %q, unknown app %d %q; want the same 401", p, key, s1, a1.Message, s2, a2.Message)
			}
		}
	}
	var builds []raftfsm.Build
	if _, err := m.api(0).Get(t.Context(), "/v1/apps/web/builds", &builds); err != nil || len(builds) != 3 {
		t.Errorf("builds after ignored hooks: %d %v", len(builds), err)
	}
	hooks := m.svcs[0].m.webhooks
	for _, c := range []struct {
		provider, result string
		want             float64
	}{
		{ProviderGitHub, hookQueued, 1}, {ProviderGitLab, hookQueued, 1}, {ProviderGitea, hookQueued, 1},
		{ProviderGitHub, hookDuplicate, 2}, {ProviderGitHub, hookBadSignature, 3}, {ProviderGitLab, hookBadSignature, 3},
		{ProviderGitea, hookIgnored, 1}, {ProviderGitHub, hookIgnored, 2}, {"unknown", hookUnknownProvider, 1},
		{ProviderGitHub, hookUnknownApp, 3}, {ProviderGitHub, hookBadRequest, 1},
	} {
		if got := metricValue(hooks.WithLabelValues(c.provider, c.result)); got != c.want {
			t.Errorf("shoal_webhook_requests_total{provider=%s,result=%s} = %v, want %v", c.provider, c.result, got, c.want)
		}
	}
}
