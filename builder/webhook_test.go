package builder

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

const (
	hookSecret = "It's a Secret to Everybody"
	sha1st     = "9a4d1b6fdd4fa7c6bc7e1fd8e4e3b2a6bbb2f0a1"
	sha2nd     = "bffeb74224043ba2feb48d137756c8a9331c449a"
	tagObject  = "1111111111111111111111111111111111111111"
)

func hexHMAC(body []byte) string {
	m := hmac.New(sha256.New, []byte(hookSecret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// A push payload as GitHub sends it (trimmed to the fields a reader would recognise).
func githubPushBody(ref, after string, headCommit bool) []byte {
	v := map[string]any{
		"ref": ref, "before": sha1st, "after": after, "created": false, "deleted": false, "forced": false,
		"compare": "https://github.com/octo/app/compare/9a4d1b6fdd4f...bffeb7422404",
		"repository": map[string]any{"id": 1, "full_name": "octo/app", "clone_url": "https://github.com/octo/app.git",
			"default_branch": "main"},
		"pusher": map[string]any{"name": "octo", "email": "octo@example.com"},
		"commits": []any{map[string]any{"id": sha2nd, "message": "Fix the build\n\nLonger body $(rm -rf /)",
			"author": map[string]any{"name": "Octo", "email": "octo@example.com"}}},
	}
	if headCommit {
		v["head_commit"] = map[string]any{"id": sha2nd, "message": "Fix the build\n\nLonger body $(rm -rf /)",
			"timestamp": "2024-05-01T12:00:00Z"}
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	return b
}

func githubHeaders(event string, body []byte) http.Header {
	m1 := hmac.New(sha1.New, []byte(hookSecret))
	m1.Write(body)
	return http.Header{
		"User-Agent":          {"GitHub-Hookshot/044aadd"},
		"Content-Type":        {"application/json"},
		"X-Github-Event":      {event},
		"X-Github-Delivery":   {"72d3162e-cc78-11e3-81ab-4c9367dc0958"},
		"X-Github-Hook-Id":    {"292430182"},
		"X-Hub-Signature":     {"sha1=" + hex.EncodeToString(m1.Sum(nil))},
		"X-Hub-Signature-256": {"sha256=" + hexHMAC(body)},
	}
}

// A push payload as Gitea sends it.
func giteaPushBody() []byte {
	return []byte(`{
  "ref": "refs/heads/develop",
  "before": "28e1879d029cb852e4844d9c718537df08844e03",
  "after": "bffeb74224043ba2feb48d137756c8a9331c449a",
  "compare_url": "http://localhost:3000/gitea/webhooks/compare/28e1879d029cb852e4844d9c718537df08844e03...bffeb74224043ba2feb48d137756c8a9331c449a",
  "commits": [
    {
      "id": "bffeb74224043ba2feb48d137756c8a9331c449a",
      "message": "Webhooks Yay!",
      "url": "http://localhost:3000/gitea/webhooks/commit/bffeb74224043ba2feb48d137756c8a9331c449a",
      "author": {"name": "Gitea", "email": "someone@gitea.io", "username": "gitea"},
      "timestamp": "2017-03-13T13:52:11-04:00"
    }
  ],
  "head_commit": {
    "id": "bffeb74224043ba2feb48d137756c8a9331c449a",
    "message": "Webhooks Yay!",
    "timestamp": "2017-03-13T13:52:11-04:00"
  },
  "repository": {"id": 140, "full_name": "gitea/webhooks", "clone_url": "http://localhost:3000/gitea/webhooks.git"},
  "pusher": {"id": 1, "login": "gitea"},
  "sender": {"id": 1, "login": "gitea"}
}`)
}

func giteaHeaders(event string, body []byte) http.Header {
	return http.Header{
		"Content-Type":        {"application/json"},
		"X-Github-Delivery":   {"f6266f16-1bf3-46a5-9ea4-602e06ead473"},
		"X-Github-Event":      {event},
		"X-Gogs-Delivery":     {"f6266f16-1bf3-46a5-9ea4-602e06ead473"},
		"X-Gogs-Event":        {event},
		"X-Gogs-Signature":    {hexHMAC(body)},
		"X-Gitea-Delivery":    {"f6266f16-1bf3-46a5-9ea4-602e06ead473"},
		"X-Gitea-Event":       {event},
		"X-Gitea-Signature":   {hexHMAC(body)},
		"X-Hub-Signature-256": {"sha256=" + hexHMAC(body)},
	}
}

// A push payload as GitLab sends it.
func gitlabPushBody(kind, ref, checkout string) []byte {
	v := map[string]any{
		"object_kind": kind, "event_name": kind, "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
		"after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "ref": ref, "ref_protected": true,
		"checkout_sha": checkout, "user_name": "John Smith", "project_id": 15,
		"project": map[string]any{"path_with_namespace": "mike/diaspora", "git_http_url": "http://example.com/mike/diaspora.git"},
		"commits": []any{
			map[string]any{"id": "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327", "message": "Update Catalan translation to e38cb41.\n"},
			map[string]any{"id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "message": "fixed readme\n"},
		},
		"total_commits_count": 2,
	}
	if checkout == "" {
		v["checkout_sha"] = nil
	}
	b, _ := json.Marshal(v)
	return b
}

func gitlabHeaders(event, token string) http.Header {
	h := http.Header{
		"Content-Type":                    {"application/json"},
		"User-Agent":                      {"GitLab/17.0.0"},
		"X-Gitlab-Event":                  {event},
		"X-Gitlab-Instance":               {"https://gitlab.example.com"},
		"X-Gitlab-Webhook-Uuid":           {"a4e1ea4c-1e7a-4e5b-8f7c-2d0c3b1a9e11"},
		"X-Gitlab-Event-Uuid":             {"13792a34-cac6-4fda-95a8-c58e00a3954e"},
		"Idempotency-Key":                 {"908a6d9e-45fd-46c8-97e6-c4f350f219dd"},
		"X-Gitlab-Webhook-Attempt-Number": {"1"},
	}
	if token != "" {
		h.Set("X-Gitlab-Token", token)
	}
	return h
}

// deliver sends the webhook over real HTTP to a handler that hands the raw body to ParseWebhook, as the
// API will.
func deliver(t *testing.T, h http.Header, body []byte) (*Push, error) {
	t.Helper()
	var push *Push
	var perr error
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
		}
		push, perr = ParseWebhook(r.Header, raw, hookSecret)
	}))
	defer srv.Close()
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/hooks/app", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return push, perr
}

func TestWebhookPushes(t *testing.T) {
	ghBody := githubPushBody("refs/heads/main", sha2nd, true)
	form := []byte("payload=" + url.QueryEscape(string(ghBody)))
	formHeaders := githubHeaders("push", form)
	formHeaders.Set("Content-Type", "application/x-www-form-urlencoded")
	tagBody := githubPushBody("refs/tags/v1.2.0", tagObject, true)
	noHead := githubPushBody("refs/heads/main", sha2nd, false)
	gtBody := giteaPushBody()
	glBody := gitlabPushBody("push", "refs/heads/master", "da1560886d4f094c3e6c9ef40349f7d38b5d27d7")
	glTag := gitlabPushBody("tag_push", "refs/tags/v1.0.0", "da1560886d4f094c3e6c9ef40349f7d38b5d27d7")

	tests := []struct {
		name string
		h    http.Header
		body []byte
		want Push
	}{
		{"github", githubHeaders("push", ghBody), ghBody, Push{ProviderGitHub, "72d3162e-cc78-11e3-81ab-4c9367dc0958",
			"refs/heads/main", "main", sha2nd, "Fix the build\n\nLonger body $(rm -rf /)", nil}},
		{"github form", formHeaders, form, Push{ProviderGitHub, "72d3162e-cc78-11e3-81ab-4c9367dc0958",
			"refs/heads/main", "main", sha2nd, "Fix the build\n\nLonger body $(rm -rf /)", nil}},
		{"github tag", githubHeaders("push", tagBody), tagBody, Push{ProviderGitHub, "72d3162e-cc78-11e3-81ab-4c9367dc0958",
			"refs/tags/v1.2.0", "", sha2nd, "Fix the build\n\nLonger body $(rm -rf /)", nil}},
		{"github without head_commit", githubHeaders("push", noHead), noHead, Push{ProviderGitHub, "72d3162e-cc78-11e3-81ab-4c9367dc0958",
			"refs/heads/main", "main", sha2nd, "Fix the build\n\nLonger body $(rm -rf /)", nil}},
		{"gitea", giteaHeaders("push", gtBody), gtBody, Push{ProviderGitea, "f6266f16-1bf3-46a5-9ea4-602e06ead473",
			"refs/heads/develop", "develop", sha2nd, "Webhooks Yay!", nil}},
		{"gitlab", gitlabHeaders("Push Hook", hookSecret), glBody, Push{ProviderGitLab, "908a6d9e-45fd-46c8-97e6-c4f350f219dd",
			"refs/heads/master", "master", "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "fixed readme\n", nil}},
		{"gitlab tag", gitlabHeaders("Tag Push Hook", hookSecret), glTag, Push{ProviderGitLab, "908a6d9e-45fd-46c8-97e6-c4f350f219dd",
			"refs/tags/v1.0.0", "", "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "fixed readme\n", nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := deliver(t, tt.h, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if *p != tt.want {
				t.Errorf("got  %+v\nwant %+v", *p, tt.want)
			}
		})
	}

	// Older GitLab sends only X-Gitlab-Event-UUID.
	h := gitlabHeaders("Push Hook", hookSecret)
	h.Del("Idempotency-Key")
	if p, err := deliver(t, h, glBody); err != nil || p.Delivery != "13792a34-cac6-4fda-95a8-c58e00a3954e" {
		t.Errorf("GitLab without Idempotency-Key: %+v, %v", p, err)
	}
}

func TestWebhookRefusals(t *testing.T) {
	ghBody := githubPushBody("refs/heads/main", sha2nd, true)
	gtBody := giteaPushBody()
	glBody := gitlabPushBody("push", "refs/heads/master", "da1560886d4f094c3e6c9ef40349f7d38b5d27d7")

	tampered := append([]byte(nil), ghBody...)
	tampered[len(tampered)-2] = ' '
	noSig := githubHeaders("push", ghBody)
	noSig.Del("X-Hub-Signature-256") // the legacy sha1 signature alone is not enough
	otherSecret := githubHeaders("push", ghBody)
	m := hmac.New(sha256.New, []byte("another secret"))
	m.Write(ghBody)
	otherSecret.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(m.Sum(nil)))
	garbled := githubHeaders("push", ghBody)
	garbled.Set("X-Hub-Signature-256", "sha256=zz")
	giteaNoSig := giteaHeaders("push", gtBody)
	giteaNoSig.Del("X-Gitea-Signature")
	pingBody := []byte(`{"zen":"Keep it logically awesome.","hook_id":1}`)
	deleted := []byte(`{"ref":"refs/heads/gone","before":"` + sha2nd + `","after":"0000000000000000000000000000000000000000","deleted":true,"head_commit":null}`)
	glDeleted := gitlabPushBody("push", "refs/heads/gone", "")
	badJSON := []byte(`{"ref": "refs/heads/main", "after": 12}`)
	mrClosed := []byte(`{"object_kind":"merge_request","object_attributes":{"iid":3,"action":"close","source_branch":"f","target_branch":"main","last_commit":{"id":"` + sha2nd + `"}}}`)

	tests := []struct {
		name   string
		h      http.Header
		body   []byte
		secret string
		want   error
	}{
		{"no provider", http.Header{"Content-Type": {"application/json"}}, ghBody, hookSecret, ErrUnknownProvider},
		{"github tampered body", githubHeaders("push", ghBody), tampered, hookSecret, ErrBadSignature},
		{"github missing signature", noSig, ghBody, hookSecret, ErrBadSignature},
		{"github other secret", otherSecret, ghBody, hookSecret, ErrBadSignature},
		{"github garbled signature", garbled, ghBody, hookSecret, ErrBadSignature},
		{"app without secret", githubHeaders("push", ghBody), ghBody, "", ErrBadSignature},
		{"gitea wrong signature", giteaHeaders("push", []byte("other")), gtBody, hookSecret, ErrBadSignature},
		{"gitea missing signature", giteaNoSig, gtBody, hookSecret, ErrBadSignature},
		{"gitlab wrong token", gitlabHeaders("Push Hook", "guess"), glBody, hookSecret, ErrBadSignature},
		{"gitlab missing token", gitlabHeaders("Push Hook", ""), glBody, hookSecret, ErrBadSignature},
		{"github ping", githubHeaders("ping", pingBody), pingBody, hookSecret, ErrNotPush},
		{"gitea issue", giteaHeaders("issues", gtBody), gtBody, hookSecret, ErrNotPush},
		// A merge request closed puts no new commit on it; one without its attributes is malformed.
		{"gitlab merge request closed", gitlabHeaders("Merge Request Hook", hookSecret), mrClosed, hookSecret, ErrNotPush},
		{"gitlab merge request without attributes", gitlabHeaders("Merge Request Hook", hookSecret), glBody, hookSecret, ErrBadPayload},
		{"github branch deleted", githubHeaders("push", deleted), deleted, hookSecret, ErrNotPush},
		{"gitlab branch deleted", gitlabHeaders("Push Hook", hookSecret), glDeleted, hookSecret, ErrNotPush},
		{"bad payload", githubHeaders("push", badJSON), badJSON, hookSecret, ErrBadPayload},
		// A bad signature is reported before the event type: unauthenticated callers learn nothing.
		{"ping with bad signature", githubHeaders("ping", pingBody), ghBody, hookSecret, ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParseWebhook(tt.h, tt.body, tt.secret)
			if !errors.Is(err, tt.want) {
				t.Errorf("err = %v (push %+v), want %v", err, p, tt.want)
			}
		})
	}
}
