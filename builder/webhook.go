package builder

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Webhook errors, told apart with errors.Is so the HTTP layer can answer with the right status.
var (
	// ErrUnknownProvider: the request carries none of GitHub's, Gitea's or GitLab's event headers.
	ErrUnknownProvider = errors.New("not a GitHub, Gitea or GitLab webhook")
	// ErrBadSignature: the signature or token is missing or wrong, or the app has no secret to check it with.
	ErrBadSignature = errors.New("webhook signature does not match the app's secret")
	// ErrNotPush: an authentic event that is not a push to build (a ping, an issue, a branch deletion).
	ErrNotPush = errors.New("webhook event is not a push")
	// ErrBadPayload: an authentic push whose body cannot be read.
	ErrBadPayload = errors.New("webhook push payload is malformed")
)

// Webhook providers.
const (
	ProviderGitHub = "github"
	ProviderGitea  = "gitea"
	ProviderGitLab = "gitlab"
)

// Push is a verified push event.
type Push struct {
	Provider string
	Delivery string // the forge's delivery id, for ignoring redeliveries
	Ref      string // full ref: refs/heads/main, refs/tags/v1
	Branch   string // "main" for refs/heads/main; "" for a tag
	Commit   string // full sha of the pushed commit
	Message  string // its commit message, when the forge sent it
	// PullRequest is set for a pull or merge request event: Commit is the request's head.
	PullRequest *PullRequest
}

// ParseWebhook verifies a push webhook against the app's secret and extracts the push. body must be the
// raw request body, byte for byte, since the signature covers exactly those bytes. Signatures are checked
// before anything in the body is looked at, and compared in constant time.
func ParseWebhook(h http.Header, body []byte, secret string) (*Push, error) {
	var (
		provider, event, delivery string
		verify                    func() error
	)
	switch {
	// Gitea also sends GitHub's and Gogs's headers, so it is recognised first.
	case h.Get("X-Gitea-Event") != "":
		provider, event, delivery = ProviderGitea, h.Get("X-Gitea-Event"), h.Get("X-Gitea-Delivery")
		verify = func() error { return verifyHMAC("X-Gitea-Signature", h.Get("X-Gitea-Signature"), "", body, secret) }
	case h.Get("X-Gitlab-Event") != "":
		provider, event = ProviderGitLab, h.Get("X-Gitlab-Event")
		// Idempotency-Key stays the same when GitLab retries a delivery; the UUIDs are for older versions.
		delivery = firstNonEmpty(h.Get("Idempotency-Key"), h.Get("X-Gitlab-Event-UUID"), h.Get("X-Gitlab-Webhook-UUID"))
		verify = func() error { return verifyToken(h.Get("X-Gitlab-Token"), secret) }
	case h.Get("X-GitHub-Event") != "":
		provider, event, delivery = ProviderGitHub, h.Get("X-GitHub-Event"), h.Get("X-GitHub-Delivery")
		verify = func() error {
			return verifyHMAC("X-Hub-Signature-256", h.Get("X-Hub-Signature-256"), "sha256=", body, secret)
		}
	default:
		return nil, ErrUnknownProvider
	}
	if secret == "" {
		return nil, fmt.Errorf("%w: the app has no webhook secret; set one on the app and the same one in the %s webhook", ErrBadSignature, provider)
	}
	if err := verify(); err != nil {
		return nil, err
	}

	var p *Push
	var err error
	switch {
	case isPullRequestEvent(provider, event):
		p, err = parsePullRequest(provider, h, body)
		if err != nil {
			return nil, err
		}
		p.Provider, p.Delivery, p.Branch = provider, delivery, p.PullRequest.Head
		return p, nil
	case provider == ProviderGitLab:
		if event != "Push Hook" && event != "Tag Push Hook" {
			return nil, fmt.Errorf("%w: GitLab sent a %q event", ErrNotPush, event)
		}
		p, err = parseGitLabPush(body)
	default:
		if event != "push" {
			return nil, fmt.Errorf("%w: %s sent a %q event", ErrNotPush, provider, event)
		}
		p, err = parseGitHubPush(h, body)
	}
	if err != nil {
		return nil, err
	}
	p.Provider, p.Delivery = provider, delivery
	if branch, ok := strings.CutPrefix(p.Ref, "refs/heads/"); ok {
		p.Branch = branch
	}
	return p, nil
}

