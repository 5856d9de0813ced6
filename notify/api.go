package notify

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/errs"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

func (s *Service) routes() {
	api := s.srv.RouteGroup()
	s.api = api
	api.Handle("GET /v1/subscriptions", raftfsm.RoleReader, s.listSubs)
	api.Handle("POST /v1/subscriptions", raftfsm.RoleAdmin, s.postSub)
	api.Handle("GET /v1/subscriptions/{id}", raftfsm.RoleReader, s.getSub)
	api.Handle("PUT /v1/subscriptions/{id}", raftfsm.RoleAdmin, s.putSub)
	api.Handle("DELETE /v1/subscriptions/{id}", raftfsm.RoleAdmin, s.deleteSub)
	api.Handle("GET /v1/deliveries", raftfsm.RoleReader, s.listDeliveries)
	api.Handle("GET /v1/deliveries/{id}", raftfsm.RoleReader, s.getDelivery)
	api.Handle("GET /v1/apps/{app}/forge", raftfsm.RoleReader, s.getForge)
	api.Handle("PUT /v1/apps/{app}/forge", raftfsm.RoleAdmin, s.putForge)
	api.Handle("DELETE /v1/apps/{app}/forge", raftfsm.RoleAdmin, s.deleteForge)
}

// SubscriptionView is a subscription as the API shows it: the secret is never shown, only whether one is set; a
// Slack URL (its path is its secret) shows only its host.
type SubscriptionView struct {
	raftfsm.Subscription
	SecretSet bool `json:"secret_set"`
}

func viewSub(sub *raftfsm.Subscription) SubscriptionView {
	v := SubscriptionView{Subscription: *sub, SecretSet: sub.Secret != ""}
	v.Secret = ""
	if sub.Kind == raftfsm.NotifyKindSlack {
		if u, err := url.Parse(sub.URL); err == nil {
			v.URL = u.Scheme + "://" + u.Host + "/…"
		}
	}
	return v
}

// ForgeView is a forge as the API shows it: the token is never shown.
type ForgeView struct {
	raftfsm.Forge
	TokenSet bool `json:"token_set"`
}

func viewForge(f *raftfsm.Forge) ForgeView {
	v := ForgeView{Forge: *f, TokenSet: f.Token != ""}
	v.Token = ""
	return v
}

// subInput is the body of POST /v1/subscriptions and PUT /v1/subscriptions/{id}; on PUT absent fields keep
// their value, and an absent or empty secret keeps the stored one.
type subInput struct {
	App    *string   `json:"app"`
	Env    *string   `json:"env"`
	Kind   *string   `json:"kind"`
	URL    *string   `json:"url"`
	Secret *string   `json:"secret"`
	Events *[]string `json:"events"`
}

func (in *subInput) applyTo(sub *raftfsm.Subscription) {
	set(&sub.App, in.App)
	set(&sub.Env, in.Env)
	set(&sub.Kind, in.Kind)
	set(&sub.URL, in.URL)
	set(&sub.Events, in.Events)
	sub.Secret = ""
	set(&sub.Secret, in.Secret)
}

// forgeInput is the body of PUT /v1/apps/{app}/forge; an absent or empty token keeps the stored one.
type forgeInput struct {
	Kind         string `json:"kind"`
	URL          string `json:"url"`
	Repo         string `json:"repo"`
	Token        string `json:"token"`
	Context      string `json:"context"`
	DashboardURL string `json:"dashboard_url"`
}

func set[T any](dst *T, src *T) {
	if src != nil {
		*dst = *src
	}
}

func newID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "s-" + hex.EncodeToString(b)
}

// commit writes c for a request and decodes the record it wrote into out, with the write's index in
// X-Shoal-Index (a client reads its own write on any node by passing it back as X-Shoal-Min-Index).
func (s *Service) commit(w http.ResponseWriter, r *http.Request, c raftfsm.Command, out any) error {
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	res, err := s.n.Apply(ctx, c, node.OnCommit)
	if err != nil {
		return err
	}
	w.Header().Set("X-Shoal-Index", strconv.FormatUint(res.Index, 10))
	if out != nil && len(res.Value) > 0 {
		return json.Unmarshal(res.Value, out)
	}
	return nil
}

func (s *Service) listSubs(w http.ResponseWriter, r *http.Request) error {
	if err := s.srv.BeginRead(r); err != nil {
		return err
	}
	app, env := r.URL.Query().Get("app"), r.URL.Query().Get("env")
	out := []SubscriptionView{}
	s.n.FSM().Read(func(st *raftfsm.State) {
		if st.Notify == nil {
			return
		}
		for _, sub := range st.Notify.Subs {
			if (app == "" || sub.App == app) && (env == "" || sub.Env == env) {
				out = append(out, viewSub(sub))
			}
		}
	})
	slices.SortFunc(out, func(a, b SubscriptionView) int {
		return cmp.Or(strings.Compare(a.App, b.App), cmp.Compare(a.CreateIndex, b.CreateIndex))
	})
	s.srv.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *Service) sub(id string) (raftfsm.Subscription, bool) {
	var (
		sub raftfsm.Subscription
		ok  bool
	)
	s.n.FSM().Read(func(st *raftfsm.State) {
		if st.Notify != nil && st.Notify.Subs[id] != nil {
			sub, ok = *st.Notify.Subs[id], true
		}
	})
	return sub, ok
}

func (s *Service) getSub(w http.ResponseWriter, r *http.Request) error {
	if err := s.srv.BeginRead(r); err != nil {
		return err
	}
	sub, ok := s.sub(r.PathValue("id"))
	if !ok {
		return errs.New(errs.NotFound, "subscription %q does not exist: see `node notify list`", r.PathValue("id"))
	}
	s.srv.WriteJSON(w, http.StatusOK, viewSub(&sub))
	return nil
}

