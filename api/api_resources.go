package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-ci/shoal/errs"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/transport"
)

// AppView is an app as the API shows it: the webhook secret is never shown, only whether one is set, and
// secret build variables show no value.
type AppView struct {
	raftfsm.App
	WebhookSecretSet bool `json:"webhook_secret_set"`
}

func viewApp(a *raftfsm.App) AppView {
	v := AppView{App: *a, WebhookSecretSet: a.WebhookSecret != ""}
	v.WebhookSecret = ""
	v.BuildVars = redactVars(a.BuildVars)
	return v
}

func viewEnv(e *raftfsm.Env) raftfsm.Env {
	v := *e
	v.Vars = redactVars(e.Vars)
	return v
}

func redactVars(in map[string]raftfsm.Var) map[string]raftfsm.Var {
	if in == nil {
		return nil
	}
	out := make(map[string]raftfsm.Var, len(in))
	for k, v := range in {
		if v.Secret {
			v.Value = ""
		}
		out[k] = v
	}
	return out
}

// keepSecrets lets a write send a secret variable without its value to mean "keep the stored value".
func keepSecrets(in, old map[string]raftfsm.Var) {
	for k, v := range in {
		if o, ok := old[k]; ok && v.Secret && v.Value == "" {
			v.Value = o.Value
			in[k] = v
		}
	}
}

// appInput is the body of POST /v1/apps and PUT /v1/apps/{app}; on PUT, absent fields keep their value.
type appInput struct {
	Name          *string                 `json:"name"`
	Repo          *string                 `json:"repo"`
	Branch        *string                 `json:"branch"`
	Manifest      *string                 `json:"manifest"`
	WebhookSecret *string                 `json:"webhook_secret"`
	AutoBuild     *bool                   `json:"auto_build"`
	PollInterval  *raftfsm.Duration       `json:"poll_interval"`
	BuildVars     *map[string]raftfsm.Var `json:"build_vars"`
	// BuildCapabilities: what a build server must offer to build the app (builder/assign.go).
	BuildCapabilities *[]string `json:"build_capabilities"`
	PullRequests      *bool     `json:"pull_requests"`
}

func (in *appInput) applyTo(a *raftfsm.App) {
	set(&a.Name, in.Name)
	set(&a.Repo, in.Repo)
	set(&a.Branch, in.Branch)
	set(&a.Manifest, in.Manifest)
	set(&a.WebhookSecret, in.WebhookSecret)
	set(&a.AutoBuild, in.AutoBuild)
	set(&a.PollInterval, in.PollInterval)
	set(&a.BuildCapabilities, in.BuildCapabilities)
	set(&a.PullRequests, in.PullRequests)
	if in.BuildVars != nil {
		keepSecrets(*in.BuildVars, a.BuildVars)
		a.BuildVars = *in.BuildVars
	}
}

func set[T any](dst *T, src *T) {
	if src != nil {
		*dst = *src
	}
}