// verifyHMAC checks a hex HMAC-SHA256 of the body, after an optional prefix such as GitHub's "sha256=".
func verifyHMAC(header, value, prefix string, body []byte, secret string) error {
	if value == "" {
		return fmt.Errorf("%w: the request has no %s header; set the secret in the forge's webhook settings", ErrBadSignature, header)
	}
	sig, ok := strings.CutPrefix(value, prefix)
	got, err := hex.DecodeString(sig)
	if !ok || err != nil {
		return fmt.Errorf("%w: %s is not %shex", ErrBadSignature, header, prefix)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return fmt.Errorf("%w: check that the forge and the app use the same secret", ErrBadSignature)
	}
	return nil
}

// verifyToken compares GitLab's plain token with the secret. Both are hashed first so that the comparison
// takes the same time whatever their lengths.
func verifyToken(token, secret string) error {
	if token == "" {
		return fmt.Errorf("%w: the request has no X-Gitlab-Token header; set the secret token in GitLab's webhook settings", ErrBadSignature)
	}
	a, b := sha256.Sum256([]byte(token)), sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
		return fmt.Errorf("%w: check that GitLab's secret token is the app's webhook secret", ErrBadSignature)
	}
	return nil
}

type commitJSON struct {
	ID      string `json:"id"`
	Message string `json:"message"`
}

// parseGitHubPush reads the push payload GitHub and Gitea share, sent as JSON or, when the hook is set to
// the form content type, as a form field "payload".
func parseGitHubPush(h http.Header, body []byte) (*Push, error) {
	if strings.HasPrefix(h.Get("Content-Type"), "application/x-www-form-urlencoded") {
		form, err := url.ParseQuery(string(body))
		if err != nil || form.Get("payload") == "" {
			return nil, fmt.Errorf("%w: a form body without a payload field", ErrBadPayload)
		}
		body = []byte(form.Get("payload"))
	}
	var v struct {
		Ref        string       `json:"ref"`
		After      string       `json:"after"`
		Deleted    bool         `json:"deleted"`
		HeadCommit *commitJSON  `json:"head_commit"`
		Commits    []commitJSON `json:"commits"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	if v.Deleted || isZeroSHA(v.After) {
		return nil, fmt.Errorf("%w: %s was deleted, nothing to build", ErrNotPush, v.Ref)
	}
	// For an annotated tag "after" names the tag object; head_commit is the commit it points at.
	commit, message := v.After, ""
	if v.HeadCommit != nil && v.HeadCommit.ID != "" {
		commit, message = v.HeadCommit.ID, v.HeadCommit.Message
	} else {
		message = messageOf(v.Commits, commit)
	}
	return checkPush(v.Ref, commit, message)
}

// parseGitLabPush reads GitLab's push and tag push payloads.
func parseGitLabPush(body []byte) (*Push, error) {
	var v struct {
		Ref         string       `json:"ref"`
		After       string       `json:"after"`
		CheckoutSHA *string      `json:"checkout_sha"`
		Commits     []commitJSON `json:"commits"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	if v.CheckoutSHA == nil || *v.CheckoutSHA == "" || isZeroSHA(v.After) {
		return nil, fmt.Errorf("%w: %s was deleted, nothing to build", ErrNotPush, v.Ref)
	}
	return checkPush(v.Ref, *v.CheckoutSHA, messageOf(v.Commits, *v.CheckoutSHA))
}

func checkPush(ref, commit, message string) (*Push, error) {
	if !strings.HasPrefix(ref, "refs/") {
		return nil, fmt.Errorf("%w: ref %q is not a full ref", ErrBadPayload, ref)
	}
	// Git refuses such names itself; a payload that carries one is not from a forge, and a name that starts
	// with '-' reads as an option to any command it reaches.
	for _, part := range strings.Split(ref, "/")[1:] {
		if part == "" || strings.HasPrefix(part, "-") || strings.ContainsFunc(part, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return nil, fmt.Errorf("%w: ref %q is not a valid git ref", ErrBadPayload, ref)
		}
	}
	if !isSHA(commit) {
		return nil, fmt.Errorf("%w: commit %q is not a full sha", ErrBadPayload, commit)
	}
	return &Push{Ref: ref, Commit: commit, Message: message}, nil
}

// messageOf finds a commit's message in a push's commit list.
func messageOf(commits []commitJSON, id string) string {
	for _, c := range commits {
		if c.ID == id {
			return c.Message
		}
	}
	return ""
}

func isZeroSHA(s string) bool {
	return s != "" && strings.Trim(s, "0") == ""
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
