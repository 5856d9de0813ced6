package builder

import (
	"context"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

// minPollInterval keeps a mistyped interval (1ms) from turning the leader into a git client in a loop.
const minPollInterval = time.Second

// pollTimeout bounds one `git ls-remote`.
const pollTimeout = 30 * time.Second

type polled struct {
	name, repo, branch string
	every              time.Duration
}

// poll is the leader hook for repositories that cannot send webhooks: each app with a poll interval has its
// branch read with `git ls-remote` that often, and a commit that no build of the branch has seen is queued
// with trigger "poll". A new leader polls at once, so nothing pushed during an election waits a whole interval.
func (s *Service) poll(leaderCtx context.Context, term uint64) {
	if !s.enter() {
		return
	}
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(leaderCtx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()

	next := map[string]time.Time{}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		changed := s.n.FSM().Changed()
		var apps []polled
		s.n.FSM().Read(func(st *raftfsm.State) {
			for _, a := range st.PolledApps() {
				if a.Repo != "" {
					apps = append(apps, polled{a.Name, a.Repo, a.Branch, max(time.Duration(a.PollInterval), minPollInterval)})
				}
			}
		})
		wait := time.Hour
		seen := map[string]bool{}
		for _, a := range apps {
			seen[a.name] = true
			if due, ok := next[a.name]; !ok || !time.Now().Before(due) {
				s.pollApp(ctx, a)
				if ctx.Err() != nil {
					return
				}
				next[a.name] = time.Now().Add(a.every)
			} else if due.After(time.Now().Add(a.every)) {
				next[a.name] = time.Now().Add(a.every) // the interval was shortened
			}
			wait = min(wait, time.Until(next[a.name]))
		}
		for name := range next {
			if !seen[name] {
				delete(next, name)
			}
		}
		timer.Reset(max(wait, 0))
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-timer.C:
		}
	}
}

// pollApp queues a build of the branch's head unless a build of that commit already exists (in any state: a
// failed or cancelled commit is not rebuilt by polling; push again or build it by hand).
func (s *Service) pollApp(ctx context.Context, a polled) {
	lctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	sha, err := LsRemote(lctx, a.repo, a.branch)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("poll failed", "app", a.name, "err", err)
		}
		return
	}
	known := false
	s.n.FSM().Read(func(st *raftfsm.State) {
		for _, b := range st.AppBuilds(a.name) {
			if b.Branch == a.branch && b.Commit == sha {
				known = true
				return
			}
		}
	})
	if known {
		return
	}
	res, err := s.n.Apply(lctx, &raftfsm.BuildQueue{App: a.name, Commit: sha, Ref: a.branch, Branch: a.branch,
		Trigger: "poll", At: time.Now().UTC()})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("poll could not queue a build", "app", a.name, "commit", short(sha), "err", err)
		}
		return
	}
	s.log.Info("poll queued a build", "app", a.name, "commit", short(sha), "index", res.Index)
}
