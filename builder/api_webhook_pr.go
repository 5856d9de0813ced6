package builder

import (
	"fmt"
	"net/http"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

// queuePullRequest queues a build of a pull or merge request's head commit for an app that builds them: the
// same manifest, its status reported like any build's, its release marked with the request's number.
func (s *Service) queuePullRequest(w http.ResponseWriter, r *http.Request, app raftfsm.App, push *Push, count func(string)) error {
	pr := push.PullRequest
	if !app.PullRequests {
		count(hookIgnored)
		return s.hookAnswer(w, http.StatusAccepted, HookResponse{Status: hookIgnored,
			Message: fmt.Sprintf("app %s does not build pull requests: turn them on with `node app update %s --pull-requests`", app.Name, app.Name)})
	}
	b, err := s.queueFromHook(w, r, &raftfsm.BuildQueue{App: app.Name, Commit: push.Commit, Ref: pr.Ref, Branch: pr.Head,
		Message: push.Message, Trigger: raftfsm.TriggerPullRequest, PullRequest: pr.Number, Delivery: push.Delivery, At: time.Now().UTC()},
		fmt.Sprintf("pull request #%d at %s", pr.Number, short(push.Commit)), count)
	if b == nil {
		return err
	}
	s.log.Info("pull request queued a build", "app", app.Name, "provider", push.Provider, "build", b.ID,
		"pull_request", pr.Number, "commit", short(push.Commit), "delivery", push.Delivery)
	return s.hookAnswer(w, http.StatusCreated, HookResponse{Status: hookQueued, Build: b,
		Message: fmt.Sprintf("build %s queued for pull request #%d (%s into %s) at %s", b.ID, pr.Number, pr.Head, pr.Base, short(push.Commit))})
}
