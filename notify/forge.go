package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/shoal-ci/shoal/raftfsm"
)

// Default API bases, used when a forge is set without --url.
var forgeDefaultURL = map[string]string{
	"github": "https://api.github.com",
	"gitea":  "",
	"gitlab": "https://gitlab.com",
}

// DefaultForgeURL is the base URL a forge kind has when none is given ("" when it has none: Gitea is self-hosted).
func DefaultForgeURL(kind string) string { return forgeDefaultURL[kind] }

// statusBody is the JSON a forge takes. GitHub and Gitea read state, target_url, description and context;
// GitLab reads state, target_url, description, name and ref.
type statusBody struct {
	State       string `json:"state"`
	TargetURL   string `json:"target_url,omitempty"`
	Description string `json:"description"`
	Context     string `json:"context,omitempty"`
	Name        string `json:"name,omitempty"`
	Ref         string `json:"ref,omitempty"`
}

// forgeState maps a build event to the forge's own state name. GitHub (pending, success, failure, error) and
// Gitea (the same, and warning) share theirs; GitLab's are pending, running, success, failed, canceled.
func forgeState(kind, event string) (string, bool) {
	gitlab := kind == "gitlab"
	switch event {
	case raftfsm.EventBuildStarted:
		if gitlab {
			return "running", true
		}
		return "pending", true
	case raftfsm.EventBuildSucceeded:
		return "success", true
	case raftfsm.EventBuildFailed:
		if gitlab {
			return "failed", true
		}
		return "failure", true
	case raftfsm.EventBuildCancelled:
		if gitlab {
			return "canceled", true
		}
		return "error", true
	}
	return "", false
}

// forgeRequest builds the commit status request for a build event, in the documented shape of each forge:
//
//	GitHub: POST {url}/repos/{owner}/{repo}/statuses/{sha}, Authorization: Bearer, Accept: application/vnd.github+json
//	Gitea:  POST {url}/api/v1/repos/{owner}/{repo}/statuses/{sha}, Authorization: token
//	GitLab: POST {url}/api/v4/projects/{id}/statuses/{sha}, PRIVATE-TOKEN
func forgeRequest(ctx context.Context, f *raftfsm.Forge, d *raftfsm.Delivery) (*http.Request, error) {
	ev := d.Event
	if ev.Build == nil || ev.Build.Commit == "" {
		return nil, fmt.Errorf("event %s has no commit to report on", ev.Key)
	}
	state, ok := forgeState(f.Kind, ev.Name)
	if !ok {
		return nil, fmt.Errorf("event %s has no commit status", ev.Name)
	}
	target := ev.URL
	if f.DashboardURL != "" {
		target = link(f.DashboardURL, "builds", ev.Build.ID)
	}
	desc, _ := summary(&ev)
	if len(desc) > 140 { // GitHub refuses longer descriptions
		desc = desc[:139] + "…"
	}
	base := strings.TrimSuffix(f.URL, "/")
	sha := url.PathEscape(ev.Build.Commit)
	body := statusBody{State: state, TargetURL: target, Description: desc}
	var path string
	switch f.Kind {
	case "github", "gitea":
		owner, repo, _ := strings.Cut(f.Repo, "/")
		path = "/repos/" + url.PathEscape(owner) + "/" + url.PathEscape(repo) + "/statuses/" + sha
		if f.Kind == "gitea" {
			path = "/api/v1" + path
		}
		body.Context = f.Context
	case "gitlab":
		// A project path (group/project) is URL-encoded into one segment, as GitLab documents.
		path = "/api/v4/projects/" + url.PathEscape(f.Repo) + "/statuses/" + sha
		body.Name, body.Ref = f.Context, ev.Build.Branch
	default:
		return nil, fmt.Errorf("forge kind %q is not one of github, gitea, gitlab", f.Kind)
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	switch f.Kind {
	case "github":
		req.Header.Set("Accept", "application/vnd.github+json")
		req.Header.Set("Authorization", "Bearer "+f.Token)
		req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	case "gitea":
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Authorization", "token "+f.Token)
	case "gitlab":
		req.Header.Set("Accept", "application/json")
		req.Header.Set("PRIVATE-TOKEN", f.Token)
	}
	return req, nil
}
