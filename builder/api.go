package builder

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/errs"
	"github.com/shoal-ci/shoal/raftfsm"
)

// refTimeout bounds the `git ls-remote` that resolves a manual build's ref while the API request waits.
const refTimeout = 30 * time.Second

func (s *Service) routes() {
	s.api = s.http.RouteGroup()
	s.api.Handle("POST /v1/apps/{app}/builds", raftfsm.RoleDeployer, s.postBuild)
	s.api.Handle("GET /v1/apps/{app}/builds", raftfsm.RoleReader, s.listBuilds)
	s.api.Handle("GET /v1/builds/{id}", raftfsm.RoleReader, s.getBuild)
	s.api.Handle("POST /v1/builds/{id}/cancel", raftfsm.RoleDeployer, s.cancelBuild)
	s.api.Handle("GET /v1/builds/{id}/log", raftfsm.RoleReader, s.getLog)
	s.api.Handle("GET /v1/apps/{app}/releases", raftfsm.RoleReader, s.listReleases)
	s.api.Handle("GET /v1/apps/{app}/releases/{version}", raftfsm.RoleReader, s.getRelease)
	// Forges send a whole push in one request; the node's default body limit (1 MiB) is for API documents.
	s.api.HandleLimit("POST /v1/hooks/{app}", "", maxHookBody, s.postHook)
}

// BuildRequest is the body of POST /v1/apps/{app}/builds.
type BuildRequest struct {
	// Ref is a branch, a tag or a full commit sha; empty means the app's branch.
	Ref string `json:"ref"`
}

// postBuild queues a manual build. A branch or tag is resolved to its commit now, so the build record names
// the exact commit that will be built whatever is pushed meanwhile.
func (s *Service) postBuild(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("app")
	var in BuildRequest
	if r.ContentLength != 0 {
		if err := api.Decode(r, &in); err != nil {
			return err
		}
	}
	app, ok := s.appFresh(r.Context(), name)
	if !ok {
		return notFound("app %q does not exist", name)
	}
	ref := in.Ref
	if ref == "" {
		ref = app.Branch
	}
	if err := checkRepo(app.Repo); err != nil {
		return badRequest("app %s: %v", name, err)
	}
	if err := checkRef(ref); err != nil {
		return badRequest("%v", err)
	}
	ctx, cancel := context.WithTimeout(r.Context(), refTimeout)
	defer cancel()
	sha, branch, err := ResolveRef(ctx, app.Repo, ref)
	switch {
	case errors.Is(err, ErrRefNotFound):
		return badRequest("%v", err)
	case err != nil:
		return errs.New(errs.RepositoryUnreachable, "cannot resolve %s: %v: check the app's repository URL and this node's access to it", ref, err)
	}
	return s.http.Write(w, r, http.StatusCreated, &raftfsm.BuildQueue{App: name, Commit: sha, Ref: ref, Branch: branch,
		Trigger: "manual", At: time.Now().UTC()})
}

func (s *Service) listBuilds(w http.ResponseWriter, r *http.Request) error {
	if err := s.http.BeginRead(r); err != nil {
		return err
	}
	name := r.PathValue("app")
	q := r.URL.Query()
	state := q.Get("state")
	limit, cursor, err := api.PageParams(r, 100)
	if err != nil {
		return err
	}
	after, err := api.IndexCursor(cursor)
	if err != nil {
		return err
	}
	var (
		out     = []BuildView{}
		exists  bool
		servers = BuildServers(s.n.Members())
	)
	s.n.FSM().Read(func(st *raftfsm.State) {
		_, exists = st.Apps[name]
		var waiting map[string]string
		bs := st.AppBuilds(name) // the app's own builds, oldest first
		for i := len(bs) - 1; i >= 0; i-- {
			if b := bs[i]; state == "" || b.State == state {
				if b.State == raftfsm.BuildQueued && waiting == nil {
					waiting = PlanBuilds(st, servers).Waiting
				}
				out = append(out, BuildView{Build: *b, Waiting: waiting[b.ID]})
			}
		}
	})
	if !exists {
		return notFound("app %q does not exist", name)
	}
	// Newest first; the cursor is the creation index of the last build of the previous page.
	out, next := api.PageNewest(out, func(b BuildView) uint64 { return b.CreateIndex }, after, limit)
	api.SetNextCursor(w, next)
	s.http.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *Service) getBuild(w http.ResponseWriter, r *http.Request) error {
	if err := s.http.BeginRead(r); err != nil {
		return err
	}
	id := r.PathValue("id")
	var (
		v       BuildView
		ok      bool
		servers = BuildServers(s.n.Members())
	)
	s.n.FSM().Read(func(st *raftfsm.State) {
		if b := st.Builds[id]; b != nil {
			v, ok = BuildView{Build: *b}, true
			if b.State == raftfsm.BuildQueued {
				v.Waiting = PlanBuilds(st, servers).Waiting[id]
			}
		}
	})
	if !ok {
		return notFound("build %q does not exist", id)
	}
	s.http.WriteJSON(w, http.StatusOK, v)
	return nil
}

// BuildView is a build as the API shows it: with, for a queued build that cannot be placed now, the reason in
// words (as this node sees the build servers).
type BuildView struct {
	raftfsm.Build
	Waiting string `json:"waiting,omitempty"`
}

// cancelBuild cancels a queued build at once, or asks the leader's runner to stop a running one (its record
// shows cancel_requested until the runner has stopped it).
func (s *Service) cancelBuild(w http.ResponseWriter, r *http.Request) error {
	return s.http.Write(w, r, http.StatusOK, &raftfsm.BuildCancel{ID: r.PathValue("id"), At: time.Now().UTC()})
}

func (s *Service) listReleases(w http.ResponseWriter, r *http.Request) error {
	if err := s.http.BeginRead(r); err != nil {
		return err
	}
	name := r.PathValue("app")
	limit, cursor, err := api.PageParams(r, 0)
	if err != nil {
		return err
	}
	after, err := api.IndexCursor(cursor)
	if err != nil {
		return err
	}
	var (
		out    = []raftfsm.Release{}
		exists bool
	)
	s.n.FSM().Read(func(st *raftfsm.State) {
		_, exists = st.Apps[name]
		rs := st.AppReleases(name) // oldest first
		for i := len(rs) - 1; i >= 0; i-- {
			out = append(out, *rs[i])
		}
	})
	if !exists {
		return notFound("app %q does not exist", name)
	}
	out, next := api.PageNewest(out, func(r raftfsm.Release) uint64 { return r.CreateIndex }, after, limit)
	api.SetNextCursor(w, next)
	s.http.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *Service) getRelease(w http.ResponseWriter, r *http.Request) error {
	if err := s.http.BeginRead(r); err != nil {
		return err
	}
	name, version := r.PathValue("app"), r.PathValue("version")
	var (
		rel raftfsm.Release
		ok  bool
	)
	s.n.FSM().Read(func(st *raftfsm.State) {
		if p := st.Releases[raftfsm.ReleaseKey(name, version)]; p != nil {
			rel, ok = *p, true
		}
	})
	if !ok {
		return notFound("app %q has no release %q", name, version)
	}
	s.http.WriteJSON(w, http.StatusOK, rel)
	return nil
}
