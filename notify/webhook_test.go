package notify

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/raftfsm"
)

// A webhook receiver that fails twice and then recovers gets each event once it recovers: signed, with the same
// idempotency key and body on every attempt, in the order the events happened; the delivery log shows every
// attempt. A Slack receiver gets the incoming-webhook format.
func TestWebhookSignedRetriedAndLogged(t *testing.T) {
	m := newMesh(t, 1, testOptions())
	m.app("web")
	hook := newReceiver(t, func(r *http.Request, before int) int {
		if before < 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})
	slack := newReceiver(t, nil)
	sub := m.subscribe(map[string]any{"app": "web", "url": hook.URL + "/hook", "secret": "s3cret",
		"events": []string{"build.started", "build.failed"}})
	slackSub := m.subscribe(map[string]any{"app": "web", "kind": "slack", "url": slack.URL + "/services/T000/B000/XXXX"})
	// Writing back the URL as it reads (without its secret path) keeps the URL.
	if status, body := m.api("PUT", "/v1/subscriptions/"+slackSub.ID, map[string]any{"url": slackSub.URL}); status != http.StatusOK {
		t.Fatalf("write back a Slack subscription: %d %s", status, body)
	}

	// Secrets are never shown back.
	_, body := m.api("GET", "/v1/subscriptions/"+sub.ID, nil)
	if strings.Contains(string(body), "s3cret") || !strings.Contains(string(body), `"secret_set": true`) {
		t.Fatalf("a subscription shows its secret, or not that it has one: %s", body)
	}
	_, body = m.api("GET", "/v1/subscriptions?app=web", nil)
	if strings.Contains(string(body), "XXXX") || strings.Contains(string(body), "s3cret") {
		t.Fatalf("the subscription list shows a secret: %s", body)
	}

	id := m.startBuild("web", "0123456789abcdef0123456789abcdef01234567")
	m.finishBuild(id, raftfsm.BuildFailed)

	testutil.Until(t, 20*time.Second, "both events delivered to the webhook", func() bool { return len(hook.ok()) == 2 })
	testutil.Until(t, 20*time.Second, "both events delivered to Slack", func() bool { return len(slack.ok()) == 2 })

	ok := hook.ok()
	if ok[0].Header.Get("X-Shoal-Event") != "build.started" || ok[1].Header.Get("X-Shoal-Event") != "build.failed" {
		t.Fatalf("events out of order: %s then %s", ok[0].Header.Get("X-Shoal-Event"), ok[1].Header.Get("X-Shoal-Event"))
	}
	byKey := map[string][]received{}
	for _, r := range hook.requests() {
		byKey[r.Header.Get("X-Shoal-Delivery")] = append(byKey[r.Header.Get("X-Shoal-Delivery")], r)
	}
	if len(byKey) != 2 {
		t.Fatalf("want 2 deliveries, got keys %v", byKey)
	}
	for key, reqs := range byKey {
		if len(reqs) != 3 {
			t.Fatalf("delivery %s: want 3 attempts (503, 503, 204), got %d", key, len(reqs))
		}
		for i, r := range reqs {
			if r.Method != http.MethodPost || r.Path != "/hook" || r.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("delivery %s: %s %s %q", key, r.Method, r.Path, r.Header.Get("Content-Type"))
			}
			if !Verify("s3cret", r.Body, r.Header.Get("X-Shoal-Signature-256")) {
				t.Fatalf("delivery %s attempt %d: signature %q does not verify", key, i+1, r.Header.Get("X-Shoal-Signature-256"))
			}
			if string(r.Body) != string(reqs[0].Body) {
				t.Fatalf("delivery %s: attempt %d sent another body", key, i+1)
			}
			if got := r.Header.Get("X-Shoal-Attempt"); got != []string{"1", "2", "3"}[i] {
				t.Fatalf("delivery %s: attempt header %q at try %d", key, got, i+1)
			}
		}
		var w Webhook
		if err := json.Unmarshal(reqs[0].Body, &w); err != nil {
			t.Fatal(err)
		}
		if w.ID != key || w.App != "web" || w.Build == nil || w.Build.ID != id || w.URL != "http://dash.test/ui/#/builds/"+id || w.Mesh != "test" {
			t.Fatalf("webhook body: %+v", w)
		}
		if w.Event == "build.failed" && (w.Build.State != "failed" || w.Build.Error == "") {
			t.Fatalf("a failed build's event: %+v", w.Build)
		}
	}

	// The delivery log has every attempt, through the API (the last is recorded just after it was answered).
	testutil.Until(t, 10*time.Second, "the log to record both deliveries", func() bool {
		return len(m.deliveries("state=delivered&subscription="+sub.ID)) == 2
	})
	log := m.deliveries("subscription=" + sub.ID)
	if len(log) != 2 {
		t.Fatalf("want 2 deliveries in the log, got %d", len(log))
	}
	for _, d := range log {
		var codes []int
		for _, a := range d.Attempts {
			codes = append(codes, a.Status)
		}
		if d.State != raftfsm.DeliveryDelivered || !slices.Equal(codes, []int{503, 503, 204}) || d.Attempts[0].Error == "" {
			t.Fatalf("delivery %s: state %s, attempts %+v", d.ID, d.State, d.Attempts)
		}
	}

	// Slack: text and a coloured attachment linking the build, no Shoal headers.
	var msg slackMessage
	last := slack.ok()[1]
	if err := json.Unmarshal(last.Body, &msg); err != nil {
		t.Fatal(err)
	}
	if last.Path != "/services/T000/B000/XXXX" || len(msg.Attachments) != 1 || msg.Attachments[0].Color != "danger" ||
		!strings.Contains(msg.Attachments[0].Text, "<http://dash.test/ui/#/builds/"+id+"|details>") || msg.Text == "" {
		t.Fatalf("slack message: %s %s", last.Path, last.Body)
	}
	if last.Header.Get("X-Shoal-Signature-256") != "" {
		t.Fatal("a Slack message carries a webhook signature")
	}
	if n := len(m.deliveries("subscription=" + slackSub.ID)); n != 2 {
		t.Fatalf("slack deliveries: %d", n)
	}
}

