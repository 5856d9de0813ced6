package raftfsm

import (
	"errors"
	"slices"
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
	for _, e := range s.AppEnvs(app) { // sorted by name: one answer for one state
		name := e.Name
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
	for _, d := range s.OpenDeploys() {
		if d.App == app && (d.Release == version || d.Previous == version) {
			ids = append(ids, d.ID)
		}
	}
	if len(ids) > 0 {
		slices.Sort(ids)
		return "used by deployment " + ids[0] + ", which has not finished"
	}
	return ""
}

// ReleasesInUse returns the keys (ReleaseKey) of every release ReleaseUse names: what the cleanup asks on
// every round. It visits the environments, their deployments and the unfinished ones, never the whole history.
func (s *State) ReleasesInUse() map[string]bool {
	out := map[string]bool{}
	mark := func(app, version string) {
		if version != "" {
			out[ReleaseKey(app, version)] = true
		}
	}
	for _, d := range s.OpenDeploys() {
		mark(d.App, d.Release)
		mark(d.App, d.Previous)
	}
	for _, e := range s.Envs {
		mark(e.App, e.Desired)
		mark(e.App, e.Stable)
		mark(e.App, s.PreviousRelease(e))
	}
	return out
}

// AppReleasesInUse is ReleasesInUse for one app's releases (by version): it visits only that app's
// environments and the unfinished deployments.
func (s *State) AppReleasesInUse(app string) map[string]bool {
	out := map[string]bool{}
	mark := func(version string) {
		if version != "" {
			out[version] = true
		}
	}
	for _, d := range s.OpenDeploys() {
		if d.App == app {
			mark(d.Release)
			mark(d.Previous)
		}
	}
	for _, e := range s.AppEnvs(app) {
		mark(e.Desired)
		mark(e.Stable)
		mark(s.PreviousRelease(e))
	}
	return out
}

// PreviousRelease is the release an environment ran before its current one (what `node rollback ENV` goes
// back to): the previous release of the latest successful deployment of the current one.
func (s *State) PreviousRelease(e *Env) string {
	var last *Deployment
	for _, d := range s.EnvDeploys(e.Name) {
		if d.Kind == DeployKindDeploy && d.State == DeploySucceeded && d.Release == e.Desired &&
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
		for key, r := range s.Releases {
			if i := slices.Index(r.Holders, c.Node); i >= 0 {
				r = s.editRelease(key)
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
		r = s.editRelease(ReleaseKey(c.App, c.Version))
		r.Holders = slices.Delete(slices.Clone(r.Holders), i, i+1)
		r.ModifyIndex = index
	}
	return r, nil
}
