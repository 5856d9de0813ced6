package raftfsm

import (
	"errors"
	"slices"
	"sort"
)

// ErrNoLiveHolder is wrapped by errors saying that no live server holds a release's archive, so no server can
// fetch it: the agent waits (and says so) rather than fail, the API refuses a deploy to it at once.
var ErrNoLiveHolder = errors.New("no live server holds the release's archive")

// ReleaseUse says why a release must stay on every server that holds it: it is an environment's desired or
// stable release, the release a rollback of an environment goes back to (pinned environments included: a
// rollback pins the environment to its desired release), or the target of a deployment that is not finished
// (pending, waiting for approval or running). It returns "" for a release that nothing uses. The cleanup of
// every node and the FSM's check of a ReleaseDrop both ask it, so they cannot disagree.
func (s *State) ReleaseUse(app, version string) string {
	if version == "" {
		return ""
	}
	names := make([]string, 0, len(s.Envs))
	for name := range s.Envs {
		names = append(names, name)
	}
	sort.Strings(names) // one answer for one state
	for _, name := range names {
		e := s.Envs[name]
		if e.App != app {
			continue
		}
		switch version {
		case e.Desired:
			if e.Pinned {
				return "the desired release of environment " + name + ", which is pinned"
			}
			return "the desired release of environment " + name
		case e.Stable:
			return "the stable release of environment " + name
		case s.PreviousRelease(e):
			return "the release environment " + name + " rolls back to"
		}
	}
	ids := make([]string, 0)
	for id, d := range s.Deploys {
		if d.App == app && !d.Finished() && (d.Release == version || d.Previous == version) {
			ids = append(ids, id)
		}
	}
	if len(ids) > 0 {
		sort.Strings(ids)
		return "used by deployment " + ids[0] + ", which has not finished"
	}
	return ""
}

// ReleasesInUse returns the keys (ReleaseKey) of every release ReleaseUse names, in one pass over the
// environments and one over the deployments: what the cleanup asks on every round.
func (s *State) ReleasesInUse() map[string]bool {
	out := map[string]bool{}
	mark := func(app, version string) {
		if version != "" {
			out[ReleaseKey(app, version)] = true
		}
	}
	latest := map[string]*Deployment{} // env → its latest successful deployment of its desired release
	for _, d := range s.Deploys {
		if !d.Finished() {
			mark(d.App, d.Release)
			mark(d.App, d.Previous)
		}
		e := s.Envs[d.Env]
		if e == nil || d.Kind != DeployKindDeploy || d.State != DeploySucceeded || d.Release != e.Desired ||
			d.Previous == "" || d.Previous == e.Desired {
			continue
		}
		if cur := latest[d.Env]; cur == nil || d.CreateIndex > cur.CreateIndex {
			latest[d.Env] = d
		}
	}
	for name, e := range s.Envs {
		mark(e.App, e.Desired)
		mark(e.App, e.Stable)
		if d := latest[name]; d != nil {
			mark(e.App, d.Previous)
		}
	}
	return out
}

// PreviousRelease is the release an environment ran before its current one (what `node rollback ENV` goes
// back to): the previous release of the latest successful deployment of the current one.
func (s *State) PreviousRelease(e *Env) string {
	var last *Deployment
	for _, d := range s.Deploys {
		if d.Env == e.Name && d.Kind == DeployKindDeploy && d.State == DeploySucceeded && d.Release == e.Desired &&
			d.Previous != "" && d.Previous != e.Desired && (last == nil || d.CreateIndex > last.CreateIndex) {
			last = d
		}
	}
	if last == nil {
		return ""
	}
	return last.Previous
}

// applyReleaseDrop removes a holder record. With App and Version empty it removes Node from every release (a
// server that left the mesh for good). With IfUnused, a release that ReleaseUse names is refused: the cleanup
// drops its record before it deletes the archive, so a deployment created first keeps the archive, and one
// created after finds the record gone.
func applyReleaseDrop(s *State, index uint64, c *ReleaseDrop) (any, *Error) {
	if c.Node == "" {
		return nil, badRequest("dropping a release holder needs the node's name")
	}
	if c.App == "" && c.Version == "" {
		if c.IfUnused {
			return nil, badRequest("a drop from every release cannot be conditional (if_unused)")
		}
		for _, r := range s.Releases {
			if i := slices.Index(r.Holders, c.Node); i >= 0 {
				r.Holders = slices.Delete(slices.Clone(r.Holders), i, i+1)
				r.ModifyIndex = index
			}
		}
		return nil, nil
	}
	r, ok := s.Releases[ReleaseKey(c.App, c.Version)]
	if !ok {
		return nil, notFound("release %s of app %q does not exist", c.Version, c.App)
	}
	if c.IfUnused {
		if why := s.ReleaseUse(c.App, c.Version); why != "" {
			return nil, conflict("release %s of app %s is %s: it stays on every server that holds it", c.Version, c.App, why)
		}
	}
	if i := slices.Index(r.Holders, c.Node); i >= 0 {
		r.Holders = slices.Delete(slices.Clone(r.Holders), i, i+1)
		r.ModifyIndex = index
	}
	return r, nil
}