// A subscription is checked when it is written; a rejected one changes nothing. Replacing it without a secret
// keeps the secret, and deleting it cancels what it still had to deliver.
func TestSubscriptionRules(t *testing.T) {
	m := newMesh(t, 1, testOptions())
	m.app("web")
	m.app("api")
	m.apply(&raftfsm.EnvPut{Env: raftfsm.Env{Name: "api-prod", App: "api"}, Create: true})
	for _, c := range []struct {
		in   map[string]any
		code int
		says string
	}{
		{map[string]any{"app": "web", "url": "ftp://x"}, 400, "not an http"},
		{map[string]any{"app": "web", "url": "http://x", "kind": "email"}, 400, "not one of webhook, slack"},
		{map[string]any{"app": "web", "url": "http://x", "events": []string{"build.exploded"}}, 400, "build.started"},
		{map[string]any{"app": "nope", "url": "http://x"}, 404, "create it first"},
		{map[string]any{"app": "web", "env": "api-prod", "url": "http://x"}, 400, "belongs to app"},
		{map[string]any{"app": "web", "url": "http://x", "colour": "red"}, 400, "unknown field"},
	} {
		status, body := m.api("POST", "/v1/subscriptions", c.in)
		if status != c.code || !strings.Contains(string(body), c.says) {
			t.Errorf("%v: got %d %s, want %d saying %q", c.in, status, body, c.code, c.says)
		}
	}
	if _, body := m.api("GET", "/v1/subscriptions", nil); strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("rejected subscriptions were stored: %s", body)
	}

	down := newReceiver(t, func(*http.Request, int) int { return http.StatusInternalServerError })
	sub := m.subscribe(map[string]any{"app": "web", "url": down.URL, "secret": "first"})
	status, body := m.api("PUT", "/v1/subscriptions/"+sub.ID, map[string]any{"events": []string{"build.started"}})
	if status != 200 || !strings.Contains(string(body), `"secret_set": true`) {
		t.Fatalf("replace without a secret: %d %s", status, body)
	}
	m.startBuild("web", "abc")
	testutil.Until(t, 10*time.Second, "a failed attempt", func() bool { return len(down.requests()) > 0 })
	if r := down.requests()[0]; !Verify("first", r.Body, r.Header.Get("X-Shoal-Signature-256")) {
		t.Fatal("the secret was not kept across a replace")
	}
	if status, body := m.api("DELETE", "/v1/subscriptions/"+sub.ID, nil); status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", status, body)
	}
	log := m.deliveries("subscription=" + sub.ID)
	if len(log) != 1 || log[0].State != raftfsm.DeliveryCancelled {
		t.Fatalf("a deleted subscription's delivery: %+v", log)
	}
	if status, _ := m.api("GET", "/v1/subscriptions/"+sub.ID, nil); status != http.StatusNotFound {
		t.Fatalf("a deleted subscription answers %d", status)
	}
}

