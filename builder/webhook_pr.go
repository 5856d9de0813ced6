package builder

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// PullRequest is what a verified pull (GitHub, Gitea) or merge (GitLab) request event asks to build: the
// request's head commit.
type PullRequest struct {
	Number int    // the request's number in its repository (GitLab: the iid)
	Title  string // its title
	Head   string // the source branch
	Base   string // the target branch
	Ref    string // the forge's ref for the head: refs/pull/N/head, refs/merge-requests/N/head
}

// Actions that put a new head commit on a request, per forge's documentation: GitHub `opened`, `reopened`,
// `synchronize`; Gitea the same with `synchronized`; GitLab `open`, `reopen`, and `update` when it carries
// `oldrev` (new commits; an update without it changed only the title, labels and the like).
var buildActions = map[string]bool{"opened": true, "reopened": true, "synchronize": true, "synchronized": true}

// isPullRequestEvent says whether a provider's event header names a pull or merge request event.
func isPullRequestEvent(provider, event string) bool {
	if provider == ProviderGitLab {
		return event == "Merge Request Hook"
	}
	return event == "pull_request"
}

// parsePullRequest reads a pull or merge request payload into a Push whose PullRequest is set. An action that
// puts no new commit on the request (closed, merged, labeled, edited, …) is ErrNotPush.
func parsePullRequest(provider string, h http.Header, body []byte) (*Push, error) {
	if provider == ProviderGitLab {
		return parseGitLabMR(body)
	}
	if strings.HasPrefix(h.Get("Content-Type"), "application/x-www-form-urlencoded") {
		form, err := url.ParseQuery(string(body))
		if err != nil || form.Get("payload") == "" {
			return nil, fmt.Errorf("%w: a form body without a payload field", ErrBadPayload)
		}
		body = []byte(form.Get("payload"))
	}
	var v struct {
		Action      string `json:"action"`
		Number      int    `json:"number"`
		PullRequest *struct {
			Title string `json:"title"`
			Head  struct {
				Ref string `json:"ref"`
				SHA string `json:"sha"`
			} `json:"head"`
			Base struct {
				Ref string `json:"ref"`
			} `json:"base"`
		} `json:"pull_request"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	if v.PullRequest == nil || v.Number <= 0 {
		return nil, fmt.Errorf("%w: a pull_request event without a pull request and its number", ErrBadPayload)
	}
	if !buildActions[v.Action] {
		return nil, fmt.Errorf("%w: pull request #%d was %s, which puts no new commit on it", ErrNotPush, v.Number, v.Action)
	}
	pr := v.PullRequest
	return checkPullRequest(&PullRequest{Number: v.Number, Title: pr.Title, Head: pr.Head.Ref, Base: pr.Base.Ref,
		Ref: fmt.Sprintf("refs/pull/%d/head", v.Number)}, pr.Head.SHA, "")
}

func parseGitLabMR(body []byte) (*Push, error) {
	var v struct {
		ObjectKind string `json:"object_kind"`
		Attrs      *struct {
			IID          int         `json:"iid"`
			Title        string      `json:"title"`
			Action       string      `json:"action"`
			OldRev       string      `json:"oldrev"`
			SourceBranch string      `json:"source_branch"`
			TargetBranch string      `json:"target_branch"`
			LastCommit   *commitJSON `json:"last_commit"`
		} `json:"object_attributes"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	a := v.Attrs
	if v.ObjectKind != "merge_request" || a == nil || a.IID <= 0 || a.LastCommit == nil {
		return nil, fmt.Errorf("%w: a Merge Request Hook without object_attributes (iid, last_commit)", ErrBadPayload)
	}
	switch {
	case a.Action == "open" || a.Action == "reopen":
	case a.Action == "update" && a.OldRev != "":
	default:
		return nil, fmt.Errorf("%w: merge request !%d: %s, which puts no new commit on it", ErrNotPush, a.IID, firstNonEmpty(a.Action, "no action"))
	}
	return checkPullRequest(&PullRequest{Number: a.IID, Title: a.Title, Head: a.SourceBranch, Base: a.TargetBranch,
		Ref: fmt.Sprintf("refs/merge-requests/%d/head", a.IID)}, a.LastCommit.ID, a.LastCommit.Message)
}

func checkPullRequest(pr *PullRequest, commit, message string) (*Push, error) {
	if !isSHA(commit) {
		return nil, fmt.Errorf("%w: head commit %q is not a full sha", ErrBadPayload, commit)
	}
	if pr.Head == "" || !branchOK(pr.Head) {
		return nil, fmt.Errorf("%w: head branch %q is not a branch name", ErrBadPayload, pr.Head)
	}
	return &Push{Ref: pr.Ref, Commit: commit, Message: firstNonEmpty(message, pr.Title), PullRequest: pr}, nil
}

// branchOK is a light check of a branch name from a payload: it names the build's branch, never a git argument.
func branchOK(b string) bool {
	return !strings.HasPrefix(b, "-") && !strings.ContainsAny(b, "\x00 ~^:?*[\\") && len(b) <= 255
}