func (s *Service) postSub(w http.ResponseWriter, r *http.Request) error {
	var in subInput
	if err := api.Decode(r, &in); err != nil {
		return err
	}
	if in.App == nil || *in.App == "" || in.URL == nil {
		return errs.New(errs.BadRequest, "a subscription needs an app and a url")
	}
	sub := raftfsm.Subscription{ID: newID(), CreatedAt: time.Now().UTC()}
	in.applyTo(&sub)
	var out raftfsm.Subscription
	if err := s.commit(w, r, &raftfsm.NotifySubscription{Sub: sub, Create: true}, &out); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, viewSub(&out))
	return nil
}

func (s *Service) putSub(w http.ResponseWriter, r *http.Request) error {
	var in subInput
	if err := api.Decode(r, &in); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if err := s.n.ConsistentRead(ctx); err != nil {
		return err
	}
	sub, ok := s.sub(r.PathValue("id"))
	if !ok {
		return errs.New(errs.NotFound, "subscription %q does not exist: see `node notify list`", r.PathValue("id"))
	}
	// A Slack URL read back is shown without its path: writing that back means "keep the URL".
	if in.URL != nil && *in.URL == viewSub(&sub).URL && *in.URL != sub.URL {
		in.URL = nil
	}
	in.applyTo(&sub)
	var out raftfsm.Subscription
	if err := s.commit(w, r, &raftfsm.NotifySubscription{Sub: sub}, &out); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, viewSub(&out))
	return nil
}

func (s *Service) deleteSub(w http.ResponseWriter, r *http.Request) error {
	if err := s.commit(w, r, &raftfsm.NotifySubscription{Sub: raftfsm.Subscription{ID: r.PathValue("id")}, Delete: true}, nil); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// listDeliveries answers the delivery log, newest first: ?app, ?subscription, ?state filter it and ?limit
// (default 50) bounds it.
func (s *Service) listDeliveries(w http.ResponseWriter, r *http.Request) error {
	if err := s.srv.BeginRead(r); err != nil {
		return err
	}
	q := r.URL.Query()
	limit := 50
	if v := q.Get("limit"); v != "" {
		l, err := strconv.Atoi(v)
		if err != nil || l <= 0 {
			return errs.New(errs.BadRequest, "limit %q is not a positive number", v)
		}
		limit = l
	}
	app, sub, state := q.Get("app"), q.Get("subscription"), q.Get("state")
	out := []raftfsm.Delivery{}
	s.n.FSM().Read(func(st *raftfsm.State) {
		if st.Notify == nil {
			return
		}
		for _, d := range st.Notify.Deliveries {
			if (app == "" || d.App == app) && (sub == "" || d.Target == sub) && (state == "" || d.State == state) {
				c := *d
				c.Attempts = slices.Clone(d.Attempts)
				out = append(out, c)
			}
		}
	})
	slices.SortFunc(out, func(a, b raftfsm.Delivery) int {
		return cmp.Or(cmp.Compare(b.CreateIndex, a.CreateIndex), strings.Compare(b.ID, a.ID))
	})
	s.srv.WriteJSON(w, http.StatusOK, out[:min(limit, len(out))])
	return nil
}

func (s *Service) getDelivery(w http.ResponseWriter, r *http.Request) error {
	if err := s.srv.BeginRead(r); err != nil {
		return err
	}
	var (
		d  raftfsm.Delivery
		ok bool
	)
	s.n.FSM().Read(func(st *raftfsm.State) {
		if st.Notify != nil && st.Notify.Deliveries[r.PathValue("id")] != nil {
			d, ok = *st.Notify.Deliveries[r.PathValue("id")], true
			d.Attempts = slices.Clone(d.Attempts)
		}
	})
	if !ok {
		return errs.New(errs.NotFound, "delivery %q does not exist (the log keeps the last %d): see `node notify log`", r.PathValue("id"), 2000)
	}
	s.srv.WriteJSON(w, http.StatusOK, d)
	return nil
}

func (s *Service) getForge(w http.ResponseWriter, r *http.Request) error {
	if err := s.srv.BeginRead(r); err != nil {
		return err
	}
	var (
		f  raftfsm.Forge
		ok bool
	)
	s.n.FSM().Read(func(st *raftfsm.State) {
		if st.Notify != nil && st.Notify.Forges[r.PathValue("app")] != nil {
			f, ok = *st.Notify.Forges[r.PathValue("app")], true
		}
	})
	if !ok {
		return errs.New(errs.NotFound, "app %q has no forge: set one with `node forge set`", r.PathValue("app"))
	}
	s.srv.WriteJSON(w, http.StatusOK, viewForge(&f))
	return nil
}

func (s *Service) putForge(w http.ResponseWriter, r *http.Request) error {
	var in forgeInput
	if err := api.Decode(r, &in); err != nil {
		return err
	}
	if in.URL == "" {
		in.URL = DefaultForgeURL(in.Kind)
		if in.URL == "" && in.Kind == "gitea" {
			return errs.New(errs.BadRequest, "a Gitea forge needs its url (https://gitea.example.com)")
		}
	}
	f := raftfsm.Forge{App: r.PathValue("app"), Kind: in.Kind, URL: in.URL, Repo: in.Repo, Token: in.Token,
		Context: in.Context, DashboardURL: in.DashboardURL}
	var out raftfsm.Forge
	if err := s.commit(w, r, &raftfsm.NotifyForge{Forge: f}, &out); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, viewForge(&out))
	return nil
}

func (s *Service) deleteForge(w http.ResponseWriter, r *http.Request) error {
	if err := s.commit(w, r, &raftfsm.NotifyForge{Forge: raftfsm.Forge{App: r.PathValue("app")}, Delete: true}, nil); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