func (srv *Server) apiApps() {
	srv.Handle("GET /v1/apps", raftfsm.RoleReader, func(w http.ResponseWriter, r *http.Request) error {
		if err := srv.BeginRead(r); err != nil {
			return err
		}
		limit, cursor, err := PageParams(r, 0)
		if err != nil {
			return err
		}
		out := []AppView{}
		var more bool
		srv.fsm.Read(func(s *raftfsm.State) {
			var page []*raftfsm.App
			page, more = s.AppPage(cursor, limit) // by name, from the sorted index: a page costs its own size
			for _, a := range page {
				out = append(out, viewApp(a))
			}
		})
		if more {
			SetNextCursor(w, out[len(out)-1].Name)
		}
		srv.WriteJSON(w, http.StatusOK, out)
		return nil
	})
	srv.Handle("GET /v1/apps/{app}", raftfsm.RoleReader, func(w http.ResponseWriter, r *http.Request) error {
		if err := srv.BeginRead(r); err != nil {
			return err
		}
		return srv.writeApp(w, http.StatusOK, r.PathValue("app"))
	})
	srv.Handle("POST /v1/apps", raftfsm.RoleAdmin, func(w http.ResponseWriter, r *http.Request) error {
		var in appInput
		if err := decode(r, &in); err != nil {
			return err
		}
		var a raftfsm.App
		in.applyTo(&a)
		if err := raftfsm.ValidApp(&a); err != nil {
			return err
		}
		res, err := srv.n.Apply(r.Context(), &raftfsm.AppPut{App: a, Create: true}, ForRequest(r), node.OnCommit)
		if err != nil {
			return err
		}
		return writeRecord(srv, w, http.StatusCreated, res, viewApp)
	})
	srv.Handle("PUT /v1/apps/{app}", raftfsm.RoleAdmin, func(w http.ResponseWriter, r *http.Request) error {
		name := r.PathValue("app")
		var in appInput
		if err := decode(r, &in); err != nil {
			return err
		}
		if in.Name != nil && *in.Name != name {
			return errs.New(errs.BadRequest, "an app cannot be renamed (body names %q, path %q)", *in.Name, name)
		}
		res, err := srv.update(r, func(s *raftfsm.State) (raftfsm.Command, error) {
			cur := s.Apps[name]
			if cur == nil {
				return nil, errs.New(raftfsm.KindNotFound, "app %q does not exist", name)
			}
			a := *cur
			in.applyTo(&a)
			if err := raftfsm.ValidApp(&a); err != nil {
				return nil, err
			}
			return &raftfsm.AppPut{App: a, CAS: cur.ModifyIndex}, nil
		})
		if err != nil {
			return err
		}
		return writeRecord(srv, w, http.StatusOK, res, viewApp)
	})
	srv.Handle("DELETE /v1/apps/{app}", raftfsm.RoleAdmin, func(w http.ResponseWriter, r *http.Request) error {
		if _, err := srv.n.Apply(r.Context(), &raftfsm.AppDelete{Name: r.PathValue("app")}, ForRequest(r)); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}

func (srv *Server) writeApp(w http.ResponseWriter, status int, name string) error {
	var (
		v     AppView
		found bool
	)
	srv.fsm.Read(func(s *raftfsm.State) {
		if a := s.Apps[name]; a != nil {
			v, found = viewApp(a), true
		}
	})
	if !found {
		return errs.New(raftfsm.KindNotFound, "app %q does not exist", name)
	}
	srv.WriteJSON(w, status, v)
	return nil
}

// update is read-merge-write for PUT: it reads the record after a consistent read (so a node that has not yet
// applied the latest write does not merge into a stale copy), builds the write with a CAS on what it read, and
// retries when another write slipped in between. With ?cas=N the client states its own precondition instead:
// then a conflict is the client's to resolve, and there is no retry.
func (srv *Server) update(r *http.Request, build func(s *raftfsm.State) (raftfsm.Command, error)) (*node.Applied, error) {
	var want uint64
	if v := r.URL.Query().Get("cas"); v != "" {
		var err error
		if want, err = strconv.ParseUint(v, 10, 64); err != nil {
			return nil, errs.New(errs.BadRequest, "cas %q is not an index", v)
		}
	}
	ctx, cancel := contextWithTimeout(r, 15*time.Second)
	defer cancel()
	for attempt := 0; ; attempt++ {
		if err := srv.n.ConsistentRead(ctx); err != nil {
			return nil, err
		}
		var (
			cmd raftfsm.Command
			err error
		)
		srv.fsm.Read(func(s *raftfsm.State) { cmd, err = build(s) })
		if err != nil {
			return nil, err
		}
		if want != 0 {
			setCAS(cmd, want)
		}
		res, err := srv.n.Apply(ctx, cmd, node.OnCommit)
		if want != 0 || !casConflict(err) && !uncertain(err) {
			return res, err
		}
		// The conflict is this node's own precondition, not the client's: the client asked for no CAS, so it
		// must never see it (nor the uncertainty of a write its leader lost: see uncertain). Read again and
		// retry until the request's deadline; a short random pause spreads concurrent writers of one record so
		// that one of them wins each round (16 writers: 5 rounds were not always enough, and a plain PUT
		// answered 409).
		pause := time.Duration(rand.Int64N(int64(min(attempt+1, 10)) * int64(5*time.Millisecond)))
		select {
		case <-ctx.Done():
			if uncertain(err) {
				return nil, err
			}
			return nil, errs.New(node.CodeUnavailable, "the record kept changing under concurrent writes until the request's deadline; retry")
		case <-time.After(pause):
		}
	}
}

// uncertain reports whether err says a write may or may not have been applied (its leader was lost mid-commit).
// A PUT without ?cas sets the fields it names, so applying it twice leaves the record as once: update retries it.
func uncertain(err error) bool {
	var re *transport.RemoteError
	return errors.As(err, &re) && re.Code == node.CodeUnavailable
}

// casConflict reports whether err is the refusal of a compare-and-set (raftfsm words those "changed ... since you
// read it"), as opposed to a conflict that a retry would meet again (an environment that is a pipeline stage).
func casConflict(err error) bool {
	return raftfsm.KindOf(err) == raftfsm.KindConflict && strings.Contains(err.Error(), "since you read it")
}

func setCAS(c raftfsm.Command, cas uint64) {
	switch c := c.(type) {
	case *raftfsm.AppPut:
		c.CAS = cas
	case *raftfsm.EnvPut:
		c.CAS = cas
	}
}

// writeRecord answers with the record a write returned, as view shows it, and the write's index, which a client
// passes back as X-Shoal-Min-Index to read its own write on any node.
func writeRecord[T, V any](srv *Server, w http.ResponseWriter, status int, res *node.Applied, view func(*T) V) error {
	rec := new(T)
	if err := json.Unmarshal(res.Value, rec); err != nil {
		return fmt.Errorf("decode written record: %w", err)
	}
	w.Header().Set("X-Shoal-Index", strconv.FormatUint(res.Index, 10))
	writeJSON(w, status, view(rec))
	return nil
}

// envInput is the body of POST /v1/envs and PUT /v1/envs/{env}.
type envInput struct {
	AllowPullRequests *bool `json:"allow_pull_requests"` // releases built from pull requests may be deployed here by hand

	Name       *string                 `json:"name"`
	App        *string                 `json:"app"`
	Servers    *[]string               `json:"servers"`
	Tags       *map[string]string      `json:"tags"`
	Vars       *map[string]raftfsm.Var `json:"vars"`
	AutoDeploy *bool                   `json:"auto_deploy"`
	Strategy   *raftfsm.Strategy       `json:"strategy"`
	// ProgressDeadline: how long a server of a started batch may go without progress ("10m"; 0 or "": default).
	ProgressDeadline *raftfsm.Duration `json:"progress_deadline"`
	// MinHealthy is min_healthy_time ("10s"): how long Exec processes must stay up without a health check.
	MinHealthy *raftfsm.Duration `json:"min_healthy_time"`
}

func (in *envInput) applyTo(e *raftfsm.Env) {
	set(&e.AllowPullRequests, in.AllowPullRequests)
	set(&e.Name, in.Name)
	set(&e.App, in.App)
	set(&e.Servers, in.Servers)
	set(&e.Tags, in.Tags)
	set(&e.AutoDeploy, in.AutoDeploy)
	set(&e.Strategy, in.Strategy)
	set(&e.ProgressDeadline, in.ProgressDeadline)
	set(&e.MinHealthyTime, in.MinHealthy)
	if in.Vars != nil {
		keepSecrets(*in.Vars, e.Vars)
		e.Vars = *in.Vars
	}
}

func (srv *Server) apiEnvs() {
	srv.Handle("GET /v1/envs", raftfsm.RoleReader, func(w http.ResponseWriter, r *http.Request) error {
		if err := srv.BeginRead(r); err != nil {
			return err
		}
		app := r.URL.Query().Get("app")
		limit, cursor, err := PageParams(r, 0)
		if err != nil {
			return err
		}
		out := []raftfsm.Env{}
		var more bool
		srv.fsm.Read(func(s *raftfsm.State) {
			var page []*raftfsm.Env
			if app == "" {
				page, more = s.EnvPage(cursor, limit)
			} else {
				for _, e := range s.AppEnvs(app) { // by name
					if e.Name <= cursor {
						continue
					}
					if limit > 0 && len(page) == limit {
						more = true
						break
					}
					page = append(page, e)
				}
			}
			for _, e := range page {
				out = append(out, viewEnv(e))
			}
		})
		if more {
			SetNextCursor(w, out[len(out)-1].Name)
		}
		srv.WriteJSON(w, http.StatusOK, out)
		return nil
	})
	srv.Handle("GET /v1/envs/{env}", raftfsm.RoleReader, func(w http.ResponseWriter, r *http.Request) error {
		if err := srv.BeginRead(r); err != nil {
			return err
		}
		return srv.writeEnv(w, http.StatusOK, r.PathValue("env"))
	})
	srv.Handle("POST /v1/envs", raftfsm.RoleAdmin, func(w http.ResponseWriter, r *http.Request) error {
		var in envInput
		if err := decode(r, &in); err != nil {
			return err
		}
		var e raftfsm.Env
		in.applyTo(&e)
		if err := raftfsm.ValidEnv(&e); err != nil {
			return err
		}
		res, err := srv.n.Apply(r.Context(), &raftfsm.EnvPut{Env: e, Create: true}, ForRequest(r), node.OnCommit)
		if err != nil {
			return err
		}
		return writeRecord(srv, w, http.StatusCreated, res, viewEnv)
	})
	srv.Handle("PUT /v1/envs/{env}", raftfsm.RoleAdmin, func(w http.ResponseWriter, r *http.Request) error {
		name := r.PathValue("env")
		var in envInput
		if err := decode(r, &in); err != nil {
			return err
		}
		if in.Name != nil && *in.Name != name {
			return errs.New(errs.BadRequest, "an environment cannot be renamed (body names %q, path %q)", *in.Name, name)
		}
		res, err := srv.update(r, func(s *raftfsm.State) (raftfsm.Command, error) {
			cur := s.Envs[name]
			if cur == nil {
				return nil, errs.New(raftfsm.KindNotFound, "environment %q does not exist", name)
			}
			e := *cur
			in.applyTo(&e)
			if err := raftfsm.ValidEnv(&e); err != nil {
				return nil, err
			}
			return &raftfsm.EnvPut{Env: e, CAS: cur.ModifyIndex}, nil
		})
		if err != nil {
			return err
		}
		return writeRecord(srv, w, http.StatusOK, res, viewEnv)
	})
	srv.Handle("DELETE /v1/envs/{env}", raftfsm.RoleAdmin, func(w http.ResponseWriter, r *http.Request) error {
		if _, err := srv.n.Apply(r.Context(), &raftfsm.EnvDelete{Name: r.PathValue("env")}, ForRequest(r)); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}

func (srv *Server) writeEnv(w http.ResponseWriter, status int, name string) error {
	var (
		v     EnvView
		found bool
	)
	rt := srv.envRuntime.Load()
	var members []node.Member
	if rt != nil {
		members = srv.n.Members() // before the read lock: it takes it too
	}
	srv.fsm.Read(func(s *raftfsm.State) {
		if e := s.Envs[name]; e != nil {
			v, found = envView(s, e, rt, members), true
		}
	})
	if !found {
		return errs.New(raftfsm.KindNotFound, "environment %q does not exist", name)
	}
	srv.WriteJSON(w, status, v)
	return nil
}

// TokenView is an API token as listed (never its secret).
type TokenView struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
	// Token is the full token text, present only in the answer that created it.
	Token string `json:"token,omitempty"`
}

// JoinTokenView is a join token as an admin sees it.
type JoinTokenView struct {
	ID        string    `json:"id"`
	Token     string    `json:"token"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Expired   bool      `json:"expired"`
}

func (srv *Server) apiTokens() {
	srv.Handle("GET /v1/tokens", raftfsm.RoleAdmin, func(w http.ResponseWriter, r *http.Request) error {
		if err := srv.BeginRead(r); err != nil {
			return err
		}
		out := []TokenView{}
		srv.fsm.Read(func(s *raftfsm.State) {
			for _, t := range s.Tokens {
				out = append(out, TokenView{ID: t.ID, Name: t.Name, Role: t.Role, CreatedAt: t.CreatedAt})
			}
		})
		sort.Slice(out, func(i, j int) bool {
			return out[i].CreatedAt.Before(out[j].CreatedAt) || out[i].CreatedAt.Equal(out[j].CreatedAt) && out[i].ID < out[j].ID
		})
		srv.WriteJSON(w, http.StatusOK, out)
		return nil
	})
	srv.Handle("POST /v1/tokens", raftfsm.RoleAdmin, func(w http.ResponseWriter, r *http.Request) error {
		var in struct {
			Name string `json:"name"`
			Role string `json:"role"`
		}
		if err := decode(r, &in); err != nil {
			return err
		}
		if in.Name == "" {
			return errs.New(errs.BadRequest, "a token needs a name (who or what uses it)")
		}
		if err := raftfsm.ValidName("token", in.Name); err != nil {
			return err
		}
		text, rec := node.NewAPIToken(in.Name, in.Role)
		rec.CreatedAt = time.Now().UTC()
		if _, err := srv.n.Apply(r.Context(), &raftfsm.TokenCreate{Token: rec}, ForRequest(r)); err != nil {
			return err
		}
		srv.WriteJSON(w, http.StatusCreated, TokenView{ID: rec.ID, Name: rec.Name, Role: rec.Role, CreatedAt: rec.CreatedAt, Token: text})
		return nil
	})
	srv.Handle("DELETE /v1/tokens/{id}", raftfsm.RoleAdmin, func(w http.ResponseWriter, r *http.Request) error {
		if _, err := srv.n.Apply(r.Context(), &raftfsm.TokenDelete{ID: r.PathValue("id")}, ForRequest(r)); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	srv.Handle("GET /v1/tokens/join", raftfsm.RoleAdmin, func(w http.ResponseWriter, r *http.Request) error {
		if err := srv.BeginRead(r); err != nil {
			return err
		}
		out := []JoinTokenView{}
		now := time.Now()
		caHash := srv.n.Endpoint().Identity().CAHash
		srv.fsm.Read(func(s *raftfsm.State) {
			for _, t := range s.JoinTokens {
				out = append(out, JoinTokenView{ID: t.ID, Token: node.JoinTokenText(caHash, t), CreatedAt: t.CreatedAt,
					ExpiresAt: t.ExpiresAt, Expired: now.After(t.ExpiresAt)})
			}
		})
		sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
		srv.WriteJSON(w, http.StatusOK, out)
		return nil
	})
	srv.Handle("POST /v1/tokens/join", raftfsm.RoleAdmin, func(w http.ResponseWriter, r *http.Request) error {
		var in struct {
			TTL *raftfsm.Duration `json:"ttl"`
		}
		if r.ContentLength != 0 {
			if err := decode(r, &in); err != nil {
				return err
			}
		}
		ttl := node.DefaultJoinTTL
		if in.TTL != nil {
			ttl = time.Duration(*in.TTL)
			if err := raftfsm.ValidTTL("join token ttl", ttl, node.MaxJoinTTL); err != nil {
				return err
			}
		}
		ctx, cancel := contextWithTimeout(r, 15*time.Second)
		defer cancel()
		text, err := srv.n.CreateJoinToken(ctx, ttl)
		if err != nil {
			return err
		}
		_, id, _, _ := node.ParseJoinToken(text)
		srv.WriteJSON(w, http.StatusCreated, JoinTokenView{ID: id, Token: text, CreatedAt: time.Now().UTC(), ExpiresAt: time.Now().UTC().Add(ttl)})
		return nil
	})
	srv.Handle("DELETE /v1/tokens/join/{id}", raftfsm.RoleAdmin, func(w http.ResponseWriter, r *http.Request) error {
		if _, err := srv.n.Apply(r.Context(), &raftfsm.JoinTokenDelete{ID: r.PathValue("id")}, ForRequest(r)); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}
