package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

// Webhook is the JSON body of a webhook delivery (docs/api.md, "Notifications"). ID is the delivery's
// idempotency key: a receiver that sees an ID again has seen this delivery before.
type Webhook struct {
	ID         string                   `json:"id"`
	Event      string                   `json:"event"`
	Key        string                   `json:"event_key"`
	At         time.Time                `json:"at"`
	Mesh       string                   `json:"mesh,omitempty"`
	App        string                   `json:"app"`
	Env        string                   `json:"env,omitempty"`
	URL        string                   `json:"url,omitempty"`
	Build      *raftfsm.EventBuild      `json:"build,omitempty"`
	Deployment *raftfsm.EventDeployment `json:"deployment,omitempty"`
}

// webhookBody is the body of d, the same bytes on every attempt and on every leader.
func webhookBody(d *raftfsm.Delivery, mesh string) ([]byte, error) {
	ev := d.Event
	return json.Marshal(Webhook{ID: d.ID, Event: ev.Name, Key: ev.Key, At: ev.At.UTC(), Mesh: mesh, App: ev.App,
		Env: ev.Env, URL: ev.URL, Build: ev.Build, Deployment: ev.Deployment})
}

// Sign is the value of X-Shoal-Signature-256 for body under secret: "sha256=" and the hex HMAC-SHA256, as
// GitHub signs its webhooks. A receiver computes the same over the raw body and compares in constant time.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a signature header against body and secret in constant time.
func Verify(secret string, body []byte, header string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(header))
}

// slackMessage is a Slack incoming-webhook message: text as the fallback and the notification, an attachment
// coloured by outcome.
type slackMessage struct {
	Text        string            `json:"text"`
	Attachments []slackAttachment `json:"attachments,omitempty"`
}

type slackAttachment struct {
	Color    string `json:"color"`
	Text     string `json:"text"`
	Fallback string `json:"fallback"`
}

// slackEscape escapes the three characters Slack's mrkdwn gives meaning to.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// summary says what happened in one line, and the colour of that outcome.
func summary(ev *raftfsm.Event) (text, color string) {
	switch {
	case ev.Build != nil:
		b := ev.Build
		what := fmt.Sprintf("build #%d of %s (%s)", b.Number, ev.App, short(b.Commit))
		switch ev.Name {
		case raftfsm.EventBuildStarted:
			return what + " started", "#439fe0"
		case raftfsm.EventBuildSucceeded:
			if b.Release != "" {
				return what + " succeeded: release " + b.Release, "good"
			}
			return what + " succeeded", "good"
		case raftfsm.EventBuildCancelled:
			return what + " was cancelled", "warning"
		default:
			return what + " failed: " + firstLine(b.Error), "danger"
		}
	case ev.Deployment != nil:
		d := ev.Deployment
		what := fmt.Sprintf("%s of %s %s to %s", d.Kind, ev.App, d.Release, d.Env)
		if d.Kind != raftfsm.DeployKindDeploy {
			what = fmt.Sprintf("%s of %s in %s", d.Kind, ev.App, d.Env)
		}
		switch ev.Name {
		case raftfsm.EventApprovalWaiting:
			return what + " is waiting for approval (node approve " + d.ID + ")", "warning"
		case raftfsm.EventDeployStarted:
			return what + " started", "#439fe0"
		case raftfsm.EventDeploySucceeded:
			return what + " succeeded", "good"
		case raftfsm.EventDeployRolledBack:
			return what + " failed and was rolled back: " + firstLine(d.Error), "danger"
		default:
			return what + " failed: " + firstLine(d.Error), "danger"
		}
	}
	return ev.Name + " of " + ev.App, "#cccccc"
}

func slackBody(d *raftfsm.Delivery) ([]byte, error) {
	text, color := summary(&d.Event)
	line := slackEscape(text)
	if d.Event.URL != "" {
		line += " <" + d.Event.URL + "|details>"
	}
	return json.Marshal(slackMessage{Text: "Shoal: " + slackEscape(d.Event.Name+" "+d.Event.App),
		Attachments: []slackAttachment{{Color: color, Text: line, Fallback: slackEscape(text)}}})
}

func short(commit string) string {
	if len(commit) > 10 {
		return commit[:10]
	}
	if commit == "" {
		return "-"
	}
	return commit
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	if s == "" {
		return "see the log"
	}
	return s
}
