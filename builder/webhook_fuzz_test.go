package builder

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

const fuzzSecret = "fuzz-secret"

var fullSHA = regexp.MustCompile(`^([0-9a-f]{40}|[0-9a-f]{64})$`)

// fuzzHook signs body as provider does (or, when sign is false, sends sig as the signature) and checks what
// ParseWebhook promises: no panic; a forged signature never passes; a push it returns has a full ref and sha.
func fuzzHook(t *testing.T, provider string, body []byte, event, sig string, sign, form bool) {
	m := hmac.New(sha256.New, []byte(fuzzSecret))
	m.Write(body)
	mac := hex.EncodeToString(m.Sum(nil))
	h := http.Header{"Content-Type": {"application/json"}}
	if form {
		h.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	good := false
	switch provider {
	case ProviderGitHub:
		h.Set("X-GitHub-Event", event)
		if sign {
			sig = "sha256=" + mac
		}
		good = sig == "sha256="+mac
		h.Set("X-Hub-Signature-256", sig)
	case ProviderGitea:
		h.Set("X-Gitea-Event", event)
		if sign {
			sig = mac
		}
		good = strings.EqualFold(sig, mac)
		h.Set("X-Gitea-Signature", sig)
	case ProviderGitLab:
		h.Set("X-Gitlab-Event", event)
		if sign {
			sig = fuzzSecret
		}
		good = sig == fuzzSecret
		h.Set("X-Gitlab-Token", sig)
	}
	if h.Get("X-GitHub-Event")+h.Get("X-Gitea-Event")+h.Get("X-Gitlab-Event") == "" {
		return // no event header: an unknown provider, checked elsewhere
	}
	p, err := ParseWebhook(h, body, fuzzSecret)
	if err != nil {
		if good && errors.Is(err, ErrBadSignature) {
			t.Fatalf("a correctly signed %s webhook was refused: %v", provider, err)
		}
		return
	}
	if !good {
		t.Fatalf("a %s webhook with signature %q passed", provider, sig)
	}
	if !strings.HasPrefix(p.Ref, "refs/") || !fullSHA.MatchString(strings.ToLower(p.Commit)) {
		t.Fatalf("push %+v has no full ref or sha", p)
	}
	if strings.Contains(p.Ref, "/-") || p.Branch != "" && p.Ref != "refs/heads/"+p.Branch {
		t.Fatalf("push %+v: branch %q does not come from its ref", p, p.Branch)
	}
}

const fuzzSHA = "0123456789abcdef0123456789abcdef01234567"

func FuzzWebhookGitHub(f *testing.F) {
	f.Add([]byte(`{"ref":"refs/heads/main","after":"`+fuzzSHA+`","head_commit":{"id":"`+fuzzSHA+`","message":"m"}}`), "push", "", true, false)
	f.Add([]byte(`payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%7D`), "push", "", true, true)
	f.Add([]byte(`{"ref":"refs/tags/v1","after":"`+fuzzSHA+`","deleted":true}`), "push", "sha256=00", false, false)
	f.Add([]byte(`{}`), "ping", "", true, false)
	f.Fuzz(func(t *testing.T, body []byte, event, sig string, sign, form bool) {
		fuzzHook(t, ProviderGitHub, body, event, sig, sign, form)
	})
}

func FuzzWebhookGitea(f *testing.F) {
	f.Add([]byte(`{"ref":"refs/heads/main","after":"`+fuzzSHA+`","commits":[{"id":"`+fuzzSHA+`","message":"m"}]}`), "push", "", true, false)
	f.Add([]byte(`{"ref":"refs/heads/-x","after":"`+fuzzSHA+`"}`), "push", "", true, false)
	f.Add([]byte(`{"ref":"main"}`), "push", "zz", false, false)
	f.Fuzz(func(t *testing.T, body []byte, event, sig string, sign, form bool) {
		fuzzHook(t, ProviderGitea, body, event, sig, sign, form)
	})
}

func FuzzWebhookGitLab(f *testing.F) {
	f.Add([]byte(`{"ref":"refs/heads/main","after":"`+fuzzSHA+`","checkout_sha":"`+fuzzSHA+`","commits":[]}`), "Push Hook", "", true, false)
	f.Add([]byte(`{"ref":"refs/tags/v1","after":"`+fuzzSHA+`","checkout_sha":"`+fuzzSHA+`"}`), "Tag Push Hook", "", true, false)
	f.Add([]byte(`{"ref":"refs/heads/main","checkout_sha":null}`), "Push Hook", "wrong", false, false)
	f.Fuzz(func(t *testing.T, body []byte, event, sig string, sign, form bool) {
		fuzzHook(t, ProviderGitLab, body, event, sig, sign, form)
	})
}