// A subscription to one environment gets that environment's deployment events and no others, approval
// included, in order.
func TestEnvironmentSubscription(t *testing.T) {
	m := newMesh(t, 1, testOptions())
	m.app("web")
	for _, e := range []string{"prod", "staging"} {
		m.apply(&raftfsm.EnvPut{Env: raftfsm.Env{Name: e, App: "web"}, Create: true})
	}
	for range 2 {
		m.apply(&raftfsm.ReleaseCreate{Release: raftfsm.Release{App: "web", Digest: "sha256:00", PieceSize: 1 << 20}})
	}
	rc := newReceiver(t, nil)
	m.subscribe(map[string]any{"app": "web", "env": "prod", "url": rc.URL})
	now := time.Now().UTC()
	m.apply(&raftfsm.DeployCreate{Deployment: raftfsm.Deployment{ID: "d1", Env: "prod", Release: "v1", State: raftfsm.DeployWaiting, CreatedAt: now}})
	m.apply(&raftfsm.DeployUpdate{ID: "d1", State: raftfsm.DeployPending, By: "alice", From: []string{raftfsm.DeployWaiting}, At: now})
	m.apply(&raftfsm.DeployUpdate{ID: "d1", State: raftfsm.DeployRunning, At: now})
	m.apply(&raftfsm.DeployUpdate{ID: "d1", State: raftfsm.DeploySucceeded, SetDesired: "v1", At: now})
	m.apply(&raftfsm.DeployCreate{Deployment: raftfsm.Deployment{ID: "d2", Env: "staging", Release: "v2", CreatedAt: now}})
	m.apply(&raftfsm.DeployUpdate{ID: "d2", State: raftfsm.DeploySucceeded, At: now})
	m.apply(&raftfsm.DeployCreate{Deployment: raftfsm.Deployment{ID: "d3", Env: "prod", Release: "v2", CreatedAt: now}})
	m.apply(&raftfsm.DeployUpdate{ID: "d3", State: raftfsm.DeployRolledBack, Error: "web-1 failed its health check", At: now})
	m.startBuild("web", "abc") // a build event: not an environment's

	want := []string{"d1 approval.waiting", "d1 deployment.started", "d1 deployment.succeeded", "d3 deployment.started", "d3 deployment.rolled_back"}
	testutil.Until(t, 20*time.Second, "five deliveries", func() bool { return len(rc.ok()) >= len(want) })
	byDeploy := map[string][]string{}
	for _, r := range rc.ok() {
		var w Webhook
		if err := json.Unmarshal(r.Body, &w); err != nil {
			t.Fatal(err)
		}
		if w.Env != "prod" || w.Deployment == nil {
			t.Fatalf("the prod subscription got %s %s", w.Env, w.Event)
		}
		byDeploy[w.Deployment.ID] = append(byDeploy[w.Deployment.ID], w.Deployment.ID+" "+w.Event)
	}
	got := append(byDeploy["d1"], byDeploy["d3"]...)
	if !slices.Equal(got, want) || len(rc.ok()) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// A receiver that never recovers gets MaxAttempts tries, spaced by a growing back-off, and the delivery ends
// failed in the log.
func TestDeliveryGivesUp(t *testing.T) {
	opts := testOptions()
	m := newMesh(t, 1, opts)
	m.app("web")
	rc := newReceiver(t, func(*http.Request, int) int { return http.StatusInternalServerError })
	sub := m.subscribe(map[string]any{"app": "web", "url": rc.URL})
	m.startBuild("web", "abc")
	testutil.Until(t, 30*time.Second, "the delivery to fail for good", func() bool {
		return len(m.deliveries("state=failed&subscription="+sub.ID)) == 1
	})
	d := m.deliveries("subscription=" + sub.ID)[0]
	if len(d.Attempts) != opts.MaxAttempts || len(rc.requests()) != opts.MaxAttempts {
		t.Fatalf("%d attempts recorded, %d requests, want %d", len(d.Attempts), len(rc.requests()), opts.MaxAttempts)
	}
	for i := 1; i < len(d.Attempts); i++ {
		gap := d.Attempts[i].At.Sub(d.Attempts[i-1].At)
		if want := backoff(opts.RetryBase, opts.RetryMax, i); gap < want {
			t.Fatalf("attempt %d came %v after the one before, sooner than the back-off of %v", i+1, gap, want)
		}
	}
}
