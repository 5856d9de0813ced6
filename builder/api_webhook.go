package builder

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/errs"
	"github.com/shoal-ci/shoal/raftfsm"
)

// maxHookBody bounds a webhook body. Forges send the whole push (up to thousands of commits) in one request.
const maxHookBody = 5 << 20

// unknownAppSecret is the secret a webhook for an unknown app is checked against: random, never shown.
var unknownAppSecret = func() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}()

// HookResponse is the answer to a webhook: what became of the push.
type HookResponse struct {
	// Status is queued, duplicate or ignored.
	Status  string         `json:"status"`
	Message string         `json:"message"`
	Build   *raftfsm.Build `json:"build,omitempty"`
}

// postHook serves POST /v1/hooks/{app}: no API token, the body is verified against the app's webhook secret
// instead. A push to the app's branch queues a build (201); a redelivery or an already built commit is
// answered 200 and ignored; other events and branches 202 and ignored.
func (s *Service) postHook(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("app")
	provider := providerOf(r.Header)
	count := func(result string) { s.m.webhooks.WithLabelValues(provider, result).Inc() }
	app, known := s.appFresh(r.Context(), name)
	if !known {
		// Answer exactly as a known app answers a request without its secret, so the webhook URL does not tell
		// a stranger which apps exist: check the request against a secret nobody has. Only the log and the
		// metric say the app is unknown.
		app = raftfsm.App{Name: name, WebhookSecret: unknownAppSecret}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxHookBody+1))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) || len(body) > maxHookBody {
		count(hookBadRequest)
		return errs.New(errs.TooLarge, "the webhook body is over the %d-byte limit: send push events only", maxHookBody)
	}
	if err != nil {
		count(hookBadRequest)
		return badRequest("read the webhook body: %v", err)
	}
	push, err := ParseWebhook(r.Header, body, app.WebhookSecret)
	if !known && !errors.Is(err, ErrUnknownProvider) {
		count(hookUnknownApp)
		s.log.Warn("webhook for an unknown app refused", "app", name, "provider", provider, "remote", r.RemoteAddr)
		if err == nil || !errors.Is(err, ErrBadSignature) {
			err = fmt.Errorf("%w: check that the forge and the app use the same secret", ErrBadSignature)
		}
		return errs.New(errs.BadSignature, "%v", err)
	}
	switch {
	case errors.Is(err, ErrUnknownProvider):
		count(hookUnknownProvider)
		return badRequest("%v: send GitHub, Gitea or GitLab push webhooks to this URL", err)
	case errors.Is(err, ErrBadSignature):
		count(hookBadSignature)
		s.log.Warn("webhook refused", "app", name, "provider", provider, "remote", r.RemoteAddr, "err", err)
		return errs.New(errs.BadSignature, "%v", err)
	case errors.Is(err, ErrNotPush):
		count(hookIgnored)
		return s.hookAnswer(w, http.StatusAccepted, HookResponse{Status: hookIgnored, Message: err.Error()})
	case err != nil:
		count(hookBadRequest)
		return badRequest("%v", err)
	}
	if push.PullRequest != nil {
		return s.queuePullRequest(w, r, app, push, count)
	}
	if !app.AutoBuild {
		count(hookIgnored)
		return s.hookAnswer(w, http.StatusAccepted, HookResponse{Status: hookIgnored,
			Message: fmt.Sprintf("auto build is off for app %s: turn it on to build pushes", name)})
	}
	if push.Branch == "" || push.Branch != app.Branch {
		count(hookIgnored)
		return s.hookAnswer(w, http.StatusAccepted, HookResponse{Status: hookIgnored,
			Message: fmt.Sprintf("push to %s; app %s builds branch %s", push.Ref, name, app.Branch)})
	}
	b, err := s.queueFromHook(w, r, &raftfsm.BuildQueue{App: name, Commit: push.Commit, Ref: push.Branch,
		Branch: push.Branch, Message: push.Message, Trigger: "push", Delivery: push.Delivery, At: time.Now().UTC()},
		"commit "+short(push.Commit), count)
	if b == nil {
		return err
	}
	s.log.Info("push queued a build", "app", name, "provider", provider, "build", b.ID, "commit", short(push.Commit), "delivery", push.Delivery)
	return s.hookAnswer(w, http.StatusCreated, HookResponse{Status: hookQueued, Build: b,
		Message: fmt.Sprintf("build %s queued for commit %s", b.ID, short(push.Commit))})
}

// queueFromHook commits the build a webhook asks for. A delivery or a change (what: "commit abc1234") seen before
// is answered 200 duplicate here, and so is a failure; it returns the build only when it queued a new one, which
// the caller announces.
func (s *Service) queueFromHook(w http.ResponseWriter, r *http.Request, q *raftfsm.BuildQueue, what string, count func(string)) (*raftfsm.Build, error) {
	res, err := s.n.Apply(r.Context(), q, api.ForRequest(r))
	if raftfsm.KindOf(err) == raftfsm.KindConflict {
		count(hookDuplicate)
		return nil, s.hookAnswer(w, http.StatusOK, HookResponse{Status: hookDuplicate, Message: "duplicate delivery, ignored"})
	}
	if err != nil {
		count(hookError)
		return nil, err
	}
	var b raftfsm.Build
	if err := json.Unmarshal(res.Value, &b); err != nil {
		count(hookError)
		return nil, fmt.Errorf("decode the queued build: %w", err)
	}
	if b.CreateIndex != res.Index {
		// raftfsm answered with the build that already has this change.
		count(hookDuplicate)
		return nil, s.hookAnswer(w, http.StatusOK, HookResponse{Status: hookDuplicate, Build: &b,
			Message: fmt.Sprintf("%s is already build %s (%s), ignored", what, b.ID, b.State)})
	}
	count(hookQueued)
	return &b, nil
}

func (s *Service) hookAnswer(w http.ResponseWriter, status int, v HookResponse) error {
	s.http.WriteJSON(w, status, v)
	return nil
}

// providerOf names the forge a request claims to come from, as ParseWebhook recognises it, for metrics.
func providerOf(h http.Header) string {
	switch {
	case h.Get("X-Gitea-Event") != "":
		return ProviderGitea
	case h.Get("X-Gitlab-Event") != "":
		return ProviderGitLab
	case h.Get("X-GitHub-Event") != "":
		return ProviderGitHub
	}
	return "unknown"
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
